//! The maps of one generation, and typed access to them: the encoding of
//! rules as map keys (bpf/icmpguard.h), batched writes and reads.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::addr::Prefix;
use crate::error::{Error, Result};
use crate::kernel::sys::{self, bytes_of, from_bytes, Mapping, Plain};
use crate::kernel::v4table::{self, Overflow, Shape, Table};
use crate::skel::types;

/// Rules per batch system call.
const BATCH: usize = 65536;

/// The maps of one generation, by name as in bpf/icmpguard.bpf.c.
pub struct Maps {
    /// The IPv4 exact-address table, an mmapable array (see v4table.rs).
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

/// Names of the maps, also their pin names. The first five are sized by
/// the generation's capacity.
pub const MAP_NAMES: [&str; 10] =
    ["v4_exact", "v6_exact", "v4_lpm", "v6_lpm", "rule_drops", "settings", "counters", "budget", "meta", "events"];

impl Maps {
    /// Assembles the maps of a generation.
    pub fn new(handles: [MapHandle; 10]) -> Result<Maps> {
        let [v4_exact, v6_exact, v4_lpm, v6_lpm, rule_drops, settings, counters, budget, meta, events] = handles;
        Ok(Maps { v4_exact, v6_exact, v4_lpm, v6_lpm, rule_drops, settings, counters, budget, meta, events })
    }

    /// Maps the IPv4 table for as long as it is used: mapped for good, its
    /// pages would count in the daemon's memory between reloads.
    fn v4_slots(&self) -> Result<Mapping> {
        Mapping::map(self.v4_exact.as_fd(), self.v4_exact.max_entries() as usize)
            .map_err(|e| Error::kernel_io("mapping the IPv4 table", &e, "run as root"))
    }

