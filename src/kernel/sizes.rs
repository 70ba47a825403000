//! How big a generation's maps are, the rule ids handed out in them, and
//! the encodings of ids and of the rate limit the programs read
//! (bpf/icmpguard.h).

use crate::addr::PerFamily;
use crate::error::{Error, Result};
use crate::kernel::maps::{NO_LEN, TABLE_LENS};
use crate::kernel::table::bits_for;
use crate::plan::{Entry, Limit, Rule};
use crate::skel::types;

/// Smallest capacity a generation gets, so that small edits never migrate.
const MIN_CAPACITY: u32 = 4096;

/// Sources the rate limiter tracks in a generation built without a
/// configuration (tests, tools).
const DEFAULT_SOURCES: u32 = 1024;

/// The bit that marks an allow entry's id in the maps (bpf/icmpguard.h).
const ALLOW_BIT: u32 = types::ig_abi::IG_ID_ALLOW.0;

/// The id the maps hold for a rule.
pub fn kernel_id(r: Rule) -> u32 {
    if r.allow() {
        r.id() | ALLOW_BIT
    } else {
        r.id()
    }
}

/// The rule an id of the maps stands for.
pub fn rule_of(kernel_id: u32) -> Rule {
    Rule::new(kernel_id & !ALLOW_BIT, kernel_id & ALLOW_BIT != 0)
}

/// Rule ids available for `entries` rules: room to grow by half before the
/// next migration. Ids stay below the allow bit.
pub fn capacity_for(entries: usize) -> u32 {
    let most = (ALLOW_BIT - 1) / 1024 * 1024;
    let want = entries.saturating_add(entries / 2).min(most as usize) as u32;
    want.max(MIN_CAPACITY).next_multiple_of(1024).min(most)
}

/// Sources a set of the rate limiter holds (IG_LIMIT_WAYS).
pub const LIMIT_WAYS: u32 = types::ig_abi::IG_LIMIT_WAYS.0;

/// Sets of the rate limiter for `sources` (at least one).
pub fn limit_sets(sources: u32) -> u32 {
    sources.div_ceil(LIMIT_WAYS).max(1)
}

/// Sources the rate limiter tracks when asked for `sources`: rounded up to
/// whole sets.
pub fn tracked_sources(sources: u32) -> u32 {
    limit_sets(sources).saturating_mul(LIMIT_WAYS)
}

/// Possible CPUs: what a per-CPU map holds a value for, and the slots of
/// a rule's drop counter when each CPU has its own.
pub fn possible_cpus() -> Result<u32> {
    let n = libbpf_rs::num_possible_cpus().map_err(|e| Error::kernel("counting possible CPUs", e, ""))?;
    Ok(n as u32)
}

/// The least memory the per-rule drop counters (`rule_drops`) may take
/// with a slot for every possible CPU; on a machine of more than 4 GiB,
/// a 64th of its memory (see [`drop_counter_budget`]).
pub const DROP_COUNTER_BUDGET: u64 = 64 << 20;

/// Bytes the drop counters may take with a slot per CPU on a machine of
/// `ram` bytes: 1/64 of it, at least DROP_COUNTER_BUDGET. A slot per CPU
/// costs 8 bytes × CPUs × capacity: for ten million entries (15M ids) on
/// 96 CPUs, 11.5 GB of kernel memory, which the budget turns into a
/// fraction of the machine's.
pub fn drop_counter_budget(ram: u64) -> u64 {
    (ram / 64).max(DROP_COUNTER_BUDGET)
}

/// Slots of each rule's drop counter for `cpus` possible CPUs and
/// `capacity` rule ids within `budget` bytes: one per CPU while they fit
/// (each CPU counts in its own slot with a plain add, no cache line
/// shared); else the largest power of two below `cpus` that fits, at
/// least one, which the CPUs share (CPU c counts in slot c mod slots, with
/// an atomic add: exact, at the price of a locked instruction per drop,
/// and of the cache line moving between the CPUs that share it when they
/// drop for the same rule at once).
pub fn drop_slots(cpus: u32, capacity: u32, budget: u64) -> u32 {
    let cpus = cpus.max(1);
    let per_slot = 8 * u64::from(capacity.max(1));
    if cpus == 1 || u64::from(cpus) * per_slot <= budget {
        return cpus;
    }
    let fit = (budget / per_slot).clamp(1, u64::from(cpus - 1)) as u32;
    1 << fit.ilog2()
}

/// Whether the programs can count drops in `slots` slots a rule on `cpus`
/// possible CPUs: one per CPU, or a power of two below that (shared).
pub fn valid_drop_slots(cpus: u32, slots: u32) -> bool {
    slots == cpus || (slots.is_power_of_two() && slots < cpus)
}

