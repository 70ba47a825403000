//! One generation of the filter: the programs and the maps they use.
//!
//! A generation is loaded from the embedded object, either with fresh maps
//! of a given capacity or reusing pinned maps (adoption). Programs and maps
//! are held as plain file descriptors, so a generation owns no libbpf
//! object and has no lifetime to thread through the daemon.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapHandle, PrintLevel};

use crate::addr::Prefix;
use crate::config::{IcmpPolicy, LogMode};
use crate::error::{Error, Result};
use crate::kernel::maps::Shapes;
use crate::kernel::maps::{Maps, RuleMap, MAP_NAMES};
use crate::kernel::sys::{self, TestRun};
use crate::kernel::table::{bits_for, Shape};
use crate::reconcile::{Plan, Rules};
use crate::skel::{types, IcmpguardSkelBuilder};

/// Smallest capacity a generation gets, so that small edits never migrate.
const MIN_CAPACITY: u32 = 4096;
/// The ring buffer wakes the daemon when this fraction of it is queued.
const WAKEUP_FRACTION: u32 = 16;

/// Rule ids available for `entries` rules: room to grow by half before the
/// next migration.
pub fn capacity_for(entries: usize) -> u32 {
    let want = entries.saturating_add(entries / 2).min(u32::MAX as usize / 2) as u32;
    want.max(MIN_CAPACITY).next_multiple_of(1024)
}

/// How big a generation's maps are: rule ids (and prefixes a trie), and
/// the slots of each exact-address table (2^bits, at most half used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub ids: u32,
    pub v4_bits: u32,
    pub v6_bits: u32,
}

impl Sizes {
    /// Every map sized for `capacity` rules.
    pub fn uniform(capacity: u32) -> Sizes {
        Sizes { ids: capacity, v4_bits: bits_for(capacity), v6_bits: bits_for(capacity) }
    }

    /// Sized for a blocklist, each table for its own family: a million
    /// IPv4 addresses do not cost an IPv6 table of a million slots.
    pub fn for_block(block: &[Prefix]) -> Sizes {
        let v4 = block.iter().filter(|p| RuleMap::of(p) == RuleMap::V4Exact).count();
        let v6 = block.iter().filter(|p| RuleMap::of(p) == RuleMap::V6Exact).count();
        Sizes {
            ids: capacity_for(block.len()),
            v4_bits: bits_for(capacity_for(v4)),
            v6_bits: bits_for(capacity_for(v6)),
        }
    }
}

/// Hands out rule ids (indexes into `rule_drops`).
#[derive(Debug, Default)]
struct Ids {
    /// Ids below this have been handed out at some point.
    next: u32,
    free: Vec<u32>,
}

impl Ids {
    fn from_used(used: impl Iterator<Item = u32>) -> Ids {
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

    fn take(&mut self, capacity: u32) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < capacity).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn give_back(&mut self, id: u32) {
        self.free.push(id);
    }
}

/// What the programs are told besides the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub policy: IcmpPolicy,
    pub log: LogMode,
    /// Event lines per second the daemon forwards; 0 means no limit.
    pub rate_limit: u32,
}

/// The programs of one generation and the maps they use.
pub struct Generation {
    pub maps: Maps,
    xdp: OwnedFd,
    tcx: OwnedFd,
    pub xdp_id: u32,
    pub tcx_id: u32,
    capacity: u32,
    /// Mirror of the rule maps.
    rules: Rules,
    ids: Ids,
    /// Maps created by this load, never written: all counters are zero.
    fresh: bool,
    settings: Option<Settings>,
    /// Entries of the IPv4 and IPv6 tries.
    prefix_counts: (u32, u32),
    /// The exact-address tables' geometry and seeds.
    shapes: Shapes,
    /// Deleted slots in the IPv4 and IPv6 tables (upper bounds).
    tombstones: (usize, usize),
}

/// What applying a plan came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// An IPv4 address could not be placed within the probe bound: the
    /// rules were written but that one; the caller rebuilds the generation
    /// (another seed) to apply the plan in full.
    Rebuild,
}

