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

use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::addr::{Family, Prefix};
use crate::skel::types;

const EMPTY: u32 = types::ig_slot_tag::IG_SLOT_EMPTY.0;
const TOMBSTONE: u32 = types::ig_slot_tag::IG_SLOT_TOMBSTONE.0;
const FIRST_ID: u32 = types::ig_slot_tag::IG_SLOT_FIRST_ID.0;

/// The shape of a table: 2^bits slots and a hash seed; the probe bound,
/// the hash multiplier and the IPv4 tag's length bits come from the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub bits: u32,
    pub seed: u32,
    pub max_probe: u32,
    pub mul: u64,
    pub len_bits: u32,
}

impl Shape {
    /// The slot where the search for (key, len) starts, as
    /// bpf/icmpguard.h defines it: IPv4 (4 bytes) the address and the
    /// seed, then the length, in one multiplication; IPv6 (16 bytes) the
    /// two 8-byte words of the address in memory order, then the length,
    /// in two.
    pub fn home(&self, key: &[u8], len: u8) -> usize {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_ne_bytes(w)
        };
        let h = if key.len() == 4 {
            let a = u32::from_ne_bytes([key[0], key[1], key[2], key[3]]) ^ self.seed;
            (u64::from(a) << 32 | u64::from(len)).wrapping_mul(self.mul)
        } else {
            let seed = u64::from(self.seed) << 32 | u64::from(self.seed);
            let h = (word(&key[..8]) ^ seed).wrapping_mul(self.mul);
            (h ^ word(&key[8..16]) ^ u64::from(len)).wrapping_mul(self.mul)
        };
        (h >> (64 - self.bits)) as usize
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

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    Tombstone,
    Rule { len: u8, id: u32 },
}

/// How one family's table lays out a slot (bpf/icmpguard.h): all that
/// differs between the IPv4 and the IPv6 table.
pub trait Slots {
    type Key: Copy + Eq + AsRef<[u8]> + std::fmt::Debug;
    const FAMILY: Family;
    /// 8-byte words a slot takes.
    const WORDS: usize;
    /// Whether a deleted slot may take a new entry: only where a slot is
    /// written in one store.
    const REUSES_TOMBSTONES: bool;

    /// The key and the prefix length of a prefix of this family.
    fn key(p: &Prefix) -> Option<(Self::Key, u8)>;
    fn prefix(key: Self::Key, len: u8) -> Option<Prefix>;
    /// Reads a slot, its tag first, as the programs do.
    fn read(w: &[AtomicU64], len_bits: u32) -> (Self::Key, State);
    /// Writes a rule into an empty slot (or one that may be reused), or
    /// changes the id where it is already stored (`own`).
    fn write(w: &[AtomicU64], key: Self::Key, len: u8, id: u32, len_bits: u32, own: bool);
    /// Turns the rule's slot into a tombstone.
    fn bury(w: &[AtomicU64], key: Self::Key, len: u8);
}

/// IPv4: one 8-byte word, address then tag ((id + 1) << len_bits | len),
/// written in one store.
pub struct V4;

impl V4 {
    fn word(key: [u8; 4], tag: u32) -> u64 {
        let t = tag.to_ne_bytes();
        u64::from_ne_bytes([key[0], key[1], key[2], key[3], t[0], t[1], t[2], t[3]])
    }
}

impl Slots for V4 {
    type Key = [u8; 4];
    const FAMILY: Family = Family::V4;
    const WORDS: usize = 1;
    const REUSES_TOMBSTONES: bool = true;

    fn key(p: &Prefix) -> Option<([u8; 4], u8)> {
        match *p {
            Prefix::V4 { addr, len } => Some((addr.octets(), len)),
            Prefix::V6 { .. } => None,
        }
    }

    fn prefix(key: [u8; 4], len: u8) -> Option<Prefix> {
        (len <= 32).then(|| Prefix::containing(Ipv4Addr::from(key).into(), len))
    }

    fn read(w: &[AtomicU64], len_bits: u32) -> ([u8; 4], State) {
        let b = w[0].load(Ordering::Acquire).to_ne_bytes();
        let tag = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        let state = match tag {
            EMPTY => State::Empty,
            TOMBSTONE => State::Tombstone,
            t => State::Rule { len: (t & ((1 << len_bits) - 1)) as u8, id: (t >> len_bits).wrapping_sub(1) },
        };
        ([b[0], b[1], b[2], b[3]], state)
    }

    fn write(w: &[AtomicU64], key: [u8; 4], len: u8, id: u32, len_bits: u32, _own: bool) {
        w[0].store(V4::word(key, (id + 1) << len_bits | u32::from(len)), Ordering::Release);
    }

    fn bury(w: &[AtomicU64], key: [u8; 4], _len: u8) {
        w[0].store(V4::word(key, TOMBSTONE), Ordering::Release);
    }
}