/// How big a generation's maps are: rule ids (and prefixes a trie), the
/// slots of each address table (2^bits, at most half used), and the
/// prefix lengths each table holds besides exact addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub ids: u32,
    pub bits: PerFamily<u32>,
    pub lens: PerFamily<[u8; TABLE_LENS]>,
    /// Buckets of the rate limiter.
    pub sources: u32,
    /// Slots of each rule's drop counter; `None`: [`drop_slots`] of the
    /// machine's possible CPUs and `ids` (a pinned map keeps its own).
    pub drop_slots: Option<u32>,
}

impl Sizes {
    /// Every map sized for `capacity` rules; prefixes in the tries.
    pub fn uniform(capacity: u32) -> Sizes {
        Sizes {
            ids: capacity,
            bits: PerFamily::from_fn(|_| bits_for(capacity)),
            lens: PerFamily::from_fn(|_| [NO_LEN; TABLE_LENS]),
            sources: DEFAULT_SOURCES,
            drop_slots: None,
        }
    }

    /// Sized for the entries: each table for its own family (a million
    /// IPv4 addresses do not cost an IPv6 table of a million slots), and
    /// holding the longest prefix lengths of its family.
    pub fn for_entries(entries: impl Iterator<Item = Entry>, sources: u32) -> Sizes {
        // One pass, nothing kept per entry: how many prefixes of each
        // length each family has (a million entries are not copied).
        let mut per_len: PerFamily<[usize; 129]> = PerFamily { v4: [0; 129], v6: [0; 129] };
        let mut total = 0usize;
        for e in entries {
            per_len[e.prefix.family()][usize::from(e.prefix.prefix_len())] += 1;
            total += 1;
        }
        let lens = PerFamily::from_fn(|family| {
            let exact = family.exact_len();
            let mut out = [NO_LEN; TABLE_LENS];
            let longest_first = (0..exact).rev().filter(|l| per_len[family][usize::from(*l)] > 0);
            for (slot, len) in out.iter_mut().zip(longest_first) {
                *slot = len;
            }
            out
        });
        let bits = PerFamily::from_fn(|family| {
            let exact = usize::from(family.exact_len());
            let in_table = per_len[family][exact]
                + lens[family]
                    .iter()
                    .filter(|l| **l != NO_LEN)
                    .map(|l| per_len[family][usize::from(*l)])
                    .sum::<usize>();
            bits_for(capacity_for(in_table))
        });
        Sizes { ids: capacity_for(total), bits, lens, sources: sources.max(1), drop_slots: None }
    }
}

/// Hands out rule ids (indexes into `rule_drops`).
#[derive(Debug, Default)]
pub(super) struct Ids {
    /// Ids below this have been handed out at some point.
    next: u32,
    free: Vec<u32>,
}

impl Ids {
    pub(super) fn from_used(used: impl Iterator<Item = u32>) -> Ids {
        let mut seen: Vec<u32> = used.collect();
        seen.sort_unstable();
        let next = seen.last().map_or(0, |m| m + 1);
        let mut free = Vec::new();
        let mut it = seen.iter().peekable();
        for id in 0..next {
            if it.next_if_eq(&&id).is_none() {
                free.push(id);
            }
        }
        free.reverse();
        Ids { next, free }
    }

    pub(super) fn take(&mut self, capacity: u32) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < capacity).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub(super) fn give_back(&mut self, id: u32) {
        self.free.push(id);
    }
}