/// A seed for the IPv4 table's hash, different for every generation.
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() as u32
}

static LIBBPF_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// libbpf's own messages are kept (not printed) so that a failed load can
/// quote the verifier's last lines.
/// With ICMPGUARD_LIBBPF_DEBUG set, every message also goes to stderr.
fn keep_libbpf_message(level: PrintLevel, msg: String) {
    if std::env::var_os("ICMPGUARD_LIBBPF_DEBUG").is_some() {
        eprint!("libbpf: {msg}");
    }
    if matches!(level, PrintLevel::Debug) {
        return;
    }
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        log.extend(msg.lines().map(str::to_string));
        let excess = log.len().saturating_sub(40);
        log.drain(..excess);
    }
}

fn take_libbpf_log() -> String {
    LIBBPF_LOG.lock().map(|mut l| std::mem::take(&mut *l).join("\n")).unwrap_or_default()
}

/// ICMPGUARD_ABI_VERSION of bpf/icmpguard.h, read from the embedded object
/// (so that the header stays its only definition).
pub fn abi_version() -> Result<u32> {
    static ABI: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(v) = ABI.get() {
        return Ok(*v);
    }
    let mut storage = MaybeUninit::uninit();
    let open = IcmpguardSkelBuilder::default()
        .open(&mut storage)
        .map_err(|e| Error::kernel("opening the embedded BPF object", &e, ""))?;
    let v = open.maps.rodata_data.as_ref().map(|r| r.ig_abi_version).ok_or_else(|| Error::Kernel {
        what: "the embedded BPF object has no .rodata (a build problem)".into(),
        errno: None,
        hint: String::new(),
    })?;
    Ok(*ABI.get_or_init(|| v))
}

/// Possible CPUs: the slots of each rule's drop counter.
fn possible_cpus() -> Result<u32> {
    let n = libbpf_rs::num_possible_cpus().map_err(|e| Error::kernel("counting possible CPUs", &e, ""))?;
    Ok(n as u32)
}

/// How a pinned map differs from this binary's definition of it, if it
/// does. The capacity of the rule maps is not part of the definition (it
/// is set from the pinned maps; growing them is a migration of its own).
fn incompatibility(
    name: &str,
    ours: &libbpf_rs::OpenMapMut<'_>,
    pinned: &MapHandle,
    capacity_sized: bool,
) -> Option<String> {
    let flags = pinned.info().map(|i| i.info.map_flags).unwrap_or(u32::MAX);
    let differs = |what: &str, p: String, o: String| Some(format!("map {name}: {what} {p} pinned, {o} in this binary"));
    if pinned.map_type() != ours.map_type() {
        return differs("type", format!("{:?}", pinned.map_type()), format!("{:?}", ours.map_type()));
    }
    if pinned.key_size() != ours.key_size() {
        return differs("key size", pinned.key_size().to_string(), ours.key_size().to_string());
    }
    if pinned.value_size() != ours.value_size() {
        return differs("value size", pinned.value_size().to_string(), ours.value_size().to_string());
    }
    if flags != ours.map_flags() {
        return differs("flags", format!("{flags:#x}"), format!("{:#x}", ours.map_flags()));
    }
    if !capacity_sized && pinned.max_entries() != ours.max_entries() {
        return differs("size", pinned.max_entries().to_string(), ours.max_entries().to_string());
    }
    None
}

/// The result of trying to reuse pinned maps.
pub enum Reuse {
    Adopted(Box<Generation>),
    /// The pinned maps do not fit this binary's programs (a definition
    /// changed): a new generation is needed.
    Incompatible(String),
}

/// Why a load failed.
enum LoadError {
    /// The pinned maps do not fit; the reason.
    Incompatible(String),
    Failed(Error),
}

impl Generation {
    /// Loads the programs with new, empty maps of `capacity` rules.
    pub fn create(capacity: u32) -> Result<Generation> {
        Generation::create_sized(Sizes::uniform(capacity))
    }

