//! What the kernel must enforce, and the one diff that takes it there.
//!
//! Data flows one way: the file becomes a [`crate::config::Config`], the
//! config a [`Desired`] (rules, the settings of the programs, where to
//! hook), and `Desired` against what the kernel holds a [`Plan`]; the
//! kernel side (crate::kernel) applies it and reports what it did. Nothing
//! here knows of files or syslog, nor the kernel side of TOML.

use std::collections::HashSet;

use crate::addr::{Family, Prefix};
use crate::icmp::TypeSet;

/// Which ICMP messages are dropped for a blocked address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpPolicy {
    /// Echo request and reply only.
    Echo,
    /// Every ICMP message except neighbour discovery and PMTU signals.
    All,
    /// The message types listed.
    Types(TypeSet),
}

impl IcmpPolicy {
    /// The types dropped, as the programs test them.
    pub fn types(&self) -> TypeSet {
        match self {
            IcmpPolicy::Echo => TypeSet::echo(),
            IcmpPolicy::All => TypeSet::all(),
            IcmpPolicy::Types(t) => *t,
        }
    }
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native, falling back to generic with a log line.
    Auto,
    Native,
    Generic,
}

/// Which packets become syslog lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    All,
    Blocked,
    None,
}

/// The echo rate limit per source (`[limit]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Echo requests per second from one source; 0: no limit.
    pub echo: u32,
    /// Requests a quiet source may send at once (at least 1).
    pub burst: u32,
}

/// What the programs are told besides the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub policy: IcmpPolicy,
    pub log: LogMode,
    /// Event lines per second the daemon forwards; 0 means no limit.
    pub rate_limit: u32,
    /// Classify and log, drop nothing.
    pub dry_run: bool,
    pub limit: Limit,
}

impl Default for Settings {
    /// Echo policy, no events, no limit, dropping: what tests and tools
    /// start from (the file's defaults are config::schema's).
    fn default() -> Settings {
        Settings {
            policy: IcmpPolicy::Echo,
            log: LogMode::None,
            rate_limit: 0,
            dry_run: false,
            limit: Limit::default(),
        }
    }
}

/// Everything the kernel must enforce for one configuration (borrowing
/// the lists from it: a million entries are not copied for a reload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    /// Sorted, without duplicates.
    pub block: std::borrow::Cow<'a, [Prefix]>,
    /// Sorted, without duplicates.
    pub allow: std::borrow::Cow<'a, [Prefix]>,
    pub settings: Settings,
    /// Sources the rate limiter tracks at once (the size of its map).
    pub sources: u32,
    /// Interface names, sorted, without duplicates.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
}

