//! The maps of one generation, and typed access to them: the encoding of
//! rules as map keys (bpf/icmpguard.h), batched writes and reads.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::addr::Prefix;
use crate::addr::{Family, PerFamily};
use crate::error::{Error, Result};
use crate::kernel::hints::{self, Hints};
use crate::kernel::sizes::{kernel_id, possible_cpus};
use crate::kernel::sys::{self, bytes_of, from_bytes, Mapping, Plain};
use crate::kernel::table::{self, Overflow, Shape, Slots, Table, V4, V6};
use crate::plan::Rule;
use crate::skel::types;

/// Rules per batch system call.
const BATCH: usize = 65536;

/// How a map's size is set when a generation is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// Fixed by its definition in bpf/icmpguard.bpf.c.
    Fixed,
    /// Set from the generation's capacity (or, adopted, the pinned map's):
    /// a pinned map of another size is no incompatibility.
    Capacity,
    /// Set from `[limit] sources` (adopted: the pinned map's; a reload
    /// that asks for another size moves to a new generation).
    Sources,
}

/// The maps of bpf/icmpguard.bpf.c, each named once, here: the field of
/// [`Maps`], the skeleton's map of that name, and its pin name.
macro_rules! maps {
    ($($name:ident: $sizing:ident,)*) => {
        /// The maps of one generation, by name as in bpf/icmpguard.bpf.c.
        pub struct Maps {
            $(pub $name: MapHandle,)*
        }

        impl Maps {
            /// Every map with its name (also its pin name) and sizing.
            pub fn all(&self) -> Vec<(&'static str, Sizing, &MapHandle)> {
                vec![$((stringify!($name), Sizing::$sizing, &self.$name),)*]
            }

            /// Builds the maps from one handle per name.
            pub fn build(mut handle: impl FnMut(&'static str) -> Result<MapHandle>) -> Result<Maps> {
                Ok(Maps { $($name: handle(stringify!($name))?,)* })
            }
        }

        /// The skeleton's maps of a generation about to be loaded, by name.
        pub fn open_maps<'a, 'b>(
            m: &'a mut crate::skel::OpenIcmpguardMaps<'b>,
        ) -> Vec<(&'static str, Sizing, &'a mut libbpf_rs::OpenMapMut<'b>)> {
            vec![$((stringify!($name), Sizing::$sizing, &mut m.$name),)*]
        }

        /// Handles to the skeleton's maps once loaded.
        pub fn loaded_maps(m: &crate::skel::IcmpguardMaps<'_>) -> Result<Maps> {
            Ok(Maps {
                $($name: MapHandle::try_from(&m.$name)
                    .map_err(|e| Error::kernel(concat!("duplicating map ", stringify!($name)), e, ""))?,)*
            })
        }
    };
}

maps! {
    // The address tables, mmapable arrays (see table.rs).
    v4_exact: Capacity,
    v6_exact: Capacity,
    v4_lpm: Capacity,
    v6_lpm: Capacity,
    hints: Fixed,
    rule_drops: Capacity,
    settings: Fixed,
    counters: Fixed,
    limits: Sources,
    budget: Fixed,
    meta: Fixed,
    events: Fixed,
}

impl Maps {
    /// The address table of a family.
    pub fn table(&self, family: Family) -> &MapHandle {
        match family {
            Family::V4 => &self.v4_exact,
            Family::V6 => &self.v6_exact,
        }
    }

    /// Maps a family's table for as long as it is used: mapped for good,
    /// its pages would count in the daemon's memory between reloads.
    fn slots<F: Slots>(&self) -> Result<Mapping> {
        let map = self.table(F::FAMILY);
        Mapping::map(map.as_fd(), F::WORDS * map.max_entries() as usize)
            .map_err(|e| Error::kernel_io(format!("mapping the {} table", F::FAMILY.name()), e, "run as root"))
    }

    /// Maps the hints of both families for as long as they are used.
    fn hint_words(&self) -> Result<Mapping> {
        Mapping::map(self.hints.as_fd(), hints::WORDS)
            .map_err(|e| Error::kernel_io("mapping the hints", e, "run as root"))
    }

    /// Sets the hint bits of `entries` (see hints.rs): before they are
    /// written, so that the programs look where they are.
    pub fn write_hints<'p>(&self, entries: impl Iterator<Item = (&'p Prefix, bool)>, lens: &hints::Lens) -> Result<()> {
        let mapping = self.hint_words()?;
        let h = Hints::new(mapping.words(), hint_mul()).ok_or_else(|| bad_hints(&mapping))?;
        h.set(entries, lens);
        Ok(())
    }

    /// Of `entries`, those whose hint bits are missing: the programs do
    /// not look where they are (a damaged map).
    pub fn unhinted<'p>(
        &self,
        entries: impl Iterator<Item = (&'p Prefix, bool)>,
        lens: &hints::Lens,
    ) -> Result<Vec<Prefix>> {
        let mapping = self.hint_words()?;
        let h = Hints::new(mapping.words(), hint_mul()).ok_or_else(|| bad_hints(&mapping))?;
        Ok(entries.filter(|(p, allow)| !h.covers(p, *allow, lens)).map(|(p, _)| *p).collect())
    }

    /// The entries of a family's table as rules, and its tombstones.
    fn scan<F: Slots>(&self, len_bits: u32) -> (Vec<(Prefix, u32)>, usize) {
        let Ok(m) = self.slots::<F>() else { return (Vec::new(), 0) };
        let (entries, tombstones) = table::scan::<F>(m.words(), len_bits);
        (entries.into_iter().filter_map(|(k, len, id)| Some((F::prefix(k, len)?, id))).collect(), tombstones)
    }

    /// Writes the table entries of one family, in slot order (a million
    /// inserts walk the table once instead of missing the cache a million
    /// times); `Err(Overflow)`: one found no slot within the probe bound.
    fn write_table<F: Slots>(
        &self,
        rules: &[(Prefix, Rule)],
        layout: &Layout,
    ) -> Result<std::result::Result<(), Overflow>> {
        let shape = layout.shape[F::FAMILY];
        let mut entries: Vec<(F::Key, u8, u32)> = rules
            .iter()
            .filter(|(p, _)| layout.in_table(p))
            .filter_map(|(p, r)| F::key(p).map(|(k, len)| (k, len, kernel_id(*r))))
            .collect();
        if entries.is_empty() {
            return Ok(Ok(()));
        }
        let mapping = self.slots::<F>()?;
        let t = Table::<F>::new(mapping.words(), shape).ok_or_else(|| bad_table(F::FAMILY.name(), &mapping, shape))?;
        entries.sort_unstable_by_key(|(k, len, _)| shape.home(k.as_ref(), *len));
        let mut overflow = Ok(());
        for (key, len, id) in entries {
            if t.insert(key, len, id).is_err() {
                overflow = Err(Overflow);
            }
        }
        Ok(overflow)
    }

    /// Removes the table entries of one family; missing ones are fine.
    fn delete_table<F: Slots>(&self, rules: &[&Prefix], shape: Shape) -> Result<()> {
        let keys: Vec<(F::Key, u8)> = rules.iter().filter_map(|p| F::key(p)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mapping = self.slots::<F>()?;
        let t = Table::<F>::new(mapping.words(), shape).ok_or_else(|| bad_table(F::FAMILY.name(), &mapping, shape))?;
        for (key, len) in keys {
            t.remove(key, len);
        }
        Ok(())
    }

    /// Opens every map pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Maps> {
        Maps::build(|name| {
            let path = dir.join(name);
            MapHandle::from_pinned_path(&path).map_err(|e| {
                Error::kernel(
                    format!("opening pinned map {}", path.display()),
                    e,
                    "run `icmpguard unload` to remove a damaged pin directory",
                )
            })
        })
    }

    /// Pins every map in `dir`, which must exist.
    pub fn pin(&self, dir: &Path) -> Result<()> {
        for (name, _, map) in self.all() {
            let path = dir.join(name);
            sys::obj_pin(map.as_fd(), &path)
                .map_err(|e| Error::kernel_io(format!("pinning map at {}", path.display()), e, ""))?;
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

    /// Counters summed over CPUs, per direction (enum ig_direction).
    pub fn read_counters_by_direction(&self) -> [types::ig_counters; 2] {
        let mut out = [types::ig_counters::default(); 2];
        for (dir, sum) in out.iter_mut().enumerate() {
            if let Ok(Some(per_cpu)) = self.counters.lookup_percpu(bytes_of(&(dir as u32)), MapFlags::ANY) {
                for c in per_cpu.iter().filter_map(|b| from_bytes::<types::ig_counters>(b)) {
                    add_counters(sum, &c);
                }
            }
        }
        out
    }

    /// Counters summed over CPUs and directions.
    pub fn read_counters(&self) -> types::ig_counters {
        let mut sum = types::ig_counters::default();
        for c in self.read_counters_by_direction() {
            add_counters(&mut sum, &c);
        }
        sum
    }

    /// Starts a new second of the in-kernel event budget on every CPU.
    pub fn reset_event_budget(&self) -> Result<()> {
        let cpus = possible_cpus()? as usize;
        let zeros = vec![vec![0u8; std::mem::size_of::<types::ig_budget>()]; cpus];
        self.budget
            .update_percpu(bytes_of(&0u32), &zeros, MapFlags::ANY)
            .map_err(|e| Error::kernel("resetting the event budget", e, ""))
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
                .map_err(|e| Error::kernel("resetting drop counters", e, ""))?;
        }
        Ok(())
    }

    /// Writes the drop counters of rules by id: `(id, per-CPU value)`.
    pub fn write_drops(&self, values: &[(u32, Vec<u8>)]) -> Result<()> {
        for (id, v) in values {
            self.rule_drops
                .update(bytes_of(id), v, MapFlags::ANY)
                .map_err(|e| Error::kernel("copying a drop counter", e, ""))?;
        }
        Ok(())
    }

    /// The raw per-CPU drop counters of one rule.
    pub fn raw_drops(&self, id: u32) -> Option<Vec<u8>> {
        self.rule_drops.lookup(bytes_of(&id), MapFlags::ANY).ok()?
    }

    /// The set of the rate limiter that holds (or would hold) a source's
    /// key (icmpguard.h, struct ig_limit_set), with its index.
    fn limit_set(&self, key: u64) -> Result<(u32, types::ig_limit_set)> {
        let sets = u64::from(self.limits.max_entries());
        let hash = key.wrapping_mul(crate::kernel::generation::abi_constants().hash_mul) >> 32;
        let idx = ((hash * sets) >> 32) as u32;
        let v = self
            .limits
            .lookup(bytes_of(&idx), MapFlags::ANY)
            .map_err(|e| Error::kernel("reading a limiter set", e, ""))?;
        let set = v.as_deref().and_then(from_bytes::<types::ig_limit_set>).unwrap_or_default();
        Ok((idx, set))
    }

    /// The bucket (theoretical arrival time) of the source whose key is
    /// `key` (limit_key), if its set holds it.
    pub fn limit_bucket(&self, key: u64) -> Result<Option<u64>> {
        let (_, set) = self.limit_set(key)?;
        Ok(set.way.iter().find(|w| w.key == key).map(|w| w.tat))
    }

    /// Writes a source's bucket into `way` of its set.
    pub fn write_limit_bucket(&self, key: u64, way: usize, tat: u64) -> Result<()> {
        let (idx, mut set) = self.limit_set(key)?;
        let Some(w) = set.way.get_mut(way) else {
            return Err(Error::Internal { what: format!("a limiter set has no way {way}"), hint: String::new() });
        };
        (w.key, w.tat) = (key, tat);
        self.limits
            .update(bytes_of(&idx), bytes_of(&set), MapFlags::ANY)
            .map_err(|e| Error::kernel("writing a limiter set", e, ""))
    }

    /// Every rule in the maps, with its id, in any order. Entries that do
    /// not decode (a foreign writer) are skipped.
    pub fn read_rules(&self, len_bits: u32) -> Vec<(Prefix, u32)> {
        let mut out = self.scan::<V4>(len_bits).0;
        out.extend(self.scan::<V6>(len_bits).0);
        // Tries have no batch operations.
        for kind in [Trie::V4, Trie::V6] {
            let map = kind.map(self);
            for k in map.keys() {
                if let Ok(Some(v)) = map.lookup(&k, MapFlags::ANY) {
                    if let (Some(p), Some(rule)) = (kind.decode(&k), from_bytes::<types::ig_rule>(&v)) {
                        out.push((p, rule.id));
                    }
                }
            }
        }
        out
    }

    /// Tombstones in each family's table.
    pub fn tombstones(&self, len_bits: u32) -> PerFamily<usize> {
        PerFamily { v4: self.scan::<V4>(len_bits).1, v6: self.scan::<V6>(len_bits).1 }
    }

    /// Adds rules; `rules` may be in any order. Exact addresses and the
    /// prefixes of the table lengths go into the mapped tables (plain memory
    /// writes, in slot order: a million inserts walk the table once instead
    /// of missing the cache a million times); other prefixes into the
    /// tries, one at a time (tries have no batch operations).
    /// `Ok(Err(Overflow))`: an entry found no slot within the probe bound;
    /// its table needs a rebuild (the rest was written).
    pub fn write_rules(&self, rules: &[(Prefix, Rule)], layout: &Layout) -> Result<std::result::Result<(), Overflow>> {
        if rules.is_empty() {
            return Ok(Ok(()));
        }
        self.write_hints(rules.iter().map(|(p, r)| (p, r.allow())), &layout.lens)?;
        let overflow = self.write_table::<V4>(rules, layout)?.and(self.write_table::<V6>(rules, layout)?);
        let mut key = Vec::new();
        for (p, r) in rules.iter().filter(|(p, _)| !layout.in_table(p)) {
            let map = Trie::of(p).map(self);
            key.clear();
            push_key(p, &mut key);
            let value = types::ig_rule { id: kernel_id(*r), prefixlen: u32::from(p.prefix_len()) };
            map.update(&key, bytes_of(&value), MapFlags::ANY)
                .map_err(|e| Error::kernel(format!("adding {p} to {}", map.name().to_string_lossy()), e, ""))?;
        }
        Ok(overflow)
    }

    /// Removes rules; `rules` may be in any order. Missing ones are fine.
    pub fn delete_rules(&self, rules: &[Prefix], layout: &Layout) -> Result<()> {
        let tables: Vec<&Prefix> = rules.iter().filter(|p| layout.in_table(p)).collect();
        self.delete_table::<V4>(&tables, layout.shape.v4)?;
        self.delete_table::<V6>(&tables, layout.shape.v6)?;
        let mut key = Vec::new();
        for p in rules.iter().filter(|p| !layout.in_table(p)) {
            let map = Trie::of(p).map(self);
            key.clear();
            push_key(p, &mut key);
            match map.delete(&key) {
                Ok(()) => {}
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::kernel(format!("removing {p} from {}", map.name().to_string_lossy()), e, ""))
                }
            }
        }
        Ok(())
    }
}