    /// Loads the programs with new, empty maps of the given sizes.
    pub fn create_sized(sizes: Sizes) -> Result<Generation> {
        match Generation::load(sizes, None) {
            Ok(mut g) => {
                g.fresh = true;
                Ok(g)
            }
            Err(LoadError::Failed(e)) => Err(e),
            Err(LoadError::Incompatible(why)) => Err(Error::Kernel { what: why, errno: None, hint: String::new() }),
        }
    }

    /// Loads the programs on top of pinned maps, if they fit.
    pub fn adopt(maps: &Maps) -> Result<Reuse> {
        let meta = maps.read_meta().unwrap_or_default();
        let ours = abi_version()?;
        if meta.abi_version != ours {
            return Ok(Reuse::Incompatible(format!(
                "pinned maps have layout version {}, this binary uses {ours}",
                meta.abi_version
            )));
        }
        let sizes = Sizes { ids: maps.rule_drops.max_entries(), v4_bits: 0, v6_bits: 0 };
        match Generation::load(sizes, Some(maps)) {
            Ok(mut g) => {
                let settings = maps.read_settings().unwrap_or_default();
                g.shapes.v4.bits = settings.v4_bits;
                g.shapes.v4.seed = settings.v4_seed;
                g.shapes.v6.bits = settings.v6_bits;
                g.shapes.v6.seed = settings.v6_seed;
                for (family, shape, map) in
                    [("IPv4", g.shapes.v4, &g.maps.v4_exact), ("IPv6", g.shapes.v6, &g.maps.v6_exact)]
                {
                    if shape.bits == 0 || shape.bits > 31 || 1u64 << shape.bits != u64::from(map.max_entries()) {
                        return Ok(Reuse::Incompatible(format!(
                            "the pinned {family} table has {} slots, its settings say 2^{}",
                            map.max_entries(),
                            shape.bits
                        )));
                    }
                }
                g.tombstones = g.maps.tombstones();
                g.rules = Rules::from_unsorted(g.maps.read_rules());
                g.ids = Ids::from_used(g.rules.iter().map(|(_, id)| *id));
                g.prefix_counts = count_prefixes(g.rules.iter().map(|(p, _)| p));
                Ok(Reuse::Adopted(Box::new(g)))
            }
            Err(LoadError::Incompatible(why)) => Ok(Reuse::Incompatible(why)),
            Err(LoadError::Failed(e)) => Err(e),
        }
    }