impl Desired<'_> {
    /// The entries the kernel must hold, sorted by prefix (see [`entries`]).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + Clone + '_ {
        entries(&self.block, &self.allow)
    }

    /// The difference between these entries and the rules the kernel
    /// holds, as [`plan`] finds it; without an allow list (the common
    /// case: ten million steps after a one-line edit), the two halves of a
    /// long block list are walked on two threads.
    pub fn plan(&self, current: &Rules) -> Plan {
        let (want, have) = (&self.block[..], &current.list[..]);
        if !self.allow.is_empty() || want.len() < 1 << 20 {
            return walk(self.entries(), have);
        }
        // Cut both lists where the second half of `want` starts.
        let (i, pivot) = (want.len() / 2, want[want.len() / 2]);
        let j = have.partition_point(|(p, _)| *p < pivot);
        let second_half = || walk(blocks(&want[i..]), &have[j..]);
        let (mut first, second) = std::thread::scope(|s| {
            let second = std::thread::Builder::new().spawn_scoped(s, second_half);
            let first = walk(blocks(&want[..i]), &have[..j]);
            (first, second.ok().and_then(|h| h.join().ok()))
        });
        let second = second.unwrap_or_else(second_half);
        first.add.extend(second.add);
        first.remove.extend(second.remove);
        first.flip.extend(second.flip);
        first
    }

    /// A digest of what the maps hold once this is applied: the entries,
    /// the settings and the limiter's size (never 0, which stands for
    /// "unknown"). Equal digests mean the same kernel state; interfaces
    /// are not part of it (they are checked at every start).
    pub fn digest(&self) -> u64 {
        let mut d = Digest::default();
        let s = &self.settings;
        let types = s.policy.types().0;
        for word in types.v4.iter().chain(&types.v6) {
            d.word(u64::from(*word));
        }
        let log = match s.log {
            LogMode::All => 1,
            LogMode::Blocked => 2,
            LogMode::None => 3,
        };
        d.word(log);
        d.word(u64::from(s.rate_limit) << 1 | u64::from(s.dry_run));
        d.word(u64::from(s.limit.echo) << 32 | u64::from(s.limit.burst));
        d.word(u64::from(self.sources));
        let mut n = 0u64;
        for e in self.entries() {
            let tag = u64::from(e.prefix.prefix_len()) << 1 | u64::from(e.allow);
            match e.prefix {
                Prefix::V4 { addr, .. } => d.word(1 << 48 | tag << 32 | u64::from(u32::from(addr))),
                Prefix::V6 { addr, .. } => {
                    let a = u128::from(addr);
                    d.word(2 << 48 | tag);
                    d.word((a >> 64) as u64);
                    d.word(a as u64);
                }
            }
            n += 1;
        }
        d.word(n);
        d.finish().max(1)
    }
}

/// A 64-bit digest of a sequence of words (not cryptographic: it tells
/// states apart, it does not resist someone who writes the file; that one
/// controls the blocklist anyway).
#[derive(Default)]
struct Digest(u64);

impl Digest {
    /// splitmix64's finalizer: every bit of the input moves every bit.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn word(&mut self, w: u64) {
        self.0 = Digest::mix(self.0.rotate_left(23) ^ w.wrapping_add(0x9e37_79b9_7f4a_7c15));
    }

    fn finish(&self) -> u64 {
        Digest::mix(self.0)
    }
}

/// One entry the kernel holds: a prefix, blocked or allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub prefix: Prefix,
    pub allow: bool,
}

/// Which allow entries cover an address: a set per family and length.
#[derive(Clone, Debug, Default)]
pub struct Cover {
    lens: Vec<(Family, u8)>,
    set: HashSet<Prefix>,
}

impl Cover {
    pub fn new(allow: &[Prefix]) -> Cover {
        let mut lens: Vec<(Family, u8)> = allow.iter().map(|p| (p.family(), p.prefix_len())).collect();
        lens.sort_unstable();
        lens.dedup();
        Cover { lens, set: allow.iter().copied().collect() }
    }

    /// The allow entry that covers `p` (equal to it, or a shorter prefix
    /// containing it), the most specific if several do.
    pub fn covering(&self, p: &Prefix) -> Option<Prefix> {
        self.lens
            .iter()
            .rev()
            .filter(|(f, len)| *f == p.family() && *len <= p.prefix_len())
            .map(|(_, len)| p.truncated(*len))
            .find(|q| self.set.contains(q))
    }
}

/// The entries the kernel must hold for `block` and `allow` (each sorted,
/// without duplicates), sorted by prefix: every allow entry, and every
/// block entry that no allow entry covers. Allow wins: a block entry inside
/// an allowed prefix can never drop a packet, and leaving it out lets one
/// lookup per address say allowed, blocked or neither (the most specific
/// entry that covers it). Without an allow list this is `block` itself.
pub fn entries<'a>(block: &'a [Prefix], allow: &'a [Prefix]) -> impl Iterator<Item = Entry> + Clone + 'a {
    if allow.is_empty() {
        // The common case, and ten million steps of a plan: no merge.
        return Either::Left(blocks(block));
    }
    // Shared by the clones of the iterator (a plan walks it, sizing too).
    let cover = std::rc::Rc::new(Cover::new(allow));
    let blocks = block.iter().filter(move |p| cover.covering(p).is_none()).map(|p| Entry { prefix: *p, allow: false });
    Either::Right(Merge {
        blocks: blocks.peekable(),
        allows: allow.iter().map(|p| Entry { prefix: *p, allow: true }).peekable(),
    })
}

