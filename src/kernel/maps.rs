//! One generation of the filter: the programs and the maps they use, and
//! typed access to those maps.
//!
//! A generation is loaded from the embedded object, either with fresh maps
//! of a given capacity or reusing pinned maps (adoption). Programs and maps
//! are held as plain file descriptors, so a generation owns no libbpf
//! object and has no lifetime to thread through the daemon.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, PrintLevel};

use crate::addr::Prefix;
use crate::config::{IcmpPolicy, LogMode};
use crate::error::{Error, Result};
use crate::kernel::sys::{self, bytes_of, from_bytes, Plain, TestRun};
use crate::reconcile::Plan;
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

/// The maps of one generation, by name as in bpf/icmpguard.bpf.c.
pub struct Maps {
    pub v4_exact: MapHandle,
    pub v6_exact: MapHandle,
    pub v4_lpm: MapHandle,
    pub v6_lpm: MapHandle,
    pub rule_drops: MapHandle,
    pub settings: MapHandle,
    pub counters: MapHandle,
    pub budget: MapHandle,
    pub meta: MapHandle,
    pub events: MapHandle,
}

/// Names of the maps, also their pin names.
pub const MAP_NAMES: [&str; 10] =
    ["v4_exact", "v6_exact", "v4_lpm", "v6_lpm", "rule_drops", "settings", "counters", "budget", "meta", "events"];

impl Maps {
    fn all(&self) -> [&MapHandle; 10] {
        [
            &self.v4_exact,
            &self.v6_exact,
            &self.v4_lpm,
            &self.v6_lpm,
            &self.rule_drops,
            &self.settings,
            &self.counters,
            &self.budget,
            &self.meta,
            &self.events,
        ]
    }

    /// Opens every map pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Maps> {
        let open = |name: &str| {
            let path = dir.join(name);
            MapHandle::from_pinned_path(&path).map_err(|e| {
                Error::kernel(
                    format!("opening pinned map {}", path.display()),
                    &e,
                    "run `icmpguard unload` to remove a damaged pin directory",
                )
            })
        };
        Ok(Maps {
            v4_exact: open("v4_exact")?,
            v6_exact: open("v6_exact")?,
            v4_lpm: open("v4_lpm")?,
            v6_lpm: open("v6_lpm")?,
            rule_drops: open("rule_drops")?,
            settings: open("settings")?,
            counters: open("counters")?,
            budget: open("budget")?,
            meta: open("meta")?,
            events: open("events")?,
        })
    }

    /// Pins every map in `dir`, which must exist.
    pub fn pin(&self, dir: &Path) -> Result<()> {
        for (name, map) in MAP_NAMES.iter().zip(self.all()) {
            let path = dir.join(name);
            sys::obj_pin(map.as_fd(), &path)
                .map_err(|e| Error::kernel_io(format!("pinning map at {}", path.display()), &e, ""))?;
        }
        Ok(())
    }

    pub fn read_meta(&self) -> Option<types::ig_meta> {
        read_one(&self.meta)
    }

    pub fn write_meta(&self, meta: &types::ig_meta) -> Result<()> {
        write_one(&self.meta, meta, "meta")
    }

    pub fn read_settings(&self) -> Option<types::ig_settings> {
        read_one(&self.settings)
    }

    /// Counters summed over CPUs.
    pub fn read_counters(&self) -> types::ig_counters {
        let mut sum = types::ig_counters::default();
        for c in read_percpu::<types::ig_counters>(&self.counters, 0) {
            sum.icmp_seen += c.icmp_seen;
            sum.dropped += c.dropped;
            sum.events_queued += c.events_queued;
            sum.events_lost += c.events_lost;
            sum.events_suppressed += c.events_suppressed;
        }
        sum
    }

    /// Drops counted for rule `id`, summed over CPUs.
    pub fn read_drops(&self, id: u32) -> u64 {
        read_percpu::<u64>(&self.rule_drops, id).iter().sum()
    }

    /// Every rule in the maps, with its id. Entries that do not decode (a
    /// foreign writer) are skipped.
    pub fn read_rules(&self) -> HashMap<Prefix, u32> {
        let mut out = HashMap::new();
        let mut each = |map: &MapHandle, decode: &dyn Fn(&[u8]) -> Option<Prefix>| {
            for key in map.keys() {
                let Some(prefix) = decode(&key) else { continue };
                if let Ok(Some(v)) = map.lookup(&key, MapFlags::ANY) {
                    if let Some(rule) = from_bytes::<types::ig_rule>(&v) {
                        out.insert(prefix, rule.id);
                    }
                }
            }
        };
        each(&self.v4_exact, &|k| {
            let a: [u8; 4] = k.try_into().ok()?;
            Some(Prefix::V4 { addr: Ipv4Addr::from(a), len: 32 })
        });
        each(&self.v6_exact, &|k| {
            let a: [u8; 16] = k.try_into().ok()?;
            Some(Prefix::V6 { addr: Ipv6Addr::from(a), len: 128 })
        });
        each(&self.v4_lpm, &|k| {
            let key = from_bytes::<types::ig_v4_lpm_key>(k)?;
            let addr = IpAddr::V4(Ipv4Addr::from(key.addr.to_ne_bytes()));
            Some(Prefix::containing(addr, u8::try_from(key.prefixlen).ok()?))
        });
        each(&self.v6_lpm, &|k| {
            let key = from_bytes::<types::ig_v6_lpm_key>(k)?;
            Some(Prefix::V6 { addr: Ipv6Addr::from(key.addr), len: u8::try_from(key.prefixlen).ok()? })
        });
        out
    }
}