/// IPv6: three words, the address, then the tag (id + FIRST_ID) and the
/// length in one word, written last; a slot is filled only while empty.
pub struct V6;

impl V6 {
    fn tag_word(tag: u32, len: u8) -> u64 {
        let (t, l) = (tag.to_ne_bytes(), u32::from(len).to_ne_bytes());
        u64::from_ne_bytes([t[0], t[1], t[2], t[3], l[0], l[1], l[2], l[3]])
    }
}

impl Slots for V6 {
    type Key = [u8; 16];
    const FAMILY: Family = Family::V6;
    const WORDS: usize = 3;
    const REUSES_TOMBSTONES: bool = false;

    fn key(p: &Prefix) -> Option<([u8; 16], u8)> {
        match *p {
            Prefix::V6 { addr, len } => Some((addr.octets(), len)),
            Prefix::V4 { .. } => None,
        }
    }

    fn prefix(key: [u8; 16], len: u8) -> Option<Prefix> {
        (len <= 128).then(|| Prefix::containing(Ipv6Addr::from(key).into(), len))
    }

    fn read(w: &[AtomicU64], _len_bits: u32) -> ([u8; 16], State) {
        // The tag first: once it names a rule, the address is written.
        let b = w[2].load(Ordering::Acquire).to_ne_bytes();
        let tag = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let len = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as u8;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&w[0].load(Ordering::Relaxed).to_ne_bytes());
        key[8..].copy_from_slice(&w[1].load(Ordering::Relaxed).to_ne_bytes());
        let state = match tag {
            EMPTY => State::Empty,
            TOMBSTONE => State::Tombstone,
            t => State::Rule { len, id: t - FIRST_ID },
        };
        (key, state)
    }

    fn write(w: &[AtomicU64], key: [u8; 16], len: u8, id: u32, _len_bits: u32, own: bool) {
        if !own {
            let (a, b) = key.split_at(8);
            w[0].store(u64::from_ne_bytes(a.try_into().unwrap_or_default()), Ordering::Relaxed);
            w[1].store(u64::from_ne_bytes(b.try_into().unwrap_or_default()), Ordering::Relaxed);
        }
        w[2].store(V6::tag_word(id + FIRST_ID, len), Ordering::Release);
    }

    fn bury(w: &[AtomicU64], _key: [u8; 16], len: u8) {
        w[2].store(V6::tag_word(TOMBSTONE, len), Ordering::Release);
    }
}

/// Operations on the slots of one family's mapped table.
pub struct Table<'a, F: Slots> {
    words: &'a [AtomicU64],
    shape: Shape,
    family: PhantomData<F>,
}

impl<'a, F: Slots> Table<'a, F> {
    /// `words` must hold exactly `F::WORDS * shape.slots()` words.
    pub fn new(words: &'a [AtomicU64], shape: Shape) -> Option<Table<'a, F>> {
        (words.len() == F::WORDS * shape.slots() && shape.valid()).then_some(Table {
            words,
            shape,
            family: PhantomData,
        })
    }

    fn slot(&self, at: usize) -> &[AtomicU64] {
        &self.words[F::WORDS * at..F::WORDS * (at + 1)]
    }

    /// The slots a lookup of (key, len) may visit: at most the probe bound.
    fn probe(&self, key: F::Key, len: u8) -> impl Iterator<Item = (usize, F::Key, State)> + '_ {
        let home = self.shape.home(key.as_ref(), len);
        let mask = self.shape.slots() - 1;
        (0..self.shape.max_probe as usize).map(move |i| {
            let at = (home + i) & mask;
            let (k, state) = F::read(self.slot(at), self.shape.len_bits);
            (at, k, state)
        })
    }

    /// The rule id stored for (key, len).
    #[cfg(test)]
    pub fn get(&self, key: F::Key, len: u8) -> Option<u32> {
        for (_, k, state) in self.probe(key, len) {
            match state {
                State::Empty => return None,
                State::Rule { len: l, id } if k == key && l == len => return Some(id),
                _ => {}
            }
        }
        None
    }

    /// Stores (key, len) with `id`, replacing the id if it is there.
    pub fn insert(&self, key: F::Key, len: u8, id: u32) -> Result<(), Overflow> {
        let mut free = None;
        for (at, k, state) in self.probe(key, len) {
            match state {
                State::Rule { len: l, .. } if k == key && l == len => {
                    F::write(self.slot(at), key, len, id, self.shape.len_bits, true);
                    return Ok(());
                }
                State::Tombstone if F::REUSES_TOMBSTONES && free.is_none() => free = Some(at),
                State::Empty => {
                    free = free.or(Some(at));
                    break;
                }
                _ => {}
            }
        }
        let at = free.ok_or(Overflow)?;
        F::write(self.slot(at), key, len, id, self.shape.len_bits, false);
        Ok(())
    }