/// The rate limit as the programs keep it (bpf/icmpguard.h): the interval
/// between admitted requests and the tolerance of a burst, in ns; (0, 0)
/// for no limit.
pub fn limit_times(limit: Limit) -> (u64, u64) {
    if limit.echo == 0 {
        return (0, 0);
    }
    let interval = (1_000_000_000 / u64::from(limit.echo)).max(1);
    (interval, interval * u64::from(limit.burst.max(1) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Prefix;

    #[test]
    fn ids_reuse_holes_before_growing() {
        let mut ids = Ids::from_used([0, 2, 5].into_iter());
        let mut got: Vec<u32> = (0..4).map(|_| ids.take(10).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 3, 4, 6]);
        ids.give_back(2);
        assert_eq!(ids.take(10), Some(2));
    }

    #[test]
    fn ids_stop_at_capacity() {
        let mut ids = Ids::default();
        assert_eq!(ids.take(2), Some(0));
        assert_eq!(ids.take(2), Some(1));
        assert_eq!(ids.take(2), None);
    }

    #[test]
    fn capacity_leaves_room_and_has_a_floor() {
        assert_eq!(capacity_for(0), 4096);
        assert!(capacity_for(1_000_000) >= 1_500_000);
        assert_eq!(capacity_for(10_000) % 1024, 0);
        // Ids stay below the allow bit, however many entries.
        assert!(capacity_for(usize::MAX) < ALLOW_BIT);
    }

    #[test]
    fn drop_counters_have_a_slot_per_cpu_within_the_budget_then_share_fewer() {
        const B: u64 = DROP_COUNTER_BUDGET;
        let bytes = |cpus: u32, ids: u32, budget: u64| 8 * u64::from(drop_slots(cpus, ids, budget)) * u64::from(ids);
        // Small lists: a slot per CPU, however many CPUs.
        assert_eq!(drop_slots(2, capacity_for(1_000_000), B), 2);
        assert_eq!(drop_slots(192, 4096, B), 192);
        assert_eq!(drop_slots(6, 4096, B), 6, "one per CPU need not be a power of two");
        assert_eq!(drop_slots(1, u32::MAX, B), 1);
        assert_eq!(drop_slots(0, 0, 0), 1);
        // Long lists on many CPUs: shared slots, a power of two within the budget.
        let ids = capacity_for(1_000_000);
        assert_eq!(drop_slots(96, ids, B), 4);
        assert!(bytes(96, ids, B) <= B);
        assert_eq!(drop_slots(2, capacity_for(10_000_000), B), 1);
        assert_eq!(drop_slots(96, capacity_for(11_100_000), B), 1);
        // The budget is a 64th of the machine's memory: a machine of 384 GiB
        // and 96 CPUs keeps a slot per CPU for a million entries, and
        // shares them three CPUs a slot for ten million.
        let big = drop_counter_budget(384 << 30);
        assert_eq!(big, 6 << 30);
        assert_eq!(drop_slots(96, ids, big), 96);
        assert_eq!(drop_slots(96, capacity_for(10_000_000), big), 32);
        assert_eq!(drop_counter_budget(1 << 30), B, "never below the floor");
        for budget in [0, B, big] {
            for cpus in [1, 2, 3, 6, 8, 64, 96, 192, 4096] {
                for entries in [0, 1_000, 100_000, 1_000_000, 11_100_000, usize::MAX] {
                    let ids = capacity_for(entries);
                    let slots = drop_slots(cpus, ids, budget);
                    assert!(valid_drop_slots(cpus, slots), "{slots} slots for {cpus} CPUs");
                    // Within the budget, or a single slot: the least there is.
                    assert!(slots == 1 || bytes(cpus, ids, budget) <= budget, "{cpus} CPUs, {ids} ids");
                    // And as many as fit: twice as many would not.
                    assert!(slots == cpus || 2 * u64::from(slots) * 8 * u64::from(ids) > budget);
                }
            }
        }
        assert!(!valid_drop_slots(8, 3) && !valid_drop_slots(8, 16) && !valid_drop_slots(8, 0));
        assert!(valid_drop_slots(6, 6) && valid_drop_slots(6, 4) && valid_drop_slots(6, 1));
    }

    #[test]
    fn an_allow_entry_keeps_its_id_beside_the_bit() {
        for r in [Rule::new(0, true), Rule::new(7, false), Rule::new(ALLOW_BIT - 2, true)] {
            assert_eq!(rule_of(kernel_id(r)), r);
        }
        assert_eq!(kernel_id(Rule::new(5, false)), 5);
    }

    #[test]
    fn the_limit_is_an_interval_and_a_tolerance() {
        assert_eq!(limit_times(Limit { echo: 0, burst: 9 }), (0, 0));
        assert_eq!(limit_times(Limit { echo: 10, burst: 20 }), (100_000_000, 1_900_000_000));
        assert_eq!(limit_times(Limit { echo: 1, burst: 1 }), (1_000_000_000, 0));
        assert_eq!(limit_times(Limit { echo: 2_000_000_000, burst: 0 }), (1, 0));
    }

    #[test]
    fn tables_take_the_longest_prefix_lengths_of_each_family() {
        let p: Vec<Prefix> = [
            "192.0.2.1",
            "198.51.100.0/24",
            "203.0.113.0/28",
            "192.0.2.0/24",
            "10.0.0.0/8",
            "2001:db8::/32",
            "2001:db8::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let s = Sizes::for_entries(crate::plan::blocks(&p), 1024);
        // The longest first, as many as there are slots, the rest unused.
        let want = |lens: &[u8]| {
            let mut a = [NO_LEN; TABLE_LENS];
            for (slot, len) in a.iter_mut().zip(lens) {
                *slot = *len;
            }
            a
        };
        assert_eq!(s.lens.v4, want(&[28, 24, 8]));
        assert_eq!(s.lens.v6, want(&[32]));
        let none = Sizes::for_entries(crate::plan::blocks(&p[..1]), 1024);
        assert_eq!(none.lens.v4, [NO_LEN; TABLE_LENS]);
        assert_eq!(none.lens.v6, [NO_LEN; TABLE_LENS]);
    }
}