fn read_one<T: Plain>(map: &MapHandle) -> Option<T> {
    let v = map.lookup(bytes_of(&0u32), MapFlags::ANY).ok()??;
    from_bytes(&v)
}

fn write_one<T: Plain>(map: &MapHandle, value: &T, name: &str) -> Result<()> {
    map.update(bytes_of(&0u32), bytes_of(value), MapFlags::ANY)
        .map_err(|e| Error::kernel(format!("writing the {name} map"), &e, ""))
}

fn read_percpu<T: Plain>(map: &MapHandle, key: u32) -> Vec<T> {
    match map.lookup_percpu(bytes_of(&key), MapFlags::ANY) {
        Ok(Some(per_cpu)) => per_cpu.iter().filter_map(|b| from_bytes(b)).collect(),
        _ => Vec::new(),
    }
}

/// Which of the four rule maps holds a prefix.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RuleMap {
    V4Exact,
    V6Exact,
    V4Lpm,
    V6Lpm,
}

impl RuleMap {
    fn of(p: &Prefix) -> RuleMap {
        match (p.is_v4(), p.is_exact()) {
            (true, true) => RuleMap::V4Exact,
            (false, true) => RuleMap::V6Exact,
            (true, false) => RuleMap::V4Lpm,
            (false, false) => RuleMap::V6Lpm,
        }
    }

    fn handle(self, maps: &Maps) -> &MapHandle {
        match self {
            RuleMap::V4Exact => &maps.v4_exact,
            RuleMap::V6Exact => &maps.v6_exact,
            RuleMap::V4Lpm => &maps.v4_lpm,
            RuleMap::V6Lpm => &maps.v6_lpm,
        }
    }

    const ALL: [RuleMap; 4] = [RuleMap::V4Exact, RuleMap::V6Exact, RuleMap::V4Lpm, RuleMap::V6Lpm];
}

