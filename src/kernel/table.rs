//! The address tables (bpf/icmpguard.h): open addressing with linear
//! probing in memory-mapped BPF arrays that user space writes directly, and
//! the programs probe without a helper call. A table holds exact addresses
//! and the prefixes of a few prefix lengths, keyed by (address masked to
//! the length, length). An entry sits at most `max_probe` slots from its
//! home, so a lookup is bounded whatever the traffic. Deleted slots become
//! tombstones; too many of them, or an entry that cannot be placed within
//! the bound, ask for a rebuild (a new generation, with another seed).
//!
//! An IPv4 slot is one 8-byte word (address; tag = (id + 1) << LEN_BITS |
//! length), written in one store. An IPv6 slot is three words (address,
//! address, tag and length), written address first and tag last, and filled
//! only while empty (tombstones are not reused), so that the programs never
//! see half an update either way.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::skel::types;

const EMPTY: u32 = types::ig_slot_tag::IG_SLOT_EMPTY.0;
const TOMBSTONE: u32 = types::ig_slot_tag::IG_SLOT_TOMBSTONE.0;
const FIRST_ID: u32 = types::ig_slot_tag::IG_SLOT_FIRST_ID.0;

/// The shape of a table: 2^bits slots and a hash seed; the probe bound,
/// the hash multiplier and the IPv4 tag's length bits come from the
/// object's .rodata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub bits: u32,
    pub seed: u32,
    pub max_probe: u32,
    pub mul: u32,
    pub len_bits: u32,
}

impl Shape {
    /// The slot where the search for an IPv4 (key, len) starts; `key` is
    /// the address as the packet carries it, read as a native u32.
    pub fn home(&self, key: u32, len: u8) -> usize {
        let h = ((key ^ self.seed).wrapping_mul(self.mul) ^ u32::from(len)).wrapping_mul(self.mul);
        (h >> (32 - self.bits)) as usize
    }

    /// The slot where the search for an IPv6 (key, len) starts: the key's
    /// four 32-bit words (in memory order), then the length, folded in as
    /// the program does.
    pub fn home6(&self, key: [u8; 16], len: u8) -> usize {
        let mut h = self.seed;
        for w in key.chunks_exact(4) {
            h = (h ^ u32::from_ne_bytes([w[0], w[1], w[2], w[3]])).wrapping_mul(self.mul);
        }
        h = (h ^ u32::from(len)).wrapping_mul(self.mul);
        (h >> (32 - self.bits)) as usize
    }

    pub fn slots(&self) -> usize {
        1 << self.bits
    }

    fn valid(&self) -> bool {
        self.bits > 0 && self.bits < 32 && self.max_probe > 0 && (1..16).contains(&self.len_bits)
    }
}

/// Bits of a table for `capacity` entries: at most half full.
pub fn bits_for(capacity: u32) -> u32 {
    (u64::from(capacity) * 2).next_power_of_two().trailing_zeros().clamp(10, 31)
}

/// An entry could not be placed within the probe bound.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// One IPv4 slot: (key, len, id) or EMPTY / TOMBSTONE in `tag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct V4Slot {
    key: [u8; 4],
    tag: u32,
}

impl V4Slot {
    fn load(word: &AtomicU64) -> V4Slot {
        let b = word.load(Ordering::Acquire).to_ne_bytes();
        V4Slot { key: [b[0], b[1], b[2], b[3]], tag: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) }
    }

    fn word(key: [u8; 4], tag: u32) -> u64 {
        let t = tag.to_ne_bytes();
        u64::from_ne_bytes([key[0], key[1], key[2], key[3], t[0], t[1], t[2], t[3]])
    }

    /// (len, id) of a rule's slot.
    fn rule(&self, len_bits: u32) -> Option<(u8, u32)> {
        (self.tag > TOMBSTONE)
            .then(|| ((self.tag & ((1 << len_bits) - 1)) as u8, (self.tag >> len_bits).wrapping_sub(1)))
    }
}

/// Operations on the slots of a mapped IPv4 table.
pub struct Table<'a> {
    slots: &'a [AtomicU64],
    shape: Shape,
}

