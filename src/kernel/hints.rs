//! The hints (bpf/icmpguard.h, enum ig_hint): for each bucket of addresses
//! of a family, one byte saying which lookups can match there, so that the
//! programs skip the probes that cannot. An entry sets its bit in every
//! bucket it covers before it is written; bits are cleared only by building
//! a new generation (a stale bit costs a probe, a missing one would leave an
//! entry unenforced).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::addr::{PerFamily, Prefix};
use crate::kernel::maps::TABLE_LENS;
use crate::skel::types;

/// Buckets of a part: 2^IG_HINT_BITS.
pub const BUCKETS: usize = 1 << types::ig_abi::IG_HINT_BITS.0;
/// Words of the `hints` map per part (eight buckets a word).
pub const PART_WORDS: usize = BUCKETS / 8;
/// Words of the `hints` map: three parts.
pub const WORDS: usize = 3 * PART_WORDS;
/// The prefix lengths of the two IPv6 parts.
const V6_LONG: u8 = types::ig_abi::IG_HINT_V6_LONG.0 as u8;
const V6_SHORT: u8 = types::ig_abi::IG_HINT_V6_SHORT.0 as u8;
/// Bits 1 to TABLE_LENS of a bucket are IG_HINT_LEN << k.
const _: () = assert!(types::ig_hint::IG_HINT_LEN.0 << TABLE_LENS <= types::ig_hint::IG_HINT_TRIE.0);

/// The multiplier of the IPv6 bucket hash (IG_HASH_MUL of the header,
/// passed in from the skeleton's constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mul(pub u64);

/// The parts of the hints (bpf/icmpguard.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    V4,
    /// IPv6 by /48.
    V6Long,
    /// IPv6 by /32.
    V6Short,
}

impl Part {
    fn base(self) -> usize {
        self as usize * PART_WORDS
    }
}

/// The bucket of an address in `part` (`addr`: its bytes, 4 or 16).
pub fn bucket(part: Part, addr: &[u8], mul: Mul) -> usize {
    let v6 = |len: u8| {
        let mut first = [0u8; 8];
        let keep = usize::from(len / 8);
        first[..keep].copy_from_slice(&addr[..keep]);
        (u64::from_ne_bytes(first).wrapping_mul(mul.0) >> (64 - types::ig_abi::IG_HINT_BITS.0)) as usize
    };
    match part {
        Part::V4 => usize::from(u16::from_ne_bytes([addr[0], addr[1]])),
        Part::V6Long => v6(V6_LONG),
        Part::V6Short => v6(V6_SHORT),
    }
}

/// The prefix lengths of the tables (Layout::lens).
pub type Lens = PerFamily<[u8; TABLE_LENS]>;

/// The hint bits of an entry when the tables hold `lens`: exact, table
/// length k, or trie; and IG_HINT_ALLOW for an allow entry.
pub fn bit(p: &Prefix, allow: bool, lens: &Lens) -> u8 {
    let (family, len) = (p.family(), p.prefix_len());
    let kind = if len == family.exact_len() {
        types::ig_hint::IG_HINT_EXACT.0
    } else {
        match lens[family].iter().position(|l| *l == len) {
            Some(k) => types::ig_hint::IG_HINT_LEN.0 << k,
            None => types::ig_hint::IG_HINT_TRIE.0,
        }
    };
    (kind | if allow { types::ig_hint::IG_HINT_ALLOW.0 } else { 0 }) as u8
}

/// The buckets an entry covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buckets {
    One(Part, usize),
    /// IPv4 prefixes shorter than /16: the /16s from `first` (as a number),
    /// `count` of them.
    V4Range {
        first: u32,
        count: u32,
    },
    /// Every bucket of a part (IPv6 prefixes shorter than /32).
    All(Part),
}

