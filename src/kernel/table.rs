//! The exact-address tables (bpf/icmpguard.h): open addressing with linear
//! probing in memory-mapped BPF arrays that user space writes directly, and
//! the programs probe without a helper call. An address sits at most
//! `max_probe` slots from its home, so a lookup is bounded whatever the
//! traffic. Deleted slots become tombstones; too many of them, or an address
//! that cannot be placed within the bound, ask for a rebuild (a new
//! generation, with another seed).
//!
//! An IPv4 slot is one 8-byte word (address, tag), written in one store. An
//! IPv6 slot is three words (address, address, tag), written address first
//! and tag last, and filled only while empty (tombstones are not reused), so
//! that the programs never see half an update either way.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::skel::types;

const EMPTY: u32 = types::ig_slot_tag::IG_SLOT_EMPTY.0;
const TOMBSTONE: u32 = types::ig_slot_tag::IG_SLOT_TOMBSTONE.0;
const FIRST_ID: u32 = types::ig_slot_tag::IG_SLOT_FIRST_ID.0;

/// The shape of a table: 2^bits slots, a hash seed, the probe bound and
/// the hash multiplier (the last two from the object's .rodata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub bits: u32,
    pub seed: u32,
    pub max_probe: u32,
    pub mul: u32,
}

impl Shape {
    /// The slot where the search for an IPv4 address starts.
    pub fn home(&self, addr: u32) -> usize {
        ((addr ^ self.seed).wrapping_mul(self.mul) >> (32 - self.bits)) as usize
    }

    /// The slot where the search for an IPv6 address starts: its four
    /// 32-bit words (in memory order) folded in as the program does.
    pub fn home6(&self, addr: [u8; 16]) -> usize {
        let mut h = self.seed;
        for w in addr.chunks_exact(4) {
            h = (h ^ u32::from_ne_bytes([w[0], w[1], w[2], w[3]])).wrapping_mul(self.mul);
        }
        (h >> (32 - self.bits)) as usize
    }

    pub fn slots(&self) -> usize {
        1 << self.bits
    }
}

/// Bits of a table for `capacity` addresses: at most half full.
pub fn bits_for(capacity: u32) -> u32 {
    (u64::from(capacity) * 2).next_power_of_two().trailing_zeros().clamp(10, 31)
}

/// `addr` is the address as the packet carries it (network byte order,
/// read as a native u32: the bytes in memory are the octets).
fn pack(addr: [u8; 4], tag: u32) -> u64 {
    let t = tag.to_ne_bytes();
    u64::from_ne_bytes([addr[0], addr[1], addr[2], addr[3], t[0], t[1], t[2], t[3]])
}

fn unpack(word: u64) -> ([u8; 4], u32) {
    let b = word.to_ne_bytes();
    ([b[0], b[1], b[2], b[3]], u32::from_ne_bytes([b[4], b[5], b[6], b[7]]))
}

/// An address could not be placed within the probe bound.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// Operations on the slots of a mapped table.
pub struct Table<'a> {
    slots: &'a [AtomicU64],
    shape: Shape,
}

impl<'a> Table<'a> {
    /// `slots` must hold exactly `shape.slots()` words.
    pub fn new(slots: &'a [AtomicU64], shape: Shape) -> Option<Table<'a>> {
        (slots.len() == shape.slots() && shape.bits > 0 && shape.bits < 32 && shape.max_probe > 0)
            .then_some(Table { slots, shape })
    }

    fn probe(&self, addr: [u8; 4]) -> impl Iterator<Item = (usize, [u8; 4], u32)> + '_ {
        let home = self.shape.home(u32::from_ne_bytes(addr));
        let mask = self.slots.len() - 1;
        (0..self.shape.max_probe as usize).map(move |i| {
            let at = (home + i) & mask;
            let (a, tag) = unpack(self.slots[at].load(Ordering::Acquire));
            (at, a, tag)
        })
    }

    /// The rule id stored for `addr`.
    #[cfg(test)]
    pub fn get(&self, addr: [u8; 4]) -> Option<u32> {
        for (_, a, tag) in self.probe(addr) {
            if tag == EMPTY {
                return None;
            }
            if tag >= FIRST_ID && a == addr {
                return Some(tag - FIRST_ID);
            }
        }
        None
    }

    /// Stores `addr` with `id` (replacing the id if it is there already).
    pub fn insert(&self, addr: [u8; 4], id: u32) -> Result<(), Overflow> {
        let mut free = None;
        for (at, a, tag) in self.probe(addr) {
            if tag >= FIRST_ID && a == addr {
                free = Some(at);
                break;
            }
            if tag == TOMBSTONE && free.is_none() {
                free = Some(at);
            }
            if tag == EMPTY {
                free = free.or(Some(at));
                break;
            }
        }
        let at = free.ok_or(Overflow)?;
        self.slots[at].store(pack(addr, id + FIRST_ID), Ordering::Release);
        Ok(())
    }