    /// Opens the embedded object, sizes or reuses the maps and loads it.
    fn load(sizes: Sizes, reuse: Option<&Maps>) -> std::result::Result<Generation, LoadError> {
        let capacity = sizes.ids;
        let level =
            if std::env::var_os("ICMPGUARD_LIBBPF_DEBUG").is_some() { PrintLevel::Debug } else { PrintLevel::Info };
        libbpf_rs::set_print(Some((level, keep_libbpf_message)));
        let fail = |what: &str, e: libbpf_rs::Error| {
            let log = take_libbpf_log();
            let hint = if log.is_empty() {
                "icmpguard needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel with BTF, XDP and tcx (6.6 or later)"
                    .to_string()
            } else {
                format!("libbpf said:\n{log}")
            };
            LoadError::Failed(Error::kernel(what, &e, hint))
        };
        let cpus = possible_cpus().map_err(LoadError::Failed)?;
        let mut storage = MaybeUninit::uninit();
        let mut open = IcmpguardSkelBuilder::default()
            .open(&mut storage)
            .map_err(|e| fail("opening the embedded BPF object", e))?;
        {
            let m = &mut open.maps;
            for map in [&mut m.v4_lpm, &mut m.v6_lpm, &mut m.rule_drops] {
                map.set_max_entries(capacity).map_err(|e| fail("sizing the rule maps", e))?;
            }
            // When adopting, reuse_fd takes the pinned tables' sizes.
            for (map, bits) in [(&mut m.v4_exact, sizes.v4_bits), (&mut m.v6_exact, sizes.v6_bits)] {
                map.set_max_entries(1 << bits.clamp(1, 31)).map_err(|e| fail("sizing the address tables", e))?;
            }
            m.rule_drops.set_value_size(8 * cpus).map_err(|e| fail("sizing the drop counters", e))?;
            match m.rodata_data.as_mut() {
                Some(rodata) => rodata.nr_cpus = cpus,
                None => {
                    return Err(LoadError::Failed(Error::Kernel {
                        what: "the embedded BPF object has no .rodata (a build problem)".into(),
                        errno: None,
                        hint: String::new(),
                    }))
                }
            }
        }
        if let Some(old) = reuse {
            let m = &mut open.maps;
            let pairs = [
                &mut m.v4_exact,
                &mut m.v6_exact,
                &mut m.v4_lpm,
                &mut m.v6_lpm,
                &mut m.rule_drops,
                &mut m.settings,
                &mut m.counters,
                &mut m.budget,
                &mut m.meta,
                &mut m.events,
            ];
            for (i, (new, old)) in pairs.into_iter().zip(old.all()).enumerate() {
                // libbpf's reuse_fd takes the pinned map's definition as it
                // is: a definition that changed must be caught here.
                if let Some(why) = incompatibility(MAP_NAMES[i], new, old, i < 5) {
                    return Err(LoadError::Incompatible(why));
                }
                new.reuse_fd(old.as_fd()).map_err(|e| fail("reusing a pinned map", e))?;
            }
        }
        let (max_probe, mul) =
            open.maps.rodata_data.as_ref().map(|r| (r.ig_max_probe, r.ig_hash_mul)).unwrap_or_default();
        let skel = open.load().map_err(|e| fail("loading the BPF programs", e))?;

        let handle = |map: &libbpf_rs::Map<'_>| MapHandle::try_from(map).map_err(|e| fail("duplicating a map", e));
        let m = &skel.maps;
        let maps = Maps::new([
            handle(&m.v4_exact)?,
            handle(&m.v6_exact)?,
            handle(&m.v4_lpm)?,
            handle(&m.v6_lpm)?,
            handle(&m.rule_drops)?,
            handle(&m.settings)?,
            handle(&m.counters)?,
            handle(&m.budget)?,
            handle(&m.meta)?,
            handle(&m.events)?,
        ])
        .map_err(LoadError::Failed)?;
        let io = |what: &str, e: std::io::Error| LoadError::Failed(Error::kernel_io(what, &e, ""));
        let xdp = skel.progs.icmpguard_xdp.as_fd().try_clone_to_owned().map_err(|e| io("duplicating a program", e))?;
        let tcx = skel.progs.icmpguard_tcx.as_fd().try_clone_to_owned().map_err(|e| io("duplicating a program", e))?;
        let xdp_id = sys::prog_id(xdp.as_fd()).map_err(|e| io("reading a program id", e))?;
        let tcx_id = sys::prog_id(tcx.as_fd()).map_err(|e| io("reading a program id", e))?;
        Ok(Generation {
            maps,
            xdp,
            tcx,
            xdp_id,
            tcx_id,
            capacity,
            rules: Rules::default(),
            ids: Ids::default(),
            fresh: false,
            settings: None,
            prefix_counts: (0, 0),
            shapes: Shapes {
                v4: Shape { bits: sizes.v4_bits, seed: random_seed(), max_probe, mul },
                v6: Shape { bits: sizes.v6_bits, seed: random_seed(), max_probe, mul },
            },
            tombstones: (0, 0),
        })
    }

    /// Whether deletions left so many tombstones in a table that lookups
    /// slow down: a rebuild clears them.
    pub fn wants_rebuild(&self) -> bool {
        self.tombstones.0 > self.shapes.v4.slots() / 4 || self.tombstones.1 > self.shapes.v6.slots() / 4
    }