/// Appends the map key of `p` (as bpf/icmpguard.h defines it) to `out`.
fn push_key(p: &Prefix, out: &mut Vec<u8>) {
    match *p {
        Prefix::V4 { addr, len: 32 } => out.extend_from_slice(&addr.octets()),
        Prefix::V6 { addr, len: 128 } => out.extend_from_slice(bytes_of(&types::ig_v6_addr { addr: addr.octets() })),
        Prefix::V4 { addr, len } => out.extend_from_slice(bytes_of(&types::ig_v4_lpm_key {
            prefixlen: u32::from(len),
            addr: u32::from_ne_bytes(addr.octets()),
        })),
        Prefix::V6 { addr, len } => {
            out.extend_from_slice(bytes_of(&types::ig_v6_lpm_key { prefixlen: u32::from(len), addr: addr.octets() }))
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
            if it.peek() == Some(&&id) {
                it.next();
            } else {
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
    /// Mirror of the rule maps: prefix -> rule id.
    rules: HashMap<Prefix, u32>,
    ids: Ids,
    /// Maps created by this load, never written: all counters are zero.
    fresh: bool,
    settings: Option<Settings>,
    prefix_counts: (u32, u32),
}

static LIBBPF_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// libbpf's own messages are kept (not printed) so that a failed load can
/// quote the verifier's last lines.
fn keep_libbpf_message(level: PrintLevel, msg: String) {
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

impl Generation {
    /// Loads the programs with new, empty maps of `capacity` rules.
    pub fn create(capacity: u32) -> Result<Generation> {
        let mut g = Generation::load(capacity, None).map_err(|(e, _)| e)?;
        g.fresh = true;
        Ok(g)
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
        let capacity = maps.rule_drops.max_entries();
        match Generation::load(capacity, Some(maps)) {
            Ok(mut g) => {
                g.rules = g.maps.read_rules();
                g.ids = Ids::from_used(g.rules.values().copied());
                g.settings = None;
                g.prefix_counts = (u32::MAX, u32::MAX);
                Ok(Reuse::Adopted(Box::new(g)))
            }
            Err((e, true)) => Ok(Reuse::Incompatible(match e {
                Error::Kernel { what, .. } => what,
                other => other.to_string(),
            })),
            Err((e, false)) => Err(e),
        }
    }

    /// Opens the embedded object, sizes or reuses the maps and loads it.
    /// On failure, also says whether reusing the given maps was the cause.
    fn load(capacity: u32, reuse: Option<&Maps>) -> std::result::Result<Generation, (Error, bool)> {
        libbpf_rs::set_print(Some((PrintLevel::Info, keep_libbpf_message)));
        let fail = |what: &str, e: libbpf_rs::Error| {
            let log = take_libbpf_log();
            let hint = if log.is_empty() {
                "icmpguard needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel with BTF, XDP and tcx (6.6 or later)"
                    .to_string()
            } else {
                format!("libbpf said:\n{log}")
            };
            Error::kernel(what, &e, hint)
        };
        let mut storage = MaybeUninit::uninit();
        let mut open = IcmpguardSkelBuilder::default()
            .open(&mut storage)
            .map_err(|e| (fail("opening the embedded BPF object", e), false))?;
        {
            let m = &mut open.maps;
            for map in [&mut m.v4_exact, &mut m.v6_exact, &mut m.v4_lpm, &mut m.v6_lpm, &mut m.rule_drops] {
                map.set_max_entries(capacity).map_err(|e| (fail("sizing the rule maps", e), false))?;
            }
        }
        if let Some(old) = reuse {
            let m = &mut open.maps;
            let pairs = [
                (&mut m.v4_exact, &old.v4_exact),
                (&mut m.v6_exact, &old.v6_exact),
                (&mut m.v4_lpm, &old.v4_lpm),
                (&mut m.v6_lpm, &old.v6_lpm),
                (&mut m.rule_drops, &old.rule_drops),
                (&mut m.settings, &old.settings),
                (&mut m.counters, &old.counters),
                (&mut m.budget, &old.budget),
                (&mut m.meta, &old.meta),
                (&mut m.events, &old.events),
            ];
            for (i, (new, old)) in pairs.into_iter().enumerate() {
                // libbpf's reuse_fd takes the pinned map's definition as it
                // is: a definition that changed must be caught here.
                let capacity_sized = i < 5;
                if let Some(why) = incompatibility(MAP_NAMES[i], new, old, capacity_sized) {
                    return Err((Error::Kernel { what: why, errno: None, hint: String::new() }, true));
                }
                new.reuse_fd(old.as_fd()).map_err(|e| (fail("reusing a pinned map", e), true))?;
            }
        }
        let skel = open.load().map_err(|e| {
            // libbpf refuses an incompatible pinned map with EINVAL before
            // anything is loaded; anything else is the verifier or rights.
            let incompatible = reuse.is_some() && e.kind() == libbpf_rs::ErrorKind::InvalidInput;
            (fail("loading the BPF programs", e), incompatible)
        })?;

        let handle = |map: &libbpf_rs::Map<'_>| {
            MapHandle::try_from(map).map_err(|e| (fail("duplicating a map descriptor", e), false))
        };
        let m = &skel.maps;
        let maps = Maps {
            v4_exact: handle(&m.v4_exact)?,
            v6_exact: handle(&m.v6_exact)?,
            v4_lpm: handle(&m.v4_lpm)?,
            v6_lpm: handle(&m.v6_lpm)?,
            rule_drops: handle(&m.rule_drops)?,
            settings: handle(&m.settings)?,
            counters: handle(&m.counters)?,
            budget: handle(&m.budget)?,
            meta: handle(&m.meta)?,
            events: handle(&m.events)?,
        };
        let dup = |p: &libbpf_rs::Program<'_>| {
            p.as_fd()
                .try_clone_to_owned()
                .map_err(|e| (Error::kernel_io("duplicating a program descriptor", &e, ""), false))
        };
        let xdp = dup(&skel.progs.icmpguard_xdp)?;
        let tcx = dup(&skel.progs.icmpguard_tcx)?;
        let id = |fd: &OwnedFd| {
            sys::prog_id(fd.as_fd()).map_err(|e| (Error::kernel_io("reading a program id", &e, ""), false))
        };
        let (xdp_id, tcx_id) = (id(&xdp)?, id(&tcx)?);
        Ok(Generation {
            maps,
            xdp,
            tcx,
            xdp_id,
            tcx_id,
            capacity,
            rules: HashMap::new(),
            ids: Ids::default(),
            fresh: false,
            settings: None,
            prefix_counts: (0, 0),
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn xdp_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.xdp.as_fd()
    }

    pub fn tcx_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.tcx.as_fd()
    }

    /// The rules in the maps, with their ids.
    pub fn rules(&self) -> &HashMap<Prefix, u32> {
        &self.rules
    }

    /// Applies a plan: additions first, then deletions, so that nothing
    /// that stays blocked is ever unblocked in between. The plan's additions
    /// must fit in the capacity (the caller migrates first otherwise).
    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        // Deletions free ids only after the additions are in, so additions
        // need their own ids: take them before anything is written.
        let mut added: Vec<(Prefix, u32)> = Vec::with_capacity(plan.add.len());
        for p in &plan.add {
            if self.rules.contains_key(p) {
                continue;
            }
            match self.ids.take(self.capacity) {
                Some(id) => added.push((*p, id)),
                None => {
                    for (_, id) in added {
                        self.ids.give_back(id);
                    }
                    return Err(Error::Kernel {
                        what: format!("no rule id left in a generation of {}", self.capacity),
                        errno: None,
                        hint: "restart the daemon to migrate to larger maps".into(),
                    });
                }
            }
        }
        if !self.fresh {
            self.zero_drops(added.iter().map(|(_, id)| *id))?;
        }
        self.write_rules(&added)?;
        for (p, id) in &added {
            self.rules.insert(*p, *id);
        }
        self.update_prefix_counts()?;

        let removed: Vec<(Prefix, u32)> =
            plan.remove.iter().filter_map(|p| self.rules.get(p).map(|id| (*p, *id))).collect();
        self.delete_rules(&removed)?;
        for (p, id) in &removed {
            self.rules.remove(p);
            self.ids.give_back(*id);
        }
        self.update_prefix_counts()?;
        self.fresh = false;
        Ok(())
    }

    fn zero_drops(&self, ids: impl Iterator<Item = u32>) -> Result<()> {
        let cpus = libbpf_rs::num_possible_cpus().map_err(|e| Error::kernel("counting possible CPUs", &e, ""))?;
        let zeros = vec![vec![0u8; 8]; cpus];
        for id in ids {
            self.maps
                .rule_drops
                .update_percpu(bytes_of(&id), &zeros, MapFlags::ANY)
                .map_err(|e| Error::kernel("resetting a rule's drop counter", &e, ""))?;
        }
        Ok(())
    }

    fn write_rules(&self, rules: &[(Prefix, u32)]) -> Result<()> {
        for kind in RuleMap::ALL {
            let mut keys = Vec::new();
            let mut values = Vec::new();
            let mut n = 0u32;
            for (p, id) in rules.iter().filter(|(p, _)| RuleMap::of(p) == kind) {
                push_key(p, &mut keys);
                values.extend_from_slice(bytes_of(&types::ig_rule { id: *id, prefixlen: u32::from(p.prefix_len()) }));
                n += 1;
            }
            if n == 0 {
                continue;
            }
            let map = kind.handle(&self.maps);
            let failed = |e: libbpf_rs::Error| {
                Error::kernel(format!("adding {n} rules to {}", map.name().to_string_lossy()), &e, "")
            };
            if map.map_type() == MapType::Hash {
                for (k, v) in chunks(&keys, &values, map) {
                    map.update_batch(k.0, v, k.1, MapFlags::ANY, MapFlags::ANY).map_err(failed)?;
                }
            } else {
                let ks = map.key_size() as usize;
                let vs = map.value_size() as usize;
                for (k, v) in keys.chunks_exact(ks).zip(values.chunks_exact(vs)) {
                    map.update(k, v, MapFlags::ANY).map_err(failed)?;
                }
            }
        }
        Ok(())
    }

    fn delete_rules(&self, rules: &[(Prefix, u32)]) -> Result<()> {
        for kind in RuleMap::ALL {
            let mut keys = Vec::new();
            let mut n = 0u32;
            for (p, _) in rules.iter().filter(|(p, _)| RuleMap::of(p) == kind) {
                push_key(p, &mut keys);
                n += 1;
            }
            if n == 0 {
                continue;
            }
            let map = kind.handle(&self.maps);
            let failed = |e: libbpf_rs::Error| {
                Error::kernel(format!("removing {n} rules from {}", map.name().to_string_lossy()), &e, "")
            };
            let ks = map.key_size() as usize;
            if map.map_type() == MapType::Hash {
                for k in keys.chunks(ks * BATCH) {
                    map.delete_batch(k, (k.len() / ks) as u32, MapFlags::ANY, MapFlags::ANY).map_err(failed)?;
                }
            } else {
                for k in keys.chunks_exact(ks) {
                    match map.delete(k) {
                        Ok(()) => {}
                        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                        Err(e) => return Err(failed(e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Tells the programs how many prefixes each trie holds, so that they
    /// skip the trie lookup when it is empty.
    fn update_prefix_counts(&mut self) -> Result<()> {
        let counts = self.rules.keys().fold((0u32, 0u32), |(v4, v6), p| match RuleMap::of(p) {
            RuleMap::V4Lpm => (v4 + 1, v6),
            RuleMap::V6Lpm => (v4, v6 + 1),
            _ => (v4, v6),
        });
        if counts != self.prefix_counts {
            self.prefix_counts = counts;
            if let Some(s) = self.settings {
                self.write_settings(s)?;
            } else {
                // Adopted maps: keep the policy the running filter has.
                let mut cur = self.maps.read_settings().unwrap_or_default();
                cur.v4_prefixes = counts.0;
                cur.v6_prefixes = counts.1;
                write_one(&self.maps.settings, &cur, "settings")?;
            }
        }
        Ok(())
    }

    /// Writes policy, logging and the prefix counts to the settings map.
    pub fn set_settings(&mut self, s: Settings) -> Result<()> {
        self.settings = Some(s);
        self.write_settings(s)
    }

    fn write_settings(&self, s: Settings) -> Result<()> {
        let value = types::ig_settings {
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
        };
        write_one(&self.maps.settings, &value, "settings")
    }

    /// Copies per-rule drop counters and the global counters from `old` for
    /// rules both generations hold (used when migrating).
    pub fn carry_counters_from(&mut self, old: &Maps) -> Result<()> {
        let old_rules = old.read_rules();
        let cpus = libbpf_rs::num_possible_cpus().map_err(|e| Error::kernel("counting possible CPUs", &e, ""))?;
        for (p, new_id) in &self.rules {
            let Some(old_id) = old_rules.get(p) else {
                continue;
            };
            let per_cpu = read_percpu::<u64>(&old.rule_drops, *old_id);
            if per_cpu.iter().all(|&n| n == 0) || per_cpu.len() != cpus {
                continue;
            }
            let values: Vec<Vec<u8>> = per_cpu.iter().map(|n| bytes_of(n).to_vec()).collect();
            self.maps
                .rule_drops
                .update_percpu(bytes_of(new_id), &values, MapFlags::ANY)
                .map_err(|e| Error::kernel("copying a drop counter", &e, ""))?;
        }
        if let Ok(Some(per_cpu)) = old.counters.lookup_percpu(bytes_of(&0u32), MapFlags::ANY) {
            if per_cpu.len() == cpus {
                self.maps
                    .counters
                    .update_percpu(bytes_of(&0u32), &per_cpu, MapFlags::ANY)
                    .map_err(|e| Error::kernel("copying the counters", &e, ""))?;
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

/// Rules per batch system call.
const BATCH: usize = 65536;

/// Splits keys and values into batches of at most BATCH entries.
fn chunks<'a>(keys: &'a [u8], values: &'a [u8], map: &MapHandle) -> impl Iterator<Item = ((&'a [u8], u32), &'a [u8])> {
    let ks = map.key_size() as usize;
    let vs = map.value_size() as usize;
    keys.chunks(ks * BATCH).zip(values.chunks(vs * BATCH)).map(move |(k, v)| ((k, (k.len() / ks) as u32), v))
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
    fn keys_follow_the_abi() {
        let mut k = Vec::new();
        push_key(&"192.0.2.10".parse().unwrap(), &mut k);
        assert_eq!(k, [192, 0, 2, 10]);
        k.clear();
        push_key(&"198.51.100.0/24".parse().unwrap(), &mut k);
        assert_eq!(k, [24, 0, 0, 0, 198, 51, 100, 0]);
    }
}