    /// Removes `addr`; whether it was there.
    pub fn remove(&self, addr: [u8; 4]) -> bool {
        for (at, a, tag) in self.probe(addr) {
            if tag == EMPTY {
                return false;
            }
            if tag >= FIRST_ID && a == addr {
                self.slots[at].store(pack(addr, TOMBSTONE), Ordering::Release);
                return true;
            }
        }
        false
    }
}

/// Every address stored in `slots` with its id, and the number of
/// tombstones (no shape needed: a scan reads every slot).
pub fn scan(slots: &[AtomicU64]) -> (Vec<([u8; 4], u32)>, usize) {
    let mut out = Vec::new();
    let mut tombstones = 0;
    for s in slots {
        let (a, tag) = unpack(s.load(Ordering::Acquire));
        match tag {
            EMPTY => {}
            TOMBSTONE => tombstones += 1,
            t => out.push((a, t - FIRST_ID)),
        }
    }
    (out, tombstones)
}

/// The three words of an IPv6 slot.
fn pack6(addr: [u8; 16], tag: u32) -> [u64; 3] {
    let t = tag.to_ne_bytes();
    [
        u64::from_ne_bytes(addr[..8].try_into().unwrap_or_default()),
        u64::from_ne_bytes(addr[8..].try_into().unwrap_or_default()),
        u64::from_ne_bytes([t[0], t[1], t[2], t[3], 0, 0, 0, 0]),
    ]
}

fn tag6(word: u64) -> u32 {
    let b = word.to_ne_bytes();
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn addr6(w0: u64, w1: u64) -> [u8; 16] {
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
        (words.len() == 3 * shape.slots() && shape.bits > 0 && shape.bits < 32 && shape.max_probe > 0)
            .then_some(Table6 { words, shape })
    }

    fn slot(&self, i: usize) -> (u64, u64, u32) {
        let w = &self.words[3 * i..3 * i + 3];
        // The tag first, as the program reads it.
        let tag = tag6(w[2].load(Ordering::Acquire));
        (w[0].load(Ordering::Relaxed), w[1].load(Ordering::Relaxed), tag)
    }

    fn probe(&self, addr: [u8; 16]) -> impl Iterator<Item = (usize, [u8; 16], u32)> + '_ {
        let home = self.shape.home6(addr);
        let mask = self.shape.slots() - 1;
        (0..self.shape.max_probe as usize).map(move |i| {
            let at = (home + i) & mask;
            let (w0, w1, tag) = self.slot(at);
            (at, addr6(w0, w1), tag)
        })
    }

    /// The rule id stored for `addr`.
    #[cfg(test)]
    pub fn get(&self, addr: [u8; 16]) -> Option<u32> {
        for (_, a, tag) in self.probe(addr) {
            if tag == EMPTY {
                return None;
            }
            if tag >= FIRST_ID && a == addr {
                return Some(tag - FIRST_ID);
            }
        }
        None
    }

    /// Stores `addr` with `id`: in its slot if it is there, else in the
    /// first empty slot (never a tombstone: see the module comment).
    pub fn insert(&self, addr: [u8; 16], id: u32) -> Result<(), Overflow> {
        for (at, a, tag) in self.probe(addr) {
            if tag >= FIRST_ID && a == addr {
                self.words[3 * at + 2].store(pack6(addr, id + FIRST_ID)[2], Ordering::Release);
                return Ok(());
            }
            if tag == EMPTY {
                let w = pack6(addr, id + FIRST_ID);
                self.words[3 * at].store(w[0], Ordering::Relaxed);
                self.words[3 * at + 1].store(w[1], Ordering::Relaxed);
                self.words[3 * at + 2].store(w[2], Ordering::Release);
                return Ok(());
            }
        }
        Err(Overflow)
    }

    /// Removes `addr`; whether it was there.
    pub fn remove(&self, addr: [u8; 16]) -> bool {
        for (at, a, tag) in self.probe(addr) {
            if tag == EMPTY {
                return false;
            }
            if tag >= FIRST_ID && a == addr {
                self.words[3 * at + 2].store(pack6(addr, TOMBSTONE)[2], Ordering::Release);
                return true;
            }
        }
        false
    }
}