impl<'a> Table<'a> {
    /// `slots` must hold exactly `shape.slots()` words.
    pub fn new(slots: &'a [AtomicU64], shape: Shape) -> Option<Table<'a>> {
        (slots.len() == shape.slots() && shape.valid()).then_some(Table { slots, shape })
    }

    fn probe(&self, key: [u8; 4], len: u8) -> impl Iterator<Item = (usize, V4Slot)> + '_ {
        let home = self.shape.home(u32::from_ne_bytes(key), len);
        let mask = self.slots.len() - 1;
        (0..self.shape.max_probe as usize).map(move |i| {
            let at = (home + i) & mask;
            (at, V4Slot::load(&self.slots[at]))
        })
    }

    fn matches(&self, s: &V4Slot, key: [u8; 4], len: u8) -> bool {
        s.key == key && s.rule(self.shape.len_bits).is_some_and(|(l, _)| l == len)
    }

    /// The rule id stored for (key, len).
    #[cfg(test)]
    pub fn get(&self, key: [u8; 4], len: u8) -> Option<u32> {
        for (_, s) in self.probe(key, len) {
            if s.tag == EMPTY {
                return None;
            }
            if self.matches(&s, key, len) {
                return s.rule(self.shape.len_bits).map(|(_, id)| id);
            }
        }
        None
    }

    /// Stores (key, len) with `id` (replacing the id if it is there).
    pub fn insert(&self, key: [u8; 4], len: u8, id: u32) -> Result<(), Overflow> {
        let mut free = None;
        for (at, s) in self.probe(key, len) {
            if self.matches(&s, key, len) {
                free = Some(at);
                break;
            }
            if s.tag == TOMBSTONE && free.is_none() {
                free = Some(at);
            }
            if s.tag == EMPTY {
                free = free.or(Some(at));
                break;
            }
        }
        let at = free.ok_or(Overflow)?;
        let tag = (id + 1) << self.shape.len_bits | u32::from(len);
        self.slots[at].store(V4Slot::word(key, tag), Ordering::Release);
        Ok(())
    }

    /// Removes (key, len); whether it was there.
    pub fn remove(&self, key: [u8; 4], len: u8) -> bool {
        for (at, s) in self.probe(key, len) {
            if s.tag == EMPTY {
                return false;
            }
            if self.matches(&s, key, len) {
                self.slots[at].store(V4Slot::word(key, TOMBSTONE), Ordering::Release);
                return true;
            }
        }
        false
    }
}

/// Every entry of an IPv4 table as (key, len, id), and the number of
/// tombstones (no shape needed but the tag's length bits).
pub fn scan(slots: &[AtomicU64], len_bits: u32) -> (Vec<([u8; 4], u8, u32)>, usize) {
    let mut out = Vec::new();
    let mut tombstones = 0;
    for w in slots {
        let s = V4Slot::load(w);
        match s.rule(len_bits) {
            Some((len, id)) => out.push((s.key, len, id)),
            None if s.tag == TOMBSTONE => tombstones += 1,
            None => {}
        }
    }
    (out, tombstones)
}

/// The three words of an IPv6 slot.
fn pack6(key: [u8; 16], tag: u32, len: u8) -> [u64; 3] {
    let t = tag.to_ne_bytes();
    let l = u32::from(len).to_ne_bytes();
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&key[..8]);
    b.copy_from_slice(&key[8..]);
    [u64::from_ne_bytes(a), u64::from_ne_bytes(b), u64::from_ne_bytes([t[0], t[1], t[2], t[3], l[0], l[1], l[2], l[3]])]
}

/// (tag, len) of an IPv6 slot's third word.
fn tag6(word: u64) -> (u32, u8) {
    let b = word.to_ne_bytes();
    (u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as u8)
}

fn key6(w0: u64, w1: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&w0.to_ne_bytes());
    a[8..].copy_from_slice(&w1.to_ne_bytes());
    a
}

/// Operations on the slots of a mapped IPv6 table (three words a slot).
pub struct Table6<'a> {
    words: &'a [AtomicU64],
    shape: Shape,
}