    pub fn all(&self) -> [&MapHandle; 10] {
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
        Maps::new([
            open("v4_exact")?,
            open("v6_exact")?,
            open("v4_lpm")?,
            open("v6_lpm")?,
            open("rule_drops")?,
            open("settings")?,
            open("counters")?,
            open("budget")?,
            open("meta")?,
            open("events")?,
        ])
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

    pub fn write_settings(&self, s: &types::ig_settings) -> Result<()> {
        write_one(&self.settings, s, "settings")
    }

    /// Counters summed over CPUs.
    pub fn read_counters(&self) -> types::ig_counters {
        let mut sum = types::ig_counters::default();
        if let Ok(Some(per_cpu)) = self.counters.lookup_percpu(bytes_of(&0u32), MapFlags::ANY) {
            for c in per_cpu.iter().filter_map(|b| from_bytes::<types::ig_counters>(b)) {
                sum.icmp_seen += c.icmp_seen;
                sum.dropped += c.dropped;
                sum.events_queued += c.events_queued;
                sum.events_lost += c.events_lost;
                sum.events_suppressed += c.events_suppressed;
            }
        }
        sum
    }

    /// Starts a new second of the in-kernel event budget on every CPU.
    pub fn reset_event_budget(&self) -> Result<()> {
        let cpus = libbpf_rs::num_possible_cpus().map_err(|e| Error::kernel("counting possible CPUs", &e, ""))?;
        let zeros = vec![vec![0u8; std::mem::size_of::<types::ig_budget>()]; cpus];
        self.budget
            .update_percpu(bytes_of(&0u32), &zeros, MapFlags::ANY)
            .map_err(|e| Error::kernel("resetting the event budget", &e, ""))
    }

    /// Drops counted for rule `id`, summed over CPUs.
    pub fn read_drops(&self, id: u32) -> u64 {
        self.raw_drops(id).map_or(0, |v| v.chunks_exact(8).filter_map(from_bytes::<u64>).sum())
    }

    /// Drops of every rule id below `below`, summed over CPUs, indexed by
    /// id (one batched read).
    pub fn read_all_drops(&self, below: u32) -> Vec<u64> {
        let mut out = vec![0u64; below as usize];
        if below == 0 {
            return out;
        }
        let Ok(batches) = self.rule_drops.lookup_batch(BATCH as u32, MapFlags::ANY, MapFlags::ANY) else {
            return out;
        };
        for (k, v) in batches {
            let Some(id) = from_bytes::<u32>(&k) else { continue };
            if let Some(slot) = out.get_mut(id as usize) {
                *slot = v.chunks_exact(8).filter_map(from_bytes::<u64>).sum();
            }
        }
        out
    }

    /// Sets the drop counters of `ids` to zero (ids about to be reused).
    pub fn zero_drops(&self, ids: &[u32]) -> Result<()> {
        let value_size = self.rule_drops.value_size() as usize;
        for chunk in ids.chunks(BATCH) {
            let keys: Vec<u8> = chunk.iter().flat_map(|id| id.to_ne_bytes()).collect();
            let zeros = vec![0u8; value_size * chunk.len()];
            self.rule_drops
                .update_batch(&keys, &zeros, chunk.len() as u32, MapFlags::ANY, MapFlags::ANY)
                .map_err(|e| Error::kernel("resetting drop counters", &e, ""))?;
        }
        Ok(())
    }

    /// Writes the drop counters of rules by id: `(id, per-CPU value)`.
    pub fn write_drops(&self, values: &[(u32, Vec<u8>)]) -> Result<()> {
        for (id, v) in values {
            self.rule_drops
                .update(bytes_of(id), v, MapFlags::ANY)
                .map_err(|e| Error::kernel("copying a drop counter", &e, ""))?;
        }
        Ok(())
    }

    /// The raw per-CPU drop counters of one rule.
    pub fn raw_drops(&self, id: u32) -> Option<Vec<u8>> {
        self.rule_drops.lookup(bytes_of(&id), MapFlags::ANY).ok()?
    }

    /// Every rule in the maps, with its id, in any order. Entries that do
    /// not decode (a foreign writer) are skipped.
    pub fn read_rules(&self) -> Vec<(Prefix, u32)> {
        let (v4, _) = self.v4_slots().map(|m| v4table::scan(m.words())).unwrap_or_default();
        let mut out: Vec<(Prefix, u32)> =
            v4.into_iter().map(|(a, id)| (Prefix::V4 { addr: Ipv4Addr::from(a), len: 32 }, id)).collect();
        for kind in [RuleMap::V6Exact, RuleMap::V4Lpm, RuleMap::V6Lpm] {
            let map = kind.handle(self);
            let mut take = |k: &[u8], v: &[u8]| {
                if let (Some(p), Some(rule)) = (kind.decode(k), from_bytes::<types::ig_rule>(v)) {
                    out.push((p, rule.id));
                }
            };
            match map.lookup_batch(BATCH as u32, MapFlags::ANY, MapFlags::ANY) {
                // Hash maps read in batches; tries have no batch operations.
                Ok(batches) if map.map_type() == MapType::Hash => {
                    for (k, v) in batches {
                        take(&k, &v);
                    }
                }
                _ => {
                    for k in map.keys() {
                        if let Ok(Some(v)) = map.lookup(&k, MapFlags::ANY) {
                            take(&k, &v);
                        }
                    }
                }
            }
        }
        out
    }

    /// Tombstones in the IPv4 table.
    pub fn v4_tombstones(&self) -> usize {
        self.v4_slots().map_or(0, |m| v4table::scan(m.words()).1)
    }

    fn v4_table(mapping: &Mapping, shape: Shape) -> Result<Table<'_>> {
        Table::new(mapping.words(), shape).ok_or_else(|| Error::Kernel {
            what: format!("the IPv4 table has {} slots, not 2^{}", mapping.words().len(), shape.bits),
            errno: None,
            hint: "run `icmpguard unload` and start the daemon again".into(),
        })
    }