/// Where a generation keeps its rules: the tables' shapes, and the prefix
/// lengths the tables hold besides exact addresses (longest first; the
/// other lengths are in the tries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: PerFamily<Shape>,
    pub lens: PerFamily<[u8; TABLE_LENS]>,
}

/// Prefix lengths a table holds besides exact addresses (IG_TABLE_LENS).
pub const TABLE_LENS: usize = types::ig_abi::IG_TABLE_LENS.0 as usize;
/// An unused entry of the table lengths (IG_NO_LEN).
pub const NO_LEN: u8 = types::ig_abi::IG_NO_LEN.0 as u8;

impl Layout {
    /// Whether `p` lives in its family's table (not in a trie).
    pub fn in_table(&self, p: &Prefix) -> bool {
        let (family, len) = (p.family(), p.prefix_len());
        len == family.exact_len() || self.lens[family].contains(&len)
    }
}

fn bad_table(family: &str, mapping: &Mapping, shape: Shape) -> Error {
    Error::Internal {
        what: format!(
            "the {family} table has {} words, not the 2^{} slots its settings say",
            mapping.words().len(),
            shape.bits
        ),
        hint: "run `icmpguard unload` and start the daemon again".into(),
    }
}

/// The rate limiter's key of a source (icmpguard.h): the /64 of an IPv6
/// address; ff ff ff ff and the address for IPv4 (and IPv4-mapped IPv6).
pub fn limit_key(source: std::net::IpAddr) -> u64 {
    let v4 = match source {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let mut k = [0xFFu8; 8];
    match (v4, source) {
        (Some(a), _) => k[4..].copy_from_slice(&a.octets()),
        (None, std::net::IpAddr::V6(a)) => k.copy_from_slice(&a.octets()[..8]),
        (None, std::net::IpAddr::V4(_)) => {}
    }
    u64::from_ne_bytes(k)
}

fn bad_hints(mapping: &Mapping) -> Error {
    Error::Internal {
        what: format!("the hints map has {} words, not {}", mapping.words().len(), hints::WORDS),
        hint: "run `icmpguard unload` and start the daemon again".into(),
    }
}

/// IG_HASH_MUL: the IPv6 hint bucket's hash.
fn hint_mul() -> hints::Mul {
    hints::Mul(crate::kernel::generation::abi_constants().hash_mul)
}

fn read_one<T: Plain>(map: &MapHandle) -> Option<T> {
    let v = map.lookup(bytes_of(&0u32), MapFlags::ANY).ok()??;
    from_bytes(&v)
}

fn write_one<T: Plain>(map: &MapHandle, value: &T, name: &str) -> Result<()> {
    map.update(bytes_of(&0u32), bytes_of(value), MapFlags::ANY)
        .map_err(|e| Error::kernel(format!("writing the {name} map"), e, ""))
}

/// The prefix trie of a family (the prefixes the address tables do not
/// hold: see Layout).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trie {
    V4,
    V6,
}