impl<'a> Table6<'a> {
    /// `words` must hold exactly `3 * shape.slots()` words.
    pub fn new(words: &'a [AtomicU64], shape: Shape) -> Option<Table6<'a>> {
        (words.len() == 3 * shape.slots() && shape.valid()).then_some(Table6 { words, shape })
    }

    fn probe(&self, key: [u8; 16], len: u8) -> impl Iterator<Item = (usize, [u8; 16], u32, u8)> + '_ {
        let home = self.shape.home6(key, len);
        let mask = self.shape.slots() - 1;
        (0..self.shape.max_probe as usize).map(move |i| {
            let at = (home + i) & mask;
            let w = &self.words[3 * at..3 * at + 3];
            // The tag first, as the program reads it.
            let (tag, l) = tag6(w[2].load(Ordering::Acquire));
            (at, key6(w[0].load(Ordering::Relaxed), w[1].load(Ordering::Relaxed)), tag, l)
        })
    }

    /// The rule id stored for (key, len).
    #[cfg(test)]
    pub fn get(&self, key: [u8; 16], len: u8) -> Option<u32> {
        for (_, k, tag, l) in self.probe(key, len) {
            if tag == EMPTY {
                return None;
            }
            if tag >= FIRST_ID && k == key && l == len {
                return Some(tag - FIRST_ID);
            }
        }
        None
    }

    /// Stores (key, len) with `id`: in its slot if it is there, else in the
    /// first empty slot (never a tombstone: see the module comment).
    pub fn insert(&self, key: [u8; 16], len: u8, id: u32) -> Result<(), Overflow> {
        let w = pack6(key, id + FIRST_ID, len);
        for (at, k, tag, l) in self.probe(key, len) {
            if tag >= FIRST_ID && k == key && l == len {
                self.words[3 * at + 2].store(w[2], Ordering::Release);
                return Ok(());
            }
            if tag == EMPTY {
                self.words[3 * at].store(w[0], Ordering::Relaxed);
                self.words[3 * at + 1].store(w[1], Ordering::Relaxed);
                self.words[3 * at + 2].store(w[2], Ordering::Release);
                return Ok(());
            }
        }
        Err(Overflow)
    }

    /// Removes (key, len); whether it was there.
    pub fn remove(&self, key: [u8; 16], len: u8) -> bool {
        for (at, k, tag, l) in self.probe(key, len) {
            if tag == EMPTY {
                return false;
            }
            if tag >= FIRST_ID && k == key && l == len {
                self.words[3 * at + 2].store(pack6(key, TOMBSTONE, len)[2], Ordering::Release);
                return true;
            }
        }
        false
    }
}