    /// Removes (key, len); whether it was there.
    pub fn remove(&self, key: F::Key, len: u8) -> bool {
        for (at, k, state) in self.probe(key, len) {
            match state {
                State::Empty => return false,
                State::Rule { len: l, .. } if k == key && l == len => {
                    F::bury(self.slot(at), key, len);
                    return true;
                }
                _ => {}
            }
        }
        false
    }
}

/// Every entry of a table's words as (key, len, id), and the number of
/// tombstones (no shape needed but the IPv4 tag's length bits).
pub fn scan<F: Slots>(words: &[AtomicU64], len_bits: u32) -> (Vec<(F::Key, u8, u32)>, usize) {
    let mut out = Vec::new();
    let mut tombstones = 0;
    for w in words.chunks_exact(F::WORDS) {
        match F::read(w, len_bits) {
            (key, State::Rule { len, id }) => out.push((key, len, id)),
            (_, State::Tombstone) => tombstones += 1,
            (_, State::Empty) => {}
        }
    }
    (out, tombstones)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(bits: u32) -> Shape {
        Shape { bits, seed: 0x1234_5678, max_probe: 32, mul: 0x9E37_79B9_7F4A_7C15, len_bits: 6 }
    }

    fn slots(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn inserted_entries_are_found_by_key_and_length_and_removed_ones_are_not() {
        let mem = slots(1 << 10);
        let t = Table::<V4>::new(&mem, shape(10)).unwrap();
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
        let (all, tombs) = scan::<V4>(&mem, 6);
        assert_eq!(all.len(), 3);
        assert!(all.contains(&([198, 51, 100, 0], 24, 8)));
        assert!(tombs <= 1);
    }

    #[test]
    fn an_entry_is_stored_once_even_behind_a_tombstone() {
        let mem = slots(1 << 10);
        // All share a home slot with a zero multiplier.
        let s = Shape { mul: 0, ..shape(10) };
        let t = Table::<V4>::new(&mem, s).unwrap();
        t.insert([10, 0, 0, 1], 32, 1).unwrap();
        t.insert([10, 0, 0, 2], 32, 2).unwrap();
        assert!(t.remove([10, 0, 0, 1], 32));
        // 10.0.0.2 sits after the tombstone: re-inserting it must not
        // create a second copy in the tombstone.
        t.insert([10, 0, 0, 2], 32, 3).unwrap();
        let (all, _) = scan::<V4>(&mem, 6);
        assert_eq!(all, vec![([10, 0, 0, 2], 32, 3)]);
    }

    #[test]
    fn the_probe_bound_is_never_exceeded() {
        let mem = slots(1 << 10);
        let s = Shape { mul: 0, max_probe: 4, ..shape(10) };
        let t = Table::<V4>::new(&mem, s).unwrap();
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
        let t = Table::<V4>::new(&mem, shape(bits)).unwrap();
        for i in 0..1_000_000u32 {
            t.insert((0x0a00_0000 + i).to_be_bytes(), 32, i).unwrap_or_else(|_| panic!("overflow at {i}"));
        }
        assert_eq!(t.get((0x0a00_0000u32 + 999_999).to_be_bytes(), 32), Some(999_999));
    }

    #[test]
    fn ipv6_entries_are_found_removed_and_never_revived_in_a_tombstone() {
        let bits = 10;
        let mem = slots(3 << bits);
        let t = Table::<V6>::new(&mem, shape(bits)).unwrap();
        let a: [u8; 16] = "2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let net: [u8; 16] = "2001:db8::".parse::<std::net::Ipv6Addr>().unwrap().octets();
        t.insert(a, 128, 4).unwrap();
        t.insert(net, 64, 5).unwrap();
        assert_eq!((t.get(a, 128), t.get(net, 64), t.get(net, 48)), (Some(4), Some(5), None));
        assert!(t.remove(a, 128));
        assert_eq!(t.get(a, 128), None);
        t.insert(a, 128, 6).unwrap();
        assert_eq!(t.get(a, 128), Some(6));
        let (all, tombs) = scan::<V6>(&mem, 6);
        assert_eq!(all.len(), 2);
        assert!(all.contains(&(net, 64, 5)));
        assert_eq!(tombs, 1, "the tombstone stays until a rebuild");
        assert_eq!(std::mem::size_of::<types::ig_v6_slot>(), 24);
    }

    #[test]
    fn the_layout_is_address_then_tag() {
        let w = [AtomicU64::new(V4::word([192, 0, 2, 1], 5 << 6 | 24))];
        assert_eq!(&w[0].load(Ordering::Relaxed).to_ne_bytes()[..4], &[192, 0, 2, 1]);
        assert_eq!(V4::read(&w, 6), ([192, 0, 2, 1], State::Rule { len: 24, id: 4 }));
        assert_eq!(std::mem::size_of::<types::ig_v4_slot>(), 8 * V4::WORDS);
        assert_eq!(std::mem::size_of::<types::ig_v6_slot>(), 8 * V6::WORDS);
    }
}