    /// Why this generation cannot take `plan` (its additions go in before
    /// its deletions, so for a while the maps hold both), or why it should
    /// be rebuilt anyway (deletions left too many tombstones for fast
    /// lookups); `None` when it can.
    pub fn cannot_take(&self, plan: &Plan) -> Option<String> {
        let count =
            |kind: RuleMap, list: &mut dyn Iterator<Item = &Prefix>| list.filter(|p| RuleMap::of(p) == kind).count();
        let peak = self.rules.len() + plan.add.len();
        if peak > self.capacity as usize {
            return Some(format!("the change needs room for {peak} rules at once, capacity is {}", self.capacity));
        }
        for (family, kind, shape, tombs) in [
            ("IPv4", RuleMap::V4Exact, self.shapes.v4, self.tombstones.0),
            ("IPv6", RuleMap::V6Exact, self.shapes.v6, self.tombstones.1),
        ] {
            let now = count(kind, &mut self.rules.iter().map(|(p, _)| p));
            let peak = now + count(kind, &mut plan.add.iter());
            if peak > shape.slots() / 2 {
                return Some(format!(
                    "the {family} table of {} slots is too small for {peak} addresses",
                    shape.slots()
                ));
            }
            if tombs > shape.slots() / 4 {
                return Some(format!("deletions left {tombs} tombstones in the {family} table"));
            }
        }
        None
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn xdp_fd(&self) -> BorrowedFd<'_> {
        self.xdp.as_fd()
    }

