//! One generation of the filter: the programs and the maps they use.
//!
//! A generation is loaded from the embedded object, either with fresh maps
//! of a given capacity or reusing pinned maps (adoption). Programs and maps
//! are held as plain file descriptors, so a generation owns no libbpf
//! object and has no lifetime to thread through the daemon.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapHandle, PrintLevel};

use crate::addr::{Family, PerFamily, Prefix};
use crate::error::{Error, Result};
use crate::kernel::maps::{self, Layout, Maps, Sizing, NO_LEN, TABLE_LENS};
use crate::kernel::probe::{self, XdpVariant};
use crate::kernel::refusal;
use crate::kernel::sys::{self, TestRun};
use crate::kernel::table::Shape;
use crate::plan::{LogMode, Settings};
use crate::plan::{Plan, Rule, Rules};
use crate::skel::{types, IcmpguardSkelBuilder};

pub use super::sizes::{capacity_for, limit_sets, limit_times, rule_of, tracked_sources, Sizes, LIMIT_WAYS};
use super::sizes::{drop_counter_budget, drop_slots, possible_cpus, valid_drop_slots, Ids};

/// The ring buffer wakes the daemon when this fraction of it is queued.
const WAKEUP_FRACTION: u32 = 16;

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
    prefix_counts: PerFamily<u32>,
    /// The tables' geometry and seeds, and the prefix lengths they hold.
    layout: Layout,
    /// Deleted slots in the IPv4 and IPv6 tables (upper bounds).
    tombstones: PerFamily<usize>,
    /// How long creating the maps took, and loading (verifying) the
    /// programs; zero for adopted maps and programs.
    pub load_time: LoadTime,
}

/// Where the time of a load went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadTime {
    /// Creating the maps (with libbpf's probes of the kernel).
    pub maps: std::time::Duration,
    /// Loading (verifying) the programs, both at once.
    pub programs: std::time::Duration,
}

/// Which programs one load of the object verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progs {
    /// None: the load creates the maps.
    None,
    Xdp,
    Tcx,
}

/// The maps of one load of the object, and its program.
struct Object {
    maps: Maps,
    prog: Option<OwnedFd>,
}

/// What applying a plan came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// An entry could not be placed within its table's probe bound: the
    /// rules were written but that one; the caller rebuilds the generation
    /// (another seed) to apply the plan in full.
    Rebuild,
}

/// Pin names of a generation's programs, beside its maps.
pub const PROG_PINS: [&str; 2] = ["prog_xdp", "prog_tcx"];

/// The identity of the embedded BPF object (build.rs).
pub fn object_id() -> u64 {
    u64::from_str_radix(env!("ICMPGUARD_OBJECT_ID"), 16).unwrap_or(0)
}

/// A seed for the IPv4 table's hash, different for every generation.
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() as u32
}

/// Constants of bpf/icmpguard.h, from the skeleton's enums (so that the
/// header stays their only definition; no object is opened for them).
#[derive(Clone, Copy, Debug)]
pub struct AbiConstants {
    pub abi_version: u32,
    pub max_probe: u32,
    pub hash_mul: u64,
    pub v4_len_bits: u32,
}

pub fn abi_constants() -> AbiConstants {
    use types::{ig_abi, ig_hash_mul};
    AbiConstants {
        abi_version: ig_abi::ICMPGUARD_ABI_VERSION.0,
        max_probe: ig_abi::IG_MAX_PROBE.0,
        hash_mul: u64::from(ig_hash_mul::IG_HASH_MUL_HI.0) << 32 | u64::from(ig_hash_mul::IG_HASH_MUL_LO.0),
        v4_len_bits: ig_abi::IG_V4_LEN_BITS.0,
    }
}

/// ICMPGUARD_ABI_VERSION of bpf/icmpguard.h.
pub fn abi_version() -> u32 {
    abi_constants().abi_version
}