/// Every address stored in an IPv6 table's words with its id, and the
/// number of tombstones.
pub fn scan6(words: &[AtomicU64]) -> (Vec<([u8; 16], u32)>, usize) {
    let mut out = Vec::new();
    let mut tombstones = 0;
    for w in words.chunks_exact(3) {
        match tag6(w[2].load(Ordering::Acquire)) {
            EMPTY => {}
            TOMBSTONE => tombstones += 1,
            t => out.push((addr6(w[0].load(Ordering::Relaxed), w[1].load(Ordering::Relaxed)), t - FIRST_ID)),
        }
    }
    (out, tombstones)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(bits: u32) -> Shape {
        Shape { bits, seed: 0x1234_5678, max_probe: 32, mul: 2_654_435_769 }
    }

    fn slots(bits: u32) -> Vec<AtomicU64> {
        (0..1usize << bits).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn inserted_addresses_are_found_and_removed_ones_are_not() {
        let mem = slots(10);
        let t = Table::new(&mem, shape(10)).unwrap();
        t.insert([192, 0, 2, 10], 7).unwrap();
        t.insert([192, 0, 2, 11], 8).unwrap();
        assert_eq!(t.get([192, 0, 2, 10]), Some(7));
        assert!(t.remove([192, 0, 2, 10]));
        assert!(!t.remove([192, 0, 2, 10]));
        assert_eq!(t.get([192, 0, 2, 10]), None);
        assert_eq!(t.get([192, 0, 2, 11]), Some(8));
        t.insert([192, 0, 2, 10], 9).unwrap();
        assert_eq!(t.get([192, 0, 2, 10]), Some(9));
        let (all, tombs) = scan(&mem);
        assert_eq!(all.len(), 2);
        assert!(tombs <= 1);
    }

    #[test]
    fn an_address_is_stored_once_even_behind_a_tombstone() {
        let mem = slots(10);
        // All three share a home slot when the table has one bit of index.
        let s = Shape { bits: 10, seed: 0, max_probe: 32, mul: 0 };
        let t = Table::new(&mem, s).unwrap();
        t.insert([10, 0, 0, 1], 1).unwrap();
        t.insert([10, 0, 0, 2], 2).unwrap();
        assert!(t.remove([10, 0, 0, 1]));
        // 10.0.0.2 sits after the tombstone: re-inserting it must not
        // create a second copy in the tombstone.
        t.insert([10, 0, 0, 2], 3).unwrap();
        let (all, _) = scan(&mem);
        assert_eq!(all, vec![([10, 0, 0, 2], 3)]);
    }

    #[test]
    fn the_probe_bound_is_never_exceeded() {
        let mem = slots(10);
        let s = Shape { bits: 10, seed: 0, max_probe: 4, mul: 0 };
        let t = Table::new(&mem, s).unwrap();
        for i in 0..4 {
            t.insert([10, 0, 0, i], u32::from(i)).unwrap();
        }
        assert_eq!(t.insert([10, 0, 0, 9], 9), Err(Overflow));
        assert_eq!(t.get([10, 0, 0, 3]), Some(3));
    }

    #[test]
    fn a_million_sequential_addresses_fit_a_table_sized_for_them() {
        let bits = bits_for(1_500_000);
        let mem = slots(bits);
        let t = Table::new(&mem, shape(bits)).unwrap();
        for i in 0..1_000_000u32 {
            let a = (0x0a00_0000 + i).to_be_bytes();
            t.insert(a, i).unwrap_or_else(|_| panic!("overflow at {i}"));
        }
        assert_eq!(t.get((0x0a00_0000u32 + 999_999).to_be_bytes()), Some(999_999));
    }

    #[test]
    fn ipv6_addresses_are_found_removed_and_never_revived_in_a_tombstone() {
        let bits = 10;
        let mem: Vec<AtomicU64> = (0..3usize << bits).map(|_| AtomicU64::new(0)).collect();
        let t = Table6::new(&mem, shape(bits)).unwrap();
        let a: [u8; 16] = "2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let b: [u8; 16] = "2001:db8::11".parse::<std::net::Ipv6Addr>().unwrap().octets();
        t.insert(a, 4).unwrap();
        t.insert(b, 5).unwrap();
        assert_eq!((t.get(a), t.get(b)), (Some(4), Some(5)));
        assert!(t.remove(a));
        assert_eq!(t.get(a), None);
        t.insert(a, 6).unwrap();
        assert_eq!(t.get(a), Some(6));
        let (all, tombs) = scan6(&mem);
        assert_eq!(all.len(), 2);
        assert_eq!(tombs, 1, "the tombstone stays until a rebuild");
        assert_eq!(std::mem::size_of::<types::ig_v6_slot>(), 24);
    }

    #[test]
    fn the_ipv6_hash_folds_words_as_the_program_does() {
        let s = Shape { bits: 16, seed: 7, max_probe: 32, mul: 2_654_435_769 };
        let a = [0u8; 16];
        let mut h: u32 = 7;
        for _ in 0..4 {
            h = h.wrapping_mul(2_654_435_769);
        }
        assert_eq!(s.home6(a), (h >> 16) as usize);
    }

    #[test]
    fn the_layout_is_address_then_tag() {
        let w = pack([192, 0, 2, 1], 5);
        assert_eq!(&w.to_ne_bytes()[..4], &[192, 0, 2, 1]);
        assert_eq!(unpack(w), ([192, 0, 2, 1], 5));
        assert_eq!(std::mem::size_of::<types::ig_v4_slot>(), 8);
    }
}