impl Trie {
    pub fn of(p: &Prefix) -> Trie {
        if p.is_v4() {
            Trie::V4
        } else {
            Trie::V6
        }
    }

    fn map(self, maps: &Maps) -> &MapHandle {
        match self {
            Trie::V4 => &maps.v4_lpm,
            Trie::V6 => &maps.v6_lpm,
        }
    }

    /// The prefix a trie key stands for (`None`: not a valid key).
    fn decode(self, k: &[u8]) -> Option<Prefix> {
        match self {
            Trie::V4 => {
                let key = from_bytes::<types::ig_v4_lpm_key>(k)?;
                let len = u8::try_from(key.prefixlen).ok().filter(|l| *l <= 32)?;
                Some(Prefix::containing(Ipv4Addr::from(key.addr.to_ne_bytes()).into(), len))
            }
            Trie::V6 => {
                let key = from_bytes::<types::ig_v6_lpm_key>(k)?;
                let len = u8::try_from(key.prefixlen).ok().filter(|l| *l <= 128)?;
                Some(Prefix::containing(Ipv6Addr::from(key.addr).into(), len))
            }
        }
    }
}

/// Appends the trie key of `p` (as bpf/icmpguard.h defines it) to `out`.
fn push_key(p: &Prefix, out: &mut Vec<u8>) {
    match *p {
        Prefix::V4 { addr, len } => out.extend_from_slice(bytes_of(&types::ig_v4_lpm_key {
            prefixlen: u32::from(len),
            addr: u32::from_ne_bytes(addr.octets()),
        })),
        Prefix::V6 { addr, len } => {
            out.extend_from_slice(bytes_of(&types::ig_v6_lpm_key { prefixlen: u32::from(len), addr: addr.octets() }))
        }
    }
}

/// Adds the counters of `c` to `sum`, field by field.
pub fn add_counters(sum: &mut types::ig_counters, c: &types::ig_counters) {
    sum.icmp_seen += c.icmp_seen;
    sum.dropped += c.dropped;
    sum.limited += c.limited;
    sum.allowed += c.allowed;
    sum.events_queued += c.events_queued;
    sum.events_lost += c.events_lost;
    sum.events_suppressed += c.events_suppressed;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_abi_and_decode_back() {
        for (text, kind) in [
            ("192.0.2.10/31", Trie::V4),
            ("198.51.100.0/24", Trie::V4),
            ("2001:db8::/127", Trie::V6),
            ("2001:db8:dead::/48", Trie::V6),
            ("0.0.0.0/0", Trie::V4),
        ] {
            let p: Prefix = text.parse().unwrap();
            assert_eq!(Trie::of(&p), kind);
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
        assert_eq!(Trie::V4.decode(&[1, 2, 3]), None);
        let bad = types::ig_v4_lpm_key { prefixlen: 33, addr: 0 };
        assert_eq!(Trie::V4.decode(bytes_of(&bad)), None);
    }
}