/// The machine's memory in bytes (0 when the kernel does not say).
fn memory() -> u64 {
    nix::sys::sysinfo::sysinfo().map_or(0, |i| i.ram_total())
}

/// The length of a jiffy in nanoseconds, the resolution of
/// CLOCK_MONOTONIC_COARSE (the kernel's TICK_NSEC: 4 ms at HZ=250): the
/// unit of the rate limit's clock (`limit_clock` in the BPF program). 0
/// when the kernel does not say or says something no HZ gives (the
/// programs then read the clock through a helper).
pub fn ns_per_jiffy() -> u32 {
    use nix::time::{clock_getres, ClockId};
    match clock_getres(ClockId::CLOCK_MONOTONIC_COARSE) {
        // HZ from 10 to 10000.
        Ok(res) if res.tv_sec() == 0 && (100_000..=100_000_000).contains(&res.tv_nsec()) => res.tv_nsec() as u32,
        _ => 0,
    }
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
            Err(LoadError::Incompatible(why)) => Err(Error::Internal { what: why, hint: String::new() }),
        }
    }

    /// Loads the programs on top of pinned maps, if they fit.
    pub fn adopt(maps: &Maps) -> Result<Reuse> {
        let Some(meta) = maps.read_meta() else {
            return Ok(Reuse::Incompatible(
                "its meta map is of another size: another layout version than this binary's".into(),
            ));
        };
        let ours = abi_version();
        if meta.abi_version != ours {
            return Ok(Reuse::Incompatible(format!(
                "pinned maps have layout version {}, this binary uses {ours}",
                meta.abi_version
            )));
        }
        let mut sizes = Sizes::uniform(maps.rule_drops.max_entries());
        sizes.bits = PerFamily::default();
        match Generation::load(sizes, Some(maps)) {
            Ok(mut g) => Ok(match g.read_back()? {
                None => Reuse::Adopted(Box::new(g)),
                Some(why) => Reuse::Incompatible(why),
            }),
            Err(LoadError::Incompatible(why)) => Ok(Reuse::Incompatible(why)),
            Err(LoadError::Failed(e)) => Err(e),
        }
    }

    /// The pinned maps together with the programs pinned in `dir` beside
    /// them, when those were loaded from this binary's object (and the same
    /// choice of XDP program): nothing is loaded or verified. The rules are
    /// not read back yet ([`Generation::read_back`]). `None` when the
    /// programs are not this binary's, or are missing: adopt the maps alone.
    pub fn with_programs(maps: &Maps, dir: &std::path::Path) -> Result<Option<Generation>> {
        let meta = maps.read_meta().unwrap_or_default();
        let variant = probe::facilities().xdp_variant() as u32;
        if meta.abi_version != abi_version() || meta.object_id != object_id() || meta.xdp_compat != variant {
            return Ok(None);
        }
        let (Ok(xdp), Ok(tcx)) = (sys::obj_get(&dir.join(PROG_PINS[0])), sys::obj_get(&dir.join(PROG_PINS[1]))) else {
            return Ok(None);
        };
        let reopened = Maps::open_pinned(dir)?;
        let mut sizes = Sizes::uniform(reopened.rule_drops.max_entries());
        sizes.bits = PerFamily::default();
        // The layout comes from the pinned settings (read_back).
        Ok(Generation::assemble(reopened, xdp, tcx, sizes, LoadTime::default()).ok())
    }

    /// A generation of these maps and programs, its maps of `sizes`, empty
    /// as far as it knows (adopt_state reads adopted maps back).
    fn assemble(maps: Maps, xdp: OwnedFd, tcx: OwnedFd, sizes: Sizes, load_time: LoadTime) -> Result<Generation> {
        let io = |e| Error::kernel_io("reading a program id", e, "");
        let (xdp_id, tcx_id) = (sys::prog_id(xdp.as_fd()).map_err(io)?, sys::prog_id(tcx.as_fd()).map_err(io)?);
        let abi = abi_constants();
        Ok(Generation {
            maps,
            xdp,
            tcx,
            xdp_id,
            tcx_id,
            capacity: sizes.ids,
            rules: Rules::default(),
            ids: Ids::default(),
            fresh: false,
            settings: None,
            prefix_counts: PerFamily::default(),
            layout: Layout {
                shape: PerFamily::from_fn(|family| Shape {
                    bits: sizes.bits[family],
                    seed: random_seed(),
                    max_probe: abi.max_probe,
                    mul: abi.hash_mul,
                    len_bits: abi.v4_len_bits,
                }),
                lens: sizes.lens,
            },
            tombstones: PerFamily::default(),
            load_time,
        })
    }

    /// Pins the programs in `dir` (replacing what is there) and records in
    /// `meta` which object they come from.
    pub fn pin_programs(&self, dir: &std::path::Path, meta: &mut types::ig_meta) -> Result<()> {
        for (name, fd) in PROG_PINS.iter().zip([self.xdp.as_fd(), self.tcx.as_fd()]) {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            sys::obj_pin(fd, &path)
                .map_err(|e| Error::kernel_io(format!("pinning a program at {}", path.display()), e, ""))?;
        }
        meta.object_id = object_id();
        meta.xdp_compat = probe::facilities().xdp_variant() as u32;
        Ok(())
    }

    /// Reads the layout, rules and ids of adopted maps back from them.
    /// `Some(why)` when the pinned settings do not describe the tables
    /// (the maps cannot be used as they are).
    pub fn read_back(&mut self) -> Result<Option<String>> {
        let settings = self.maps.read_settings().unwrap_or_default();
        let l = &mut self.layout;
        (l.shape.v4.bits, l.shape.v4.seed) = (settings.v4_bits, settings.v4_seed);
        (l.shape.v6.bits, l.shape.v6.seed) = (settings.v6_bits, settings.v6_seed);
        let len = |v: u32, max: u32| if v <= max { v as u8 } else { NO_LEN };
        for k in 0..TABLE_LENS {
            l.lens.v4[k] = len(settings.v4_lens[k], 31);
            l.lens.v6[k] = len(settings.v6_lens[k], 127);
        }
        for family in Family::ALL {
            let (shape, map) = (self.layout.shape[family], self.maps.table(family));
            if shape.bits == 0 || shape.bits > 31 || 1u64 << shape.bits != u64::from(map.max_entries()) {
                return Ok(Some(format!(
                    "the pinned {} table has {} slots, its settings say 2^{}",
                    family.name(),
                    map.max_entries(),
                    shape.bits
                )));
            }
        }
        let len_bits = self.layout.shape.v4.len_bits;
        self.tombstones = self.maps.tombstones(len_bits);
        self.rules =
            Rules::from_unsorted(self.maps.read_rules(len_bits).into_iter().map(|(p, k)| (p, rule_of(k))).collect());
        self.ids = Ids::from_used(self.rules.iter().map(|(_, r)| r.id()));
        // Whatever happened to the hints, the programs look where every
        // rule is from now on.
        self.maps.write_hints(self.rules.iter().map(|(p, r)| (p, r.allow())), &self.layout.lens)?;
        self.prefix_counts = self.trie_counts(&self.layout);
        Ok(None)
    }

    /// Creates the maps (or reuses `reuse`) and loads the two programs on
    /// them. The programs are verified at once, in two loads of the object
    /// that share the maps: verification is the longest part of a cold
    /// start, and each program's is independent of the other's.
    fn load(sizes: Sizes, reuse: Option<&Maps>) -> std::result::Result<Generation, LoadError> {
        let started = std::time::Instant::now();
        let created = match reuse {
            Some(_) => None,
            None => Some(Generation::load_object(&sizes, None, Progs::None)?.maps),
        };
        let maps_time = started.elapsed();
        let Some(shared) = reuse.or(created.as_ref()) else {
            return Err(LoadError::Failed(Error::Internal { what: "no maps to load on".into(), hint: String::new() }));
        };
        let verifying = std::time::Instant::now();
        let (xdp, tcx) = std::thread::scope(|s| {
            let tcx = s.spawn(|| Generation::load_object(&sizes, Some(shared), Progs::Tcx));
            let xdp = Generation::load_object(&sizes, Some(shared), Progs::Xdp);
            (xdp, tcx.join())
        });
        let programs_time = verifying.elapsed();
        let lost = || {
            LoadError::Failed(Error::Internal {
                what: "a program load returned no program".into(),
                hint: "report this bug".into(),
            })
        };
        let tcx = tcx.map_err(|_| lost())??;
        let xdp = xdp?;
        let (Some(xdp_fd), Some(tcx_fd)) = (xdp.prog, tcx.prog) else {
            return Err(lost());
        };
        // The maps as the programs use them (the same kernel maps as
        // `reuse` when there is one).
        let maps = created.unwrap_or(xdp.maps);
        let time = LoadTime { maps: maps_time, programs: programs_time };
        Generation::assemble(maps, xdp_fd, tcx_fd, sizes, time).map_err(LoadError::Failed)
    }

    /// Opens the embedded object, sizes or reuses the maps and loads it
    /// with the programs `progs` asks for.
    fn load_object(sizes: &Sizes, reuse: Option<&Maps>, progs: Progs) -> std::result::Result<Object, LoadError> {
        let capacity = sizes.ids;
        let level =
            if std::env::var_os("ICMPGUARD_LIBBPF_DEBUG").is_some() { PrintLevel::Debug } else { PrintLevel::Info };
        libbpf_rs::set_print(Some((level, refusal::keep_libbpf_message)));
        let fail = |what: &str, e: libbpf_rs::Error| {
            // The errno first (Error::kernel), then what libbpf logged.
            let mut err = Error::kernel(what, e, "");
            if let Error::Kernel { hint, errno, .. } = &mut err {
                *hint = refusal::load_hint(&refusal::take_libbpf_log(), *errno);
            }
            LoadError::Failed(err)
        };
        let cpus = possible_cpus().map_err(LoadError::Failed)?;
        // A pinned map keeps its slots while this machine can use them (a
        // map of another machine's CPU count is a definition that changed).
        let slots = reuse
            .map(|old| old.rule_drops.value_size() / 8)
            .filter(|s| valid_drop_slots(cpus, *s))
            .or(sizes.drop_slots)
            .unwrap_or_else(|| drop_slots(cpus, capacity, drop_counter_budget(memory())));
        if !valid_drop_slots(cpus, slots) {
            return Err(LoadError::Failed(Error::Internal {
                what: format!("{slots} drop counter slots a rule on {cpus} CPUs"),
                hint: "one per CPU or a power of two below that".into(),
            }));
        }
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
            for (map, bits) in [(&mut m.v4_exact, sizes.bits.v4), (&mut m.v6_exact, sizes.bits.v6)] {
                map.set_max_entries(1 << bits.clamp(1, 31)).map_err(|e| fail("sizing the address tables", e))?;
            }
            m.rule_drops.set_value_size(8 * slots).map_err(|e| fail("sizing the drop counters", e))?;
            m.limits.set_max_entries(limit_sets(sizes.sources)).map_err(|e| fail("sizing the rate limiter", e))?;
            match m.rodata_data.as_mut() {
                Some(rodata) => {
                    rodata.nr_cpus = cpus;
                    rodata.drop_slots = slots;
                    rodata.ns_per_jiffy = ns_per_jiffy();
                }
                None => {
                    return Err(LoadError::Failed(Error::Internal {
                        what: "the embedded BPF object has no .rodata (a build problem)".into(),
                        hint: String::new(),
                    }))
                }
            }
        }
        if let Some(old) = reuse {
            for ((name, sizing, new), (_, _, old)) in maps::open_maps(&mut open.maps).into_iter().zip(old.all()) {
                // libbpf's reuse_fd takes the pinned map's definition as it
                // is: a definition that changed must be caught here.
                if let Some(why) = incompatibility(name, new, old, sizing != Sizing::Fixed) {
                    return Err(LoadError::Incompatible(why));
                }
                new.reuse_fd(old.as_fd()).map_err(|e| fail("reusing a pinned map", e))?;
            }
        }
        // One of the three XDP programs, by what the kernel offers
        // (parse.h, gcra).
        let variant = probe::facilities().xdp_variant();
        let xdp = |v: XdpVariant| progs == Progs::Xdp && variant == v;
        open.progs.icmpguard_xdp.set_autoload(xdp(XdpVariant::Full));
        open.progs.icmpguard_xdp_atomic.set_autoload(xdp(XdpVariant::Atomic));
        open.progs.icmpguard_xdp_compat.set_autoload(xdp(XdpVariant::Compat));
        open.progs.icmpguard_tcx.set_autoload(progs == Progs::Tcx);
        let what = if progs == Progs::None { "creating the BPF maps" } else { "loading the BPF programs" };
        let skel = open.load().map_err(|e| fail(what, e))?;

        let maps = maps::loaded_maps(&skel.maps).map_err(LoadError::Failed)?;
        let prog = match progs {
            Progs::None => None,
            Progs::Xdp => Some(match variant {
                XdpVariant::Full => &skel.progs.icmpguard_xdp,
                XdpVariant::Atomic => &skel.progs.icmpguard_xdp_atomic,
                XdpVariant::Compat => &skel.progs.icmpguard_xdp_compat,
            }),
            Progs::Tcx => Some(&skel.progs.icmpguard_tcx),
        };
        let prog = prog
            .map(|p| p.as_fd().try_clone_to_owned())
            .transpose()
            .map_err(|e| LoadError::Failed(Error::kernel_io("duplicating a program", e, "")))?;
        Ok(Object { maps, prog })
    }

    /// Entries of the two tries under `layout`: the prefixes the tables
    /// do not hold.
    fn trie_counts(&self, layout: &Layout) -> PerFamily<u32> {
        let mut counts = PerFamily::default();
        for (p, _) in self.rules.iter().filter(|(p, _)| !layout.in_table(p)) {
            counts[p.family()] += 1;
        }
        counts
    }

    /// The layout that takes `plan`'s new prefix lengths: a free table
    /// slot for a length longer than every length in the trie (the tables
    /// are probed, longest first, before the trie: so the most specific
    /// rule matches), the trie for a length shorter than every table
    /// length. Err: a length that fits neither way, which takes a rebuild.
    fn layout_for(&self, plan: &Plan) -> std::result::Result<Layout, String> {
        let mut layout = self.layout;
        for family in Family::ALL {
            let lens = &mut layout.lens[family];
            let elsewhere = |p: &&Prefix| {
                p.family() == family && p.prefix_len() != family.exact_len() && !lens.contains(&p.prefix_len())
            };
            let mut new: Vec<u8> = plan.added().filter(elsewhere).map(Prefix::prefix_len).collect();
            if new.is_empty() {
                // No new length: nothing to place (and no walk of every rule).
                continue;
            }
            new.sort_unstable_by(|a, b| b.cmp(a));
            new.dedup();
            let mut trie_max = self.rules.iter().map(|(p, _)| p).filter(elsewhere).map(Prefix::prefix_len).max();
            for len in new {
                let used: Vec<u8> = lens.iter().copied().filter(|l| *l != NO_LEN).collect();
                let longer_than_trie = trie_max.is_none_or(|t| len > t);
                // Slots keep their lengths in decreasing order, holes allowed.
                let slot = (0..TABLE_LENS).find(|&k| {
                    lens[k] == NO_LEN
                        && lens[..k].iter().all(|l| *l == NO_LEN || *l > len)
                        && lens[k + 1..].iter().all(|l| *l == NO_LEN || *l < len)
                });
                match slot {
                    Some(k) if longer_than_trie => lens[k] = len,
                    _ if used.iter().all(|l| *l > len) => trie_max = Some(trie_max.map_or(len, |t| t.max(len))),
                    _ => {
                        return Err(format!(
                            "a new {} prefix length /{len} fits neither the table (which holds {}) nor the trie",
                            family.name(),
                            used.iter().map(|l| format!("/{l}")).collect::<Vec<_>>().join(" and ")
                        ));
                    }
                }
            }
        }
        Ok(layout)
    }

    /// Whether deletions left so many tombstones in a table that lookups
    /// slow down: a rebuild clears them.
    pub fn wants_rebuild(&self) -> bool {
        Family::ALL.iter().any(|f| self.tombstones[*f] > self.layout.shape[*f].slots() / 4)
    }

    /// Why this generation cannot take `plan` (its additions go in before
    /// its deletions, so for a while the maps hold both), or why it should
    /// be rebuilt anyway (deletions left too many tombstones for fast
    /// lookups); `None` when it can.
    pub fn cannot_take(&self, plan: &Plan) -> Option<String> {
        let peak = self.rules.len() + plan.add.len();
        if peak > self.capacity as usize {
            return Some(format!("the change needs room for {peak} rules at once, capacity is {}", self.capacity));
        }
        let layout = match self.layout_for(plan) {
            Ok(l) => l,
            Err(why) => return Some(why),
        };
        let in_table = |family: Family, list: &mut dyn Iterator<Item = &Prefix>| {
            list.filter(|p| p.family() == family && layout.in_table(p)).count()
        };
        for family in Family::ALL {
            let (shape, tombs) = (layout.shape[family], self.tombstones[family]);
            let now = if layout == self.layout {
                // The same layout: what is not in the trie is in the table.
                self.rules.family_len(family).saturating_sub(self.prefix_counts[family] as usize)
            } else {
                in_table(family, &mut self.rules.iter().map(|(p, _)| p))
            };
            let peak = now + in_table(family, &mut plan.added());
            if peak > shape.slots() / 2 {
                return Some(format!(
                    "the {} table of {} slots is too small for {peak} entries",
                    family.name(),
                    shape.slots()
                ));
            }
            if tombs > shape.slots() / 4 {
                return Some(format!("deletions left {tombs} tombstones in the {} table", family.name()));
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
        // New prefix lengths take free table slots; the slots are listed in
        // the settings only once their entries are in (until then nothing
        // probes them), so no rule is ever probed where it is not.
        let Ok(layout) = self.layout_for(plan) else {
            return Ok(Outcome::Rebuild);
        };
        let mut added: Vec<(Prefix, Rule)> = Vec::with_capacity(plan.add.len());
        for e in &plan.add {
            if self.rules.get(&e.prefix).is_some() {
                continue;
            }
            let Some(id) = self.ids.take(self.capacity) else {
                for (_, r) in added {
                    self.ids.give_back(r.id());
                }
                return Err(Error::Internal {
                    what: format!("no rule id left in a generation of {}", self.capacity),
                    hint: "restart the daemon to migrate to larger maps".into(),
                });
            };
            added.push((e.prefix, Rule::new(id, e.allow)));
        }
        added.sort_unstable_by_key(|(p, _)| *p);
        // A block entry's drop counter starts at zero (an allow entry has
        // none); so does one that an allow entry turns back into a block.
        let flipped: Vec<(Prefix, Rule)> = plan
            .flip
            .iter()
            .filter_map(|e| self.rules.get(&e.prefix).map(|r| (e.prefix, Rule::new(r.id(), e.allow))))
            .collect();
        if !self.fresh {
            let ids: Vec<u32> = added.iter().chain(&flipped).filter(|(_, r)| !r.allow()).map(|(_, r)| r.id()).collect();
            self.maps.zero_drops(&ids)?;
        }
        let outcome = match self.maps.write_rules(&added, &layout)? {
            Ok(()) => Outcome::Applied,
            Err(_) => Outcome::Rebuild,
        };
        // Entries that change sides are rewritten in place: one store of
        // the slot's tag, or a trie update, each atomic.
        if self.maps.write_rules(&flipped, &layout)?.is_err() {
            return Err(Error::Internal {
                what: "an entry that is in its table was not found there again".into(),
                hint: "report this bug; `icmpguard unload` and a restart rebuild the maps".into(),
            });
        }
        self.rules.flip(&plan.flip);
        let mut counts = self.prefix_counts;
        for (p, _) in added.iter().filter(|(p, _)| !layout.in_table(p)) {
            counts[p.family()] += 1;
        }
        self.layout = layout;
        self.set_trie_counts(counts)?;

        let removed: Vec<(Prefix, u32)> =
            plan.remove.iter().filter_map(|p| self.rules.get(p).map(|r| (*p, r.id()))).collect();
        let removed_prefixes: Vec<Prefix> = removed.iter().map(|(p, _)| *p).collect();
        self.maps.delete_rules(&removed_prefixes, &self.layout)?;
        for p in removed_prefixes.iter().filter(|p| self.layout.in_table(p)) {
            self.tombstones[p.family()] += 1;
        }
        let mut counts = self.prefix_counts;
        for p in removed_prefixes.iter().filter(|p| !self.layout.in_table(p)) {
            counts[p.family()] = counts[p.family()].saturating_sub(1);
        }
        self.rules.merge(added, &removed_prefixes);
        for (_, id) in &removed {
            self.ids.give_back(*id);
        }
        // Table lengths left without entries free their slots, after the
        // entries are gone: only a length that lost entries can have.
        let mut lost: Vec<(Family, u8)> = removed_prefixes.iter().map(|p| (p.family(), p.prefix_len())).collect();
        lost.sort_unstable();
        lost.dedup();
        for family in Family::ALL {
            let rules = &self.rules;
            for len in self.layout.lens[family].iter_mut().filter(|l| **l != NO_LEN && **l != family.exact_len()) {
                if lost.contains(&(family, *len))
                    && !rules.iter().any(|(p, _)| p.family() == family && p.prefix_len() == *len)
                {
                    *len = NO_LEN;
                }
            }
        }
        // A freed length held nothing: the tries' counts are unchanged by it.
        debug_assert_eq!(counts, self.trie_counts(&self.layout));
        self.set_trie_counts(counts)?;
        self.fresh = false;
        Ok(outcome)
    }

    /// Sources the rate limiter tracks (`[limit] sources`, rounded up to
    /// whole sets).
    pub fn sources(&self) -> u32 {
        self.maps.limits.max_entries().saturating_mul(LIMIT_WAYS)
    }

    /// Tells the programs how many prefixes each trie holds (so that they
    /// skip an empty trie) and the current layout (which may have changed
    /// even when the counts did not).
    fn set_trie_counts(&mut self, counts: PerFamily<u32>) -> Result<()> {
        self.prefix_counts = counts;
        match self.settings {
            Some(s) => self.write_settings(s),
            None => {
                // Adopted maps, settings not given yet: keep the running policy.
                let mut cur = self.maps.read_settings().unwrap_or_default();
                self.layout_into(&mut cur);
                self.maps.write_settings(&cur)
            }
        }
    }

    /// Copies the prefix counts, the layout and the number of allow
    /// entries into a settings value.
    fn layout_into(&self, v: &mut types::ig_settings) {
        v.allows = self.rules.allows() as u32;
        v.limit_sets = self.maps.limits.max_entries();
        let l = &self.layout;
        // The ABI's per-family fields (bpf/icmpguard.h), from the layout.
        (v.v4_prefixes, v.v6_prefixes) = (self.prefix_counts.v4, self.prefix_counts.v6);
        (v.v4_bits, v.v4_seed) = (l.shape.v4.bits, l.shape.v4.seed);
        (v.v6_bits, v.v6_seed) = (l.shape.v6.bits, l.shape.v6.seed);
        v.v4_lens = l.lens.v4.map(u32::from);
        v.v6_lens = l.lens.v6.map(u32::from);
    }

    /// Writes policy, logging and the prefix counts to the settings map.
    pub fn set_settings(&mut self, s: Settings) -> Result<()> {
        self.settings = Some(s);
        self.write_settings(s)
    }

    fn write_settings(&self, s: Settings) -> Result<()> {
        let types = s.policy.types();
        let (interval, tolerance) = limit_times(s.limit);
        let mut v = types::ig_settings {
            v4_types: types.0.v4,
            v6_types: types.0.v6,
            dry_run: u32::from(s.dry_run),
            limit_interval_ns: interval,
            limit_tolerance_ns: tolerance,
            allows: self.rules.allows() as u32,
            log: match s.log {
                LogMode::None => types::ig_log::IG_LOG_NONE.0,
                LogMode::Blocked => types::ig_log::IG_LOG_BLOCKED.0,
                LogMode::All => types::ig_log::IG_LOG_ALL.0,
            },
            // Each CPU may queue what the daemon forwards in a second; what
            // is over that is only counted, and reported as suppressed.
            event_budget: s.rate_limit,
            wakeup_bytes: self.maps.events.max_entries() / WAKEUP_FRACTION,
            ..Default::default()
        };
        self.layout_into(&mut v);
        self.maps.write_settings(&v)
    }

    /// Copies per-rule drop counters and the global counters from `old` for
    /// rules both generations hold (used when migrating).
    pub fn carry_counters_from(&mut self, old: &Maps) -> Result<()> {
        let old_rules = Rules::from_unsorted(
            old.read_rules(self.layout.shape.v4.len_bits).into_iter().map(|(p, k)| (p, rule_of(k))).collect(),
        );
        let size = self.maps.rule_drops.value_size() as usize;
        let mut values = Vec::new();
        for (p, new) in self.rules.iter().filter(|(_, r)| !r.allow()) {
            let Some(old) = old_rules.get(p).filter(|r| !r.allow()).and_then(|r| old.raw_drops(r.id())) else {
                continue;
            };
            if old.iter().all(|b| *b == 0) {
                continue;
            }
            if old.len() == size {
                values.push((new.id(), old));
            } else {
                // Another number of slots (the new maps are bigger, or of
                // another machine): the sum goes into the first.
                let sum: u64 = old.chunks_exact(8).filter_map(sys::from_bytes::<u64>).sum();
                let mut v = vec![0u8; size];
                if let Some(first) = v.get_mut(..8) {
                    first.copy_from_slice(&sum.to_ne_bytes());
                    values.push((new.id(), v));
                }
            }
        }
        self.maps.write_drops(&values)?;
        for dir in 0..2u32 {
            if let Ok(Some(per_cpu)) = old.counters.lookup_percpu(sys::bytes_of(&dir), libbpf_rs::MapFlags::ANY) {
                let _ = self.maps.counters.update_percpu(sys::bytes_of(&dir), &per_cpu, libbpf_rs::MapFlags::ANY);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jiffy_is_the_tick_of_some_hz() {
        // Debian builds with HZ=250, others with 100, 300 or 1000: TICK_NSEC
        // is (10^9 + HZ/2) / HZ.
        let ns = ns_per_jiffy();
        assert!(
            [100u32, 250, 300, 1000].iter().any(|hz| (1_000_000_000 + hz / 2) / hz == ns),
            "{ns} ns a jiffy is no HZ's tick"
        );
    }
}