    /// Adds rules; `rules` may be in any order. IPv4 addresses go into the
    /// mapped table (plain memory writes); hash maps are written in
    /// batches, spread over the CPUs (the kernel locks per bucket); tries
    /// one entry at a time (they have no batch operations and one lock).
    /// `Ok(Err(Overflow))`: an IPv4 address found no slot within the probe
    /// bound; the table needs a rebuild (the other rules were written).
    pub fn write_rules(&self, rules: &[(Prefix, u32)], shape: Shape) -> Result<std::result::Result<(), Overflow>> {
        let mapping = self.v4_slots()?;
        let table = Maps::v4_table(&mapping, shape)?;
        let mut overflow = Ok(());
        // In slot order: a million inserts then walk the table once instead
        // of missing the cache a million times.
        let mut v4: Vec<([u8; 4], u32)> = rules
            .iter()
            .filter_map(|(p, id)| match p {
                Prefix::V4 { addr, len: 32 } => Some((addr.octets(), *id)),
                _ => None,
            })
            .collect();
        v4.sort_unstable_by_key(|(a, _)| shape.home(u32::from_ne_bytes(*a)));
        for (addr, id) in v4 {
            if table.insert(addr, id).is_err() {
                overflow = Err(Overflow);
            }
        }
        for kind in [RuleMap::V6Exact, RuleMap::V4Lpm, RuleMap::V6Lpm] {
            let mine: Vec<&(Prefix, u32)> = rules.iter().filter(|(p, _)| RuleMap::of(p) == kind).collect();
            if mine.is_empty() {
                continue;
            }
            let map = kind.handle(self);
            let failed = |e: libbpf_rs::Error| {
                Error::kernel(format!("adding {} rules to {}", mine.len(), map.name().to_string_lossy()), &e, "")
            };
            let encode = |chunk: &[&(Prefix, u32)]| {
                let mut keys = Vec::with_capacity(chunk.len() * map.key_size() as usize);
                let mut values = Vec::with_capacity(chunk.len() * 8);
                for (p, id) in chunk {
                    push_key(p, &mut keys);
                    values
                        .extend_from_slice(bytes_of(&types::ig_rule { id: *id, prefixlen: u32::from(p.prefix_len()) }));
                }
                (keys, values)
            };
            if map.map_type() == MapType::Hash {
                let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 4);
                let per_thread = mine.len().div_ceil(threads).max(1);
                std::thread::scope(|scope| {
                    let workers: Vec<_> = mine
                        .chunks(per_thread)
                        .map(|part| {
                            scope.spawn(move || -> std::result::Result<(), libbpf_rs::Error> {
                                for chunk in part.chunks(BATCH) {
                                    let (keys, values) = encode(chunk);
                                    map.update_batch(&keys, &values, chunk.len() as u32, MapFlags::ANY, MapFlags::ANY)?;
                                }
                                Ok(())
                            })
                        })
                        .collect();
                    workers.into_iter().try_for_each(|w| {
                        w.join().unwrap_or_else(|_| Err(std::io::Error::other("a map writer thread failed").into()))
                    })
                })
                .map_err(failed)?;
            } else {
                let (keys, values) = encode(&mine);
                let (ks, vs) = (map.key_size() as usize, map.value_size() as usize);
                for (k, v) in keys.chunks_exact(ks).zip(values.chunks_exact(vs)) {
                    map.update(k, v, MapFlags::ANY).map_err(failed)?;
                }
            }
        }
        Ok(overflow)
    }