    pub fn tcx_fd(&self) -> BorrowedFd<'_> {
        self.tcx.as_fd()
    }

    /// The rules in the maps, with their ids.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies a plan: additions first, then deletions, so that nothing
    /// that stays blocked is ever unblocked in between. Fails, changing
    /// nothing, when the additions do not fit the capacity (the caller
    /// migrates to larger maps first).
    pub fn apply(&mut self, plan: &Plan) -> Result<Outcome> {
        let mut added: Vec<(Prefix, u32)> = Vec::with_capacity(plan.add.len());
        for p in &plan.add {
            if self.rules.get(p).is_some() {
                continue;
            }
            let Some(id) = self.ids.take(self.capacity) else {
                for (_, id) in added {
                    self.ids.give_back(id);
                }
                return Err(Error::Kernel {
                    what: format!("no rule id left in a generation of {}", self.capacity),
                    errno: None,
                    hint: "restart the daemon to migrate to larger maps".into(),
                });
            };
            added.push((*p, id));
        }
        added.sort_unstable_by_key(|(p, _)| *p);
        if !self.fresh {
            let ids: Vec<u32> = added.iter().map(|(_, id)| *id).collect();
            self.maps.zero_drops(&ids)?;
        }
        let outcome = match self.maps.write_rules(&added, self.shapes)? {
            Ok(()) => Outcome::Applied,
            Err(_) => Outcome::Rebuild,
        };
        let (a4, a6) = count_prefixes(added.iter().map(|(p, _)| p));
        let counts_with_adds = (self.prefix_counts.0 + a4, self.prefix_counts.1 + a6);
        self.set_prefix_counts(counts_with_adds)?;

        let removed: Vec<(Prefix, u32)> =
            plan.remove.iter().filter_map(|p| self.rules.get(p).map(|id| (*p, id))).collect();
        let removed_prefixes: Vec<Prefix> = removed.iter().map(|(p, _)| *p).collect();
        self.maps.delete_rules(&removed_prefixes, self.shapes)?;
        self.tombstones.0 += removed_prefixes.iter().filter(|p| RuleMap::of(p) == RuleMap::V4Exact).count();
        self.tombstones.1 += removed_prefixes.iter().filter(|p| RuleMap::of(p) == RuleMap::V6Exact).count();
        self.rules.merge(added, &removed_prefixes);
        for (_, id) in &removed {
            self.ids.give_back(*id);
        }
        let (r4, r6) = count_prefixes(removed_prefixes.iter());
        self.set_prefix_counts((counts_with_adds.0 - r4, counts_with_adds.1 - r6))?;
        self.fresh = false;
        Ok(outcome)
    }

    /// Tells the programs how many prefixes each trie holds, so that they
    /// skip the trie lookup when it is empty.
    fn set_prefix_counts(&mut self, counts: (u32, u32)) -> Result<()> {
        if counts == self.prefix_counts {
            return Ok(());
        }
        self.prefix_counts = counts;
        match self.settings {
            Some(s) => self.write_settings(s),
            None => {
                // Adopted maps, settings not given yet: keep the running policy.
                let mut cur = self.maps.read_settings().unwrap_or_default();
                cur.v4_prefixes = counts.0;
                cur.v6_prefixes = counts.1;
                cur.v4_bits = self.shapes.v4.bits;
                cur.v4_seed = self.shapes.v4.seed;
                cur.v6_bits = self.shapes.v6.bits;
                cur.v6_seed = self.shapes.v6.seed;
                self.maps.write_settings(&cur)
            }
        }
    }

    /// Writes policy, logging and the prefix counts to the settings map.
    pub fn set_settings(&mut self, s: Settings) -> Result<()> {
        self.settings = Some(s);
        self.write_settings(s)
    }

    fn write_settings(&self, s: Settings) -> Result<()> {
        self.maps.write_settings(&types::ig_settings {
            policy: match s.policy {
                IcmpPolicy::Echo => 0,
                IcmpPolicy::All => 1,
            },
            log: match s.log {
                LogMode::None => 0,
                LogMode::Blocked => 1,
                LogMode::All => 2,
            },
            // Each CPU may queue what the daemon forwards in a second; what
            // is over that is only counted, and reported as suppressed.
            event_budget: s.rate_limit,
            v4_prefixes: self.prefix_counts.0,
            v6_prefixes: self.prefix_counts.1,
            wakeup_bytes: self.maps.events.max_entries() / WAKEUP_FRACTION,
            v4_bits: self.shapes.v4.bits,
            v4_seed: self.shapes.v4.seed,
            v6_bits: self.shapes.v6.bits,
            v6_seed: self.shapes.v6.seed,
        })
    }

    /// Copies per-rule drop counters and the global counters from `old` for
    /// rules both generations hold (used when migrating).
    pub fn carry_counters_from(&mut self, old: &Maps) -> Result<()> {
        let old_rules = Rules::from_unsorted(old.read_rules());
        let size = self.maps.rule_drops.value_size() as usize;
        let mut values = Vec::new();
        for (p, new_id) in self.rules.iter() {
            let Some(old_id) = old_rules.get(p) else { continue };
            if let Some(v) = old.raw_drops(old_id) {
                if v.len() == size && v.iter().any(|b| *b != 0) {
                    values.push((*new_id, v));
                }
            }
        }
        self.maps.write_drops(&values)?;
        if let Ok(Some(per_cpu)) = old.counters.lookup_percpu(sys::bytes_of(&0u32), libbpf_rs::MapFlags::ANY) {
            let _ = self.maps.counters.update_percpu(sys::bytes_of(&0u32), &per_cpu, libbpf_rs::MapFlags::ANY);
        }
        Ok(())
    }

    /// Runs the XDP program on one packet in the kernel.
    pub fn test_run_xdp(&self, packet: &[u8], repeat: u32) -> std::io::Result<TestRun> {
        sys::prog_test_run(self.xdp.as_fd(), packet, repeat)
    }

    /// Runs the tcx egress program on one packet in the kernel.
    pub fn test_run_tcx(&self, packet: &[u8], repeat: u32) -> std::io::Result<TestRun> {
        sys::prog_test_run(self.tcx.as_fd(), packet, repeat)
    }
}

/// Entries among `prefixes` that live in the IPv4 and IPv6 tries.
fn count_prefixes<'a>(prefixes: impl Iterator<Item = &'a Prefix>) -> (u32, u32) {
    prefixes.fold((0, 0), |(v4, v6), p| match RuleMap::of(p) {
        RuleMap::V4Lpm => (v4 + 1, v6),
        RuleMap::V6Lpm => (v4, v6 + 1),
        _ => (v4, v6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn prefixes_are_counted_per_trie() {
        let p: Vec<Prefix> = ["192.0.2.1", "198.51.100.0/24", "2001:db8::/32", "2001:db8::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(count_prefixes(p.iter()), (1, 1));
    }
}