/// One of two iterators of the same items.
#[derive(Clone)]
enum Either<L, R> {
    Left(L),
    Right(R),
}

impl<L: Iterator<Item = Entry>, R: Iterator<Item = Entry>> Iterator for Either<L, R> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        match self {
            Either::Left(l) => l.next(),
            Either::Right(r) => r.next(),
        }
    }
}

/// Block entries alone, as [`entries`] gives them without an allow list.
pub fn blocks(block: &[Prefix]) -> impl Iterator<Item = Entry> + Clone + '_ {
    block.iter().map(|p| Entry { prefix: *p, allow: false })
}

/// Two sorted entry lists merged (they never share a prefix: a blocked
/// prefix that is also allowed is covered).
#[derive(Clone)]
struct Merge<B: Iterator<Item = Entry>, A: Iterator<Item = Entry>> {
    blocks: std::iter::Peekable<B>,
    allows: std::iter::Peekable<A>,
}

impl<B: Iterator<Item = Entry>, A: Iterator<Item = Entry>> Iterator for Merge<B, A> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        match (self.blocks.peek(), self.allows.peek()) {
            (Some(b), Some(a)) if b.prefix < a.prefix => self.blocks.next(),
            (Some(_), Some(_)) | (None, Some(_)) => self.allows.next(),
            (Some(_), None) => self.blocks.next(),
            (None, None) => None,
        }
    }
}

/// The difference to apply, each list sorted. Applying adds before
/// removes, so that a rule that stays in the file is never absent from the
/// kernel; `flip` are entries that stay but change from blocked to allowed
/// or back (rewritten in place, one store each).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Vec<Entry>,
    pub remove: Vec<Prefix>,
    pub flip: Vec<Entry>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.flip.is_empty()
    }

    /// The prefixes added.
    pub fn added(&self) -> impl Iterator<Item = &Prefix> + '_ {
        self.add.iter().map(|e| &e.prefix)
    }
}

/// What the kernel holds for a prefix: its rule id (the index of its drop
/// counter) and whether it is an allow entry, in one word (rule ids stay
/// far below 2^31): a million rules are 24 MB with their prefixes, not 28.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rule(u32);

impl Rule {
    const ALLOW: u32 = 1 << 31;

    pub fn new(id: u32, allow: bool) -> Rule {
        Rule((id & !Rule::ALLOW) | if allow { Rule::ALLOW } else { 0 })
    }

    pub fn id(self) -> u32 {
        self.0 & !Rule::ALLOW
    }

    pub fn allow(self) -> bool {
        self.0 & Rule::ALLOW != 0
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("id", &self.id()).field("allow", &self.allow()).finish()
    }
}

/// The rules the kernel enforces, sorted by prefix: half the memory of a
/// hash map, and a plan is one merge of two sorted lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    list: Vec<(Prefix, Rule)>,
    /// How many of them are allow entries (the settings say it at every
    /// write: counted once, not at each).
    allows: usize,
}