    /// Removes rules; `rules` may be in any order. Missing ones are fine.
    pub fn delete_rules(&self, rules: &[Prefix], shape: Shape) -> Result<()> {
        let mapping = self.v4_slots()?;
        let table = Maps::v4_table(&mapping, shape)?;
        for p in rules {
            if let Prefix::V4 { addr, len: 32 } = p {
                table.remove(addr.octets());
            }
        }
        for kind in [RuleMap::V6Exact, RuleMap::V4Lpm, RuleMap::V6Lpm] {
            let mut keys = Vec::new();
            let mut n = 0usize;
            for p in rules.iter().filter(|p| RuleMap::of(p) == kind) {
                push_key(p, &mut keys);
                n += 1;
            }
            if n == 0 {
                continue;
            }
            let map = kind.handle(self);
            let failed = |e: libbpf_rs::Error| {
                Error::kernel(format!("removing {n} rules from {}", map.name().to_string_lossy()), &e, "")
            };
            let ks = map.key_size() as usize;
            if map.map_type() == MapType::Hash {
                for k in keys.chunks(ks * BATCH) {
                    match map.delete_batch(k, (k.len() / ks) as u32, MapFlags::ANY, MapFlags::ANY) {
                        Ok(()) => {}
                        // A key already gone stops the batch: finish one by one.
                        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {
                            for one in k.chunks_exact(ks) {
                                match map.delete(one) {
                                    Ok(()) => {}
                                    Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                                    Err(e) => return Err(failed(e)),
                                }
                            }
                        }
                        Err(e) => return Err(failed(e)),
                    }
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
}

fn read_one<T: Plain>(map: &MapHandle) -> Option<T> {
    let v = map.lookup(bytes_of(&0u32), MapFlags::ANY).ok()??;
    from_bytes(&v)
}

fn write_one<T: Plain>(map: &MapHandle, value: &T, name: &str) -> Result<()> {
    map.update(bytes_of(&0u32), bytes_of(value), MapFlags::ANY)
        .map_err(|e| Error::kernel(format!("writing the {name} map"), &e, ""))
}

/// Which of the four rule maps holds a prefix.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RuleMap {
    V4Exact,
    V6Exact,
    V4Lpm,
    V6Lpm,
}

impl RuleMap {
    pub fn of(p: &Prefix) -> RuleMap {
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

    /// The prefix a key of this map stands for.
    fn decode(self, k: &[u8]) -> Option<Prefix> {
        match self {
            RuleMap::V4Exact => {
                let a: [u8; 4] = k.try_into().ok()?;
                Some(Prefix::V4 { addr: Ipv4Addr::from(a), len: 32 })
            }
            RuleMap::V6Exact => {
                let a: [u8; 16] = k.try_into().ok()?;
                Some(Prefix::V6 { addr: Ipv6Addr::from(a), len: 128 })
            }
            RuleMap::V4Lpm => {
                let key = from_bytes::<types::ig_v4_lpm_key>(k)?;
                let len = u8::try_from(key.prefixlen).ok().filter(|l| *l <= 32)?;
                Some(Prefix::containing(Ipv4Addr::from(key.addr.to_ne_bytes()).into(), len))
            }
            RuleMap::V6Lpm => {
                let key = from_bytes::<types::ig_v6_lpm_key>(k)?;
                let len = u8::try_from(key.prefixlen).ok().filter(|l| *l <= 128)?;
                Some(Prefix::containing(Ipv6Addr::from(key.addr).into(), len))
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_abi_and_decode_back() {
        for (text, kind) in [
            ("192.0.2.10", RuleMap::V4Exact),
            ("198.51.100.0/24", RuleMap::V4Lpm),
            ("2001:db8::1", RuleMap::V6Exact),
            ("2001:db8:dead::/48", RuleMap::V6Lpm),
            ("0.0.0.0/0", RuleMap::V4Lpm),
        ] {
            let p: Prefix = text.parse().unwrap();
            assert_eq!(RuleMap::of(&p), kind);
            let mut k = Vec::new();
            push_key(&p, &mut k);
            assert_eq!(kind.decode(&k), Some(p), "{text}");
        }
        let mut k = Vec::new();
        push_key(&"198.51.100.0/24".parse().unwrap(), &mut k);
        assert_eq!(k[4..], [198, 51, 100, 0]);
        assert_eq!(u32::from_ne_bytes(k[..4].try_into().unwrap()), 24);
    }

    #[test]
    fn foreign_keys_do_not_decode() {
        assert_eq!(RuleMap::V4Exact.decode(&[1, 2, 3]), None);
        let bad = types::ig_v4_lpm_key { prefixlen: 33, addr: 0 };
        assert_eq!(RuleMap::V4Lpm.decode(bytes_of(&bad)), None);
    }
}