pub fn buckets(p: &Prefix, mul: Mul) -> Buckets {
    match *p {
        Prefix::V4 { addr, len } if len < 16 => {
            let o = addr.octets();
            Buckets::V4Range { first: u32::from(o[0]) << 8 | u32::from(o[1]), count: 1 << (16 - len) }
        }
        Prefix::V4 { addr, .. } => Buckets::One(Part::V4, bucket(Part::V4, &addr.octets(), mul)),
        Prefix::V6 { len, .. } if len < V6_SHORT => Buckets::All(Part::V6Short),
        Prefix::V6 { addr, len } if len < V6_LONG => {
            Buckets::One(Part::V6Short, bucket(Part::V6Short, &addr.octets(), mul))
        }
        Prefix::V6 { addr, .. } => Buckets::One(Part::V6Long, bucket(Part::V6Long, &addr.octets(), mul)),
    }
}

/// The IPv4 bucket of the `n`-th /16.
fn v4_bucket_of(n: u32) -> usize {
    usize::from(u16::from_ne_bytes([(n >> 8) as u8, n as u8]))
}

/// The hint words, as the `hints` map holds them.
pub struct Hints<'a> {
    words: &'a [AtomicU64],
    mul: Mul,
}

impl<'a> Hints<'a> {
    /// `None` when `words` is not the map's size.
    pub fn new(words: &'a [AtomicU64], mul: Mul) -> Option<Hints<'a>> {
        (words.len() == WORDS).then_some(Hints { words, mul })
    }

    fn set_one(&self, part: Part, bucket: usize, bit: u8) {
        let word = &self.words[part.base() + bucket / 8];
        let b = u64::from(bit) << ((bucket % 8) * 8);
        if word.load(Ordering::Relaxed) & b != b {
            word.fetch_or(b, Ordering::SeqCst);
        }
    }

    fn has(&self, part: Part, bucket: usize, bit: u8) -> bool {
        self.words[part.base() + bucket / 8].load(Ordering::Relaxed) >> ((bucket % 8) * 8) & u64::from(bit)
            == u64::from(bit)
    }

    /// Sets the bits of `entries` (each with whether it allows) in every
    /// bucket they cover.
    pub fn set<'p>(&self, entries: impl Iterator<Item = (&'p Prefix, bool)>, lens: &Lens) {
        // An entry that covers every bucket is written once per bit.
        let mut everywhere: BTreeSet<(Part, u8)> = BTreeSet::new();
        for (p, allow) in entries {
            let bit = bit(p, allow, lens);
            match buckets(p, self.mul) {
                Buckets::One(part, b) => self.set_one(part, b, bit),
                Buckets::V4Range { first, count } => {
                    for n in first..first + count {
                        self.set_one(Part::V4, v4_bucket_of(n), bit);
                    }
                }
                Buckets::All(part) => {
                    everywhere.insert((part, bit));
                }
            }
        }
        for (part, bit) in everywhere {
            let all = u64::from(bit) * 0x0101_0101_0101_0101;
            for w in &self.words[part.base()..part.base() + PART_WORDS] {
                if w.load(Ordering::Relaxed) & all != all {
                    w.fetch_or(all, Ordering::SeqCst);
                }
            }
        }
    }

    /// Whether every bucket `p` covers has its bits: whether the programs
    /// look where it is.
    pub fn covers(&self, p: &Prefix, allow: bool, lens: &Lens) -> bool {
        let bit = bit(p, allow, lens);
        match buckets(p, self.mul) {
            Buckets::One(part, b) => self.has(part, b, bit),
            Buckets::V4Range { first, count } => {
                (first..first + count).all(|n| self.has(Part::V4, v4_bucket_of(n), bit))
            }
            Buckets::All(part) => (0..BUCKETS).all(|b| self.has(part, b, bit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::maps::NO_LEN;

    const MUL: Mul = Mul(0x9E37_79B9_7F4A_7C15);

    fn layout(v4: [u8; TABLE_LENS], v6: [u8; TABLE_LENS]) -> Lens {
        PerFamily { v4, v6 }
    }

    fn words() -> Vec<AtomicU64> {
        (0..WORDS).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn an_entry_sets_its_bit_where_its_addresses_are_and_nowhere_else() {
        let l = layout([24, NO_LEN, NO_LEN, NO_LEN], [64, NO_LEN, NO_LEN, NO_LEN]);
        let w = words();
        let h = Hints::new(&w, MUL).unwrap();
        let entries: Vec<Prefix> = [
            "192.0.2.10",
            "198.51.100.0/24",
            "10.0.0.0/8",
            "2001:db8::1",
            "2001:db8:1::/64",
            "3fff::/20",
            "2001:db8:8000::/36",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        h.set(entries.iter().map(|p| (p, false)), &l);
        for p in &entries {
            assert!(h.covers(p, false, &l), "{p}");
            assert!(!h.covers(p, true, &l), "{p} is no allow entry");
        }
        let allowed: Prefix = "203.0.113.7".parse().unwrap();
        h.set(std::iter::once((&allowed, true)), &l);
        assert!(h.covers(&allowed, true, &l));
        let byte = |part: Part, a: &[u8]| {
            let b = bucket(part, a, MUL);
            (w[part.base() + b / 8].load(Ordering::Relaxed) >> ((b % 8) * 8)) as u8
        };
        // What the programs read: the IPv4 byte, or the two IPv6 ones ORed.
        let v6 = |s: &str| {
            let a = s.parse::<std::net::Ipv6Addr>().unwrap().octets();
            byte(Part::V6Long, &a) | byte(Part::V6Short, &a)
        };
        assert_eq!(byte(Part::V4, &[192, 0, 2, 99]), 1, "exact: the /16 of 192.0.2.10");
        assert_eq!(byte(Part::V4, &[198, 51, 7, 1]), 2, "table length 0 (/24)");
        assert_eq!(byte(Part::V4, &[10, 200, 0, 1]), 1 << 5, "the trie (/8): every /16 of 10/8");
        assert_eq!(byte(Part::V4, &[11, 0, 0, 1]), 0);
        assert_eq!(byte(Part::V4, &[203, 0, 113, 1]), 1 | 1 << 6, "exact and allow: 203.0.113.7");
        assert_eq!(byte(Part::V4, &[203, 1, 0, 1]), 0);
        // 3fff::/20 is shorter than /32: the trie bit everywhere.
        assert_eq!(v6("2001:db8:ffff::1"), 1 << 5);
        assert_eq!(v6("2001:db8::99"), 1 | 1 << 5, "the same /48 as 2001:db8::1");
        assert_eq!(v6("2001:db8:1::5"), 2 | 1 << 5, "the /48 of 2001:db8:1::/64");
    }

    #[test]
    fn the_ipv6_buckets_are_those_of_the_48_and_the_32() {
        let a6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let (a, b, c) = (a6("2001:db8:1:2::1"), a6("2001:db8:1:ffff::1"), a6("2001:db8:ffff::1"));
        assert_eq!(bucket(Part::V6Long, &a, MUL), bucket(Part::V6Long, &b, MUL));
        assert_ne!(bucket(Part::V6Long, &a, MUL), bucket(Part::V6Long, &c, MUL));
        assert_eq!(bucket(Part::V6Short, &a, MUL), bucket(Part::V6Short, &c, MUL));
        assert!(bucket(Part::V6Long, &a, MUL) < BUCKETS);
    }

    #[test]
    fn a_missing_bit_is_seen() {
        let l = layout([NO_LEN; TABLE_LENS], [NO_LEN; TABLE_LENS]);
        let w = words();
        let h = Hints::new(&w, MUL).unwrap();
        let p: Prefix = "172.16.0.0/12".parse().unwrap();
        h.set(std::iter::once((&p, false)), &l);
        assert!(h.covers(&p, false, &l));
        w[usize::from(u16::from_ne_bytes([172, 31])) / 8].store(0, Ordering::Relaxed);
        assert!(!h.covers(&p, false, &l), "the last /16 of 172.16/12 lost its bit");
    }
}