/// Every entry of an IPv6 table's words as (key, len, id), and the number
/// of tombstones.
pub fn scan6(words: &[AtomicU64]) -> (Vec<([u8; 16], u8, u32)>, usize) {
    let mut out = Vec::new();
    let mut tombstones = 0;
    for w in words.chunks_exact(3) {
        match tag6(w[2].load(Ordering::Acquire)) {
            (EMPTY, _) => {}
            (TOMBSTONE, _) => tombstones += 1,
            (t, len) => out.push((key6(w[0].load(Ordering::Relaxed), w[1].load(Ordering::Relaxed)), len, t - FIRST_ID)),
        }
    }
    (out, tombstones)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(bits: u32) -> Shape {
        Shape { bits, seed: 0x1234_5678, max_probe: 32, mul: 2_654_435_769, len_bits: 6 }
    }

    fn slots(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn inserted_entries_are_found_by_key_and_length_and_removed_ones_are_not() {
        let mem = slots(1 << 10);
        let t = Table::new(&mem, shape(10)).unwrap();
        t.insert([192, 0, 2, 10], 32, 7).unwrap();
        t.insert([198, 51, 100, 0], 24, 8).unwrap();
        t.insert([198, 51, 100, 0], 32, 9).unwrap();
        assert_eq!(t.get([192, 0, 2, 10], 32), Some(7));
        assert_eq!(t.get([198, 51, 100, 0], 24), Some(8));
        assert_eq!(t.get([198, 51, 100, 0], 32), Some(9), "the same address, another length");
        assert_eq!(t.get([198, 51, 100, 0], 16), None);
        assert!(t.remove([192, 0, 2, 10], 32));
        assert!(!t.remove([192, 0, 2, 10], 32));
        assert_eq!(t.get([192, 0, 2, 10], 32), None);
        t.insert([192, 0, 2, 10], 32, 11).unwrap();
        assert_eq!(t.get([192, 0, 2, 10], 32), Some(11));
        let (all, tombs) = scan(&mem, 6);
        assert_eq!(all.len(), 3);
        assert!(all.contains(&([198, 51, 100, 0], 24, 8)));
        assert!(tombs <= 1);
    }

    #[test]
    fn an_entry_is_stored_once_even_behind_a_tombstone() {
        let mem = slots(1 << 10);
        // All share a home slot with a zero multiplier.
        let s = Shape { mul: 0, ..shape(10) };
        let t = Table::new(&mem, s).unwrap();
        t.insert([10, 0, 0, 1], 32, 1).unwrap();
        t.insert([10, 0, 0, 2], 32, 2).unwrap();
        assert!(t.remove([10, 0, 0, 1], 32));
        // 10.0.0.2 sits after the tombstone: re-inserting it must not
        // create a second copy in the tombstone.
        t.insert([10, 0, 0, 2], 32, 3).unwrap();
        let (all, _) = scan(&mem, 6);
        assert_eq!(all, vec![([10, 0, 0, 2], 32, 3)]);
    }

    #[test]
    fn the_probe_bound_is_never_exceeded() {
        let mem = slots(1 << 10);
        let s = Shape { mul: 0, max_probe: 4, ..shape(10) };
        let t = Table::new(&mem, s).unwrap();
        for i in 0..4 {
            t.insert([10, 0, 0, i], 32, u32::from(i)).unwrap();
        }
        assert_eq!(t.insert([10, 0, 0, 9], 32, 9), Err(Overflow));
        assert_eq!(t.get([10, 0, 0, 3], 32), Some(3));
    }

    #[test]
    fn a_million_sequential_addresses_fit_a_table_sized_for_them() {
        let bits = bits_for(1_500_000);
        let mem = slots(1 << bits);
        let t = Table::new(&mem, shape(bits)).unwrap();
        for i in 0..1_000_000u32 {
            t.insert((0x0a00_0000 + i).to_be_bytes(), 32, i).unwrap_or_else(|_| panic!("overflow at {i}"));
        }
        assert_eq!(t.get((0x0a00_0000u32 + 999_999).to_be_bytes(), 32), Some(999_999));
    }

    #[test]
    fn ipv6_entries_are_found_removed_and_never_revived_in_a_tombstone() {
        let bits = 10;
        let mem = slots(3 << bits);
        let t = Table6::new(&mem, shape(bits)).unwrap();
        let a: [u8; 16] = "2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let net: [u8; 16] = "2001:db8::".parse::<std::net::Ipv6Addr>().unwrap().octets();
        t.insert(a, 128, 4).unwrap();
        t.insert(net, 64, 5).unwrap();
        assert_eq!((t.get(a, 128), t.get(net, 64), t.get(net, 48)), (Some(4), Some(5), None));
        assert!(t.remove(a, 128));
        assert_eq!(t.get(a, 128), None);
        t.insert(a, 128, 6).unwrap();
        assert_eq!(t.get(a, 128), Some(6));
        let (all, tombs) = scan6(&mem);
        assert_eq!(all.len(), 2);
        assert!(all.contains(&(net, 64, 5)));
        assert_eq!(tombs, 1, "the tombstone stays until a rebuild");
        assert_eq!(std::mem::size_of::<types::ig_v6_slot>(), 24);
    }

    #[test]
    fn the_layout_is_address_then_tag() {
        let w = V4Slot::word([192, 0, 2, 1], 5);
        assert_eq!(&w.to_ne_bytes()[..4], &[192, 0, 2, 1]);
        assert_eq!(V4Slot::load(&AtomicU64::new(w)), V4Slot { key: [192, 0, 2, 1], tag: 5 });
        assert_eq!(std::mem::size_of::<types::ig_v4_slot>(), 8);
    }
}