impl Rules {
    /// From rules in any order; a prefix listed twice keeps its first id.
    pub fn from_unsorted(mut v: Vec<(Prefix, Rule)>) -> Rules {
        v.sort_unstable_by_key(|(p, _)| *p);
        v.dedup_by_key(|(p, _)| *p);
        let allows = v.iter().filter(|(_, r)| r.allow()).count();
        Rules { list: v, allows }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Rules of one family (IPv4 sorts first).
    pub fn family_len(&self, family: Family) -> usize {
        let v4 = self.list.partition_point(|(p, _)| p.is_v4());
        match family {
            Family::V4 => v4,
            Family::V6 => self.list.len() - v4,
        }
    }

    pub fn get(&self, p: &Prefix) -> Option<Rule> {
        self.list.binary_search_by_key(p, |(q, _)| *q).ok().map(|i| self.list[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Prefix, Rule)> {
        self.list.iter()
    }

    /// Allow entries held.
    pub fn allows(&self) -> usize {
        self.allows
    }

    /// Marks the rules of `flipped` (sorted, all present) allowed or not.
    pub fn flip(&mut self, flipped: &[Entry]) {
        for e in flipped {
            if let Ok(i) = self.list.binary_search_by_key(&e.prefix, |(q, _)| *q) {
                let was = self.list[i].1;
                self.list[i].1 = Rule::new(was.id(), e.allow);
                match (was.allow(), e.allow) {
                    (false, true) => self.allows += 1,
                    (true, false) => self.allows -= 1,
                    _ => {}
                }
            }
        }
    }

    /// Adds `added` (sorted, none present yet) and drops `removed` (sorted)
    /// in place: what lies between the changes is moved once, in bulk, and
    /// a change of one entry among ten million costs a binary search and
    /// a copy, not a walk comparing every rule.
    pub fn merge(&mut self, added: Vec<(Prefix, Rule)>, removed: &[Prefix]) {
        self.allows += added.iter().filter(|(_, r)| r.allow()).count();
        if self.list.is_empty() {
            // A new generation: nothing to merge with, nothing to copy.
            self.list = added;
            return;
        }
        self.remove_sorted(removed);
        let old = self.list.len();
        let Some(&first) = added.first() else { return };
        self.list.resize(old + added.len(), first);
        // From the back: each added rule goes below what is above it, and
        // what it passes moves up by the number still to place.
        let mut end = old;
        for (j, a) in added.iter().enumerate().rev() {
            let at = self.list[..end].partition_point(|(p, _)| *p < a.0);
            self.list.copy_within(at..end, at + j + 1);
            self.list[at + j] = *a;
            end = at;
        }
    }

    /// Drops the rules of `removed` (sorted; absent ones are skipped).
    fn remove_sorted(&mut self, removed: &[Prefix]) {
        let mut gone: Vec<usize> =
            removed.iter().filter_map(|p| self.list.binary_search_by_key(p, |(q, _)| *q).ok()).collect();
        gone.dedup();
        let Some(&first) = gone.first() else { return };
        self.allows -= gone.iter().filter(|&&i| self.list[i].1.allow()).count();
        let mut to = first;
        for (k, &i) in gone.iter().enumerate() {
            let next = gone.get(k + 1).copied().unwrap_or(self.list.len());
            self.list.copy_within(i + 1..next, to);
            to += next - i - 1;
        }
        self.list.truncate(to);
    }
}

impl std::ops::Index<&Prefix> for Rules {
    type Output = Rule;

    /// The rule that is known to be there (tests, tools).
    fn index(&self, p: &Prefix) -> &Rule {
        let i = self.list.binary_search_by_key(p, |(q, _)| *q).unwrap_or_else(|_| panic!("no rule {p}"));
        &self.list[i].1
    }
}

/// The one diff, for a reload, for adopting a pinned filter and for the
/// drift `status` reports: `desired` (sorted by prefix, no duplicates, as
/// [`Desired::entries`]) against the rules the kernel holds, in one merge
/// walk of the two sorted lists.
pub fn plan(desired: impl IntoIterator<Item = Entry>, current: &Rules) -> Plan {
    walk(desired, &current.list)
}

/// The merge walk of [`plan`], over any part of the kernel's rules.
fn walk(desired: impl IntoIterator<Item = Entry>, current: &[(Prefix, Rule)]) -> Plan {
    let mut plan = Plan::default();
    let mut have = current.iter();
    let mut next = have.next();
    // One step per entry of the longer list; the entries that are the same
    // on both sides (all but a few after a one-line edit) take one
    // comparison each.
    for a in desired {
        loop {
            match next {
                Some((b, rule)) if *b == a.prefix => {
                    if a.allow != rule.allow() {
                        plan.flip.push(a);
                    }
                    next = have.next();
                    break;
                }
                Some((b, _)) if *b < a.prefix => {
                    plan.remove.push(*b);
                    next = have.next();
                }
                _ => {
                    plan.add.push(a);
                    break;
                }
            }
        }
    }
    while let Some((b, _)) = next {
        plan.remove.push(*b);
        next = have.next();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Vec<Prefix> {
        let mut v: Vec<Prefix> = list.iter().map(|s| s.parse().unwrap()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn current(list: &[&str]) -> Rules {
        Rules::from_unsorted(prefixes(list).into_iter().zip(0..).map(|(p, id)| (p, Rule::new(id, false))).collect())
    }

    fn added(p: &Plan) -> Vec<Prefix> {
        p.added().copied().collect()
    }

    /// A long block list (no allow list) is planned in two halves on two
    /// threads: the halves together plan what one walk plans, whatever
    /// is added, removed or flipped around the cut.
    #[test]
    fn a_long_block_list_planned_in_two_halves_plans_what_one_walk_plans() {
        let v4 = |i: u32| Prefix::V4 { addr: std::net::Ipv4Addr::from(i), len: 32 };
        let n = 1u32 << 21;
        let cut = n / 2 * 2; // the address of want[n / 2]
        for (shift, flip_every) in [(0, 777), (1, 999), (2, 3)] {
            let want: Vec<Prefix> = (0..n).map(|i| v4(i * 2)).collect();
            // Every 1000th rule moved off by one (one removal and one
            // addition each), some of them at the cut, and allow rules to
            // flip.
            let current = Rules::from_unsorted(
                (0..n)
                    .map(|i| {
                        let moved = i % 1000 == 0 || i.abs_diff(n / 2) <= shift;
                        (v4(i * 2 + u32::from(moved)), Rule::new(i, i % flip_every == 0))
                    })
                    .chain([(v4(cut - 1), Rule::new(n, false)), (v4(cut + 1), Rule::new(n + 1, true))])
                    .collect(),
            );
            let d = desired(&want, &[], Settings::default());
            let (halves, one) = (d.plan(&current), plan(d.entries(), &current));
            let sizes = (halves.add.len(), halves.remove.len(), halves.flip.len());
            assert!(sizes.0 > 0 && sizes.1 > 0 && sizes.2 > 0, "shift {shift}: {sizes:?}");
            assert!(halves.remove.contains(&v4(cut - 1)) && halves.remove.contains(&v4(cut + 1)));
            assert_eq!(
                (&halves.add, &halves.remove, &halves.flip),
                (&one.add, &one.remove, &one.flip),
                "shift {shift}"
            );
        }
    }

    #[test]
    fn only_the_difference_is_planned() {
        let p = plan(
            blocks(&prefixes(&["192.0.2.1", "192.0.2.2", "2001:db8::/32"])),
            &current(&["192.0.2.2", "192.0.2.3", "198.51.100.0/24"]),
        );
        assert_eq!(added(&p), prefixes(&["192.0.2.1", "2001:db8::/32"]));
        assert_eq!(p.remove, prefixes(&["192.0.2.3", "198.51.100.0/24"]));
    }

    fn desired<'a>(block: &'a [Prefix], allow: &'a [Prefix], settings: Settings) -> Desired<'a> {
        Desired {
            block: block.into(),
            allow: allow.into(),
            settings,
            sources: 65536,
            interfaces: vec!["eth0".into()],
            mode: AttachMode::Auto,
        }
    }

    #[test]
    fn the_digest_tells_apart_every_change_of_entries_and_settings() {
        let (block, allow) = (prefixes(&["192.0.2.10", "198.51.100.0/24", "2001:db8::/48"]), prefixes(&["192.0.2.20"]));
        let base = desired(&block, &allow, Settings::default());
        let d = base.digest();
        assert_ne!(d, 0);
        // Equal states, equal digests (interfaces are not part of it).
        let mut other = desired(&block, &allow, Settings::default());
        other.interfaces = vec!["eth1".into()];
        assert_eq!(other.digest(), d);
        let fewer = prefixes(&["192.0.2.10", "198.51.100.0/24"]);
        let moved = prefixes(&["192.0.2.20"]);
        let longer = prefixes(&["192.0.2.10", "198.51.100.0/25", "2001:db8::/48"]);
        let mut digests = vec![
            d,
            desired(&fewer, &allow, Settings::default()).digest(),
            desired(&block, &[], Settings::default()).digest(),
            desired(&moved, &block, Settings::default()).digest(),
            desired(&longer, &allow, Settings::default()).digest(),
            desired(&block, &allow, Settings { dry_run: true, ..Settings::default() }).digest(),
            desired(&block, &allow, Settings { policy: IcmpPolicy::All, ..Settings::default() }).digest(),
            desired(&block, &allow, Settings { log: LogMode::All, ..Settings::default() }).digest(),
            desired(&block, &allow, Settings { rate_limit: 100, ..Settings::default() }).digest(),
            desired(&block, &allow, Settings { limit: Limit { echo: 10, burst: 20 }, ..Settings::default() }).digest(),
            Desired { sources: 1024, ..desired(&block, &allow, Settings::default()) }.digest(),
        ];
        digests.sort_unstable();
        digests.dedup();
        assert_eq!(digests.len(), 11);
    }

    #[test]
    fn same_sets_plan_nothing() {
        let p = plan(blocks(&prefixes(&["192.0.2.1", "::ffff:192.0.2.9"])), &current(&["192.0.2.9", "192.0.2.1"]));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn empty_file_removes_everything_and_empty_kernel_adds_everything() {
        let all = ["192.0.2.1", "2001:db8::1"];
        assert_eq!(plan(blocks(&[]), &current(&all)).remove, prefixes(&all));
        assert_eq!(added(&plan(blocks(&prefixes(&all)), &Rules::default())), prefixes(&all));
    }

    #[test]
    fn a_prefix_and_an_address_inside_it_are_distinct_rules() {
        let p = plan(blocks(&prefixes(&["198.51.100.0/24"])), &current(&["198.51.100.7"]));
        assert_eq!(added(&p), prefixes(&["198.51.100.0/24"]));
        assert_eq!(p.remove, prefixes(&["198.51.100.7"]));
    }

    #[test]
    fn allow_wins_block_entries_it_covers_are_left_out() {
        let block = prefixes(&["192.0.2.0/24", "198.51.100.7", "198.51.100.9", "2001:db8::1", "0.0.0.0/0"]);
        let allow = prefixes(&["198.51.100.0/25", "192.0.2.5", "2001:db8::1"]);
        let got: Vec<(String, bool)> = entries(&block, &allow).map(|e| (e.prefix.to_string(), e.allow)).collect();
        let want = [
            ("0.0.0.0/0", false),
            ("192.0.2.0/24", false),
            ("192.0.2.5", true),
            ("198.51.100.0/25", true),
            ("2001:db8::1", true),
        ];
        assert_eq!(got, want.map(|(p, a)| (p.to_string(), a)));
        // Without an allow list, the block list itself.
        assert_eq!(entries(&block, &[]).count(), block.len());
    }

    #[test]
    fn an_entry_changing_sides_is_flipped_not_removed_and_added() {
        let mut have = current(&["192.0.2.5", "192.0.2.6"]);
        let p = plan(entries(&prefixes(&["192.0.2.6"]), &prefixes(&["192.0.2.5"])), &have);
        assert!(p.add.is_empty() && p.remove.is_empty(), "{p:?}");
        assert_eq!(p.flip, [Entry { prefix: "192.0.2.5".parse().unwrap(), allow: true }]);
        have.flip(&p.flip);
        assert_eq!(have.allows(), 1);
        assert!(plan(entries(&prefixes(&["192.0.2.6"]), &prefixes(&["192.0.2.5"])), &have).is_empty());
    }

    #[test]
    fn cover_finds_the_allow_prefix_of_any_length() {
        let c = Cover::new(&prefixes(&["198.51.100.0/24", "2001:db8::/32", "192.0.2.1"]));
        assert_eq!(c.covering(&"198.51.100.77".parse().unwrap()), Some("198.51.100.0/24".parse().unwrap()));
        assert_eq!(c.covering(&"198.51.100.0/23".parse().unwrap()), None);
        assert_eq!(c.covering(&"2001:db8:1::/48".parse().unwrap()), Some("2001:db8::/32".parse().unwrap()));
        assert_eq!(c.covering(&"192.0.2.1".parse().unwrap()), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(c.covering(&"192.0.2.2".parse().unwrap()), None);
    }

    #[test]
    fn a_rule_is_one_word_beside_its_prefix() {
        assert_eq!(std::mem::size_of::<(Prefix, Rule)>(), 24);
        for (id, allow) in [(0, false), (0, true), (7, true), ((1 << 31) - 1, false)] {
            let r = Rule::new(id, allow);
            assert_eq!((r.id(), r.allow()), (id, allow));
        }
    }

    #[test]
    fn merge_in_place_gives_what_a_fresh_sort_gives() {
        let mut x: u32 = 99;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..200 {
            let n = (next() % 300) as usize;
            let all: Vec<Prefix> = (0..n + 40)
                .map(|i| {
                    let a = std::net::Ipv4Addr::from(next() % 1000);
                    if i % 5 == 0 {
                        Prefix::containing(std::net::Ipv6Addr::from(u128::from(next() % 1000)).into(), 128)
                    } else {
                        Prefix::containing(a.into(), 32)
                    }
                })
                .collect();
            let mut uniq = all.clone();
            uniq.sort_unstable();
            uniq.dedup();
            let rule = |i: usize| Rule::new(i as u32, i % 3 == 0);
            let (mut have, mut add) = (Vec::<(Prefix, Rule)>::new(), Vec::<(Prefix, Rule)>::new());
            for (i, p) in uniq.iter().enumerate() {
                match next() % 3 {
                    0 => add.push((*p, rule(i))),
                    _ => have.push((*p, rule(i))),
                }
            }
            let removed: Vec<Prefix> = have.iter().filter(|_| next() % 4 == 0).map(|(p, _)| *p).collect();
            let mut r = Rules::from_unsorted(have.clone());
            if round % 10 == 0 {
                r = Rules::default();
            }
            let mut want: Vec<(Prefix, Rule)> =
                r.iter().copied().filter(|(p, _)| !removed.contains(p)).chain(add.iter().copied()).collect();
            want.sort_unstable_by_key(|(p, _)| *p);
            r.merge(add, &removed);
            assert_eq!(r.iter().copied().collect::<Vec<_>>(), want, "round {round}");
            assert_eq!(r.allows(), want.iter().filter(|(_, r)| r.allow()).count());
            assert_eq!(r.family_len(Family::V4), want.iter().filter(|(p, _)| p.is_v4()).count());
        }
    }

    #[test]
    fn merge_keeps_the_list_sorted_and_applies_both_sides() {
        let mut r = current(&["192.0.2.2", "192.0.2.4", "2001:db8::1"]);
        let added: Vec<(Prefix, Rule)> = prefixes(&["192.0.2.1", "192.0.2.3", "2001:db8::2"])
            .into_iter()
            .zip(10..)
            .map(|(p, id)| (p, Rule::new(id, false)))
            .collect();
        r.merge(added, &prefixes(&["192.0.2.4", "2001:db8::1"]));
        let got: Vec<String> = r.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(got, ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::2"]);
        assert_eq!(r.get(&"192.0.2.3".parse().unwrap()).map(|r| r.id()), Some(11));
        assert_eq!(r.get(&"192.0.2.2".parse().unwrap()).map(|r| r.id()), Some(0));
    }
}
