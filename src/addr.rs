//! Addresses and prefixes as the blocklist knows them.
//!
//! A [`Prefix`] is always canonical: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is
//! the IPv4 address, host bits are never set, and an exact address is a
//! prefix of full length. The rest of the program never sees a string.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 address with a prefix length; exact addresses have the
/// full length (32 or 128).
///
/// Prefixes sort IPv4 before IPv6, then by address, then by length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    V4 { addr: Ipv4Addr, len: u8 },
    V6 { addr: Ipv6Addr, len: u8 },
}

/// An address family. What differs between IPv4 and IPv6 on the kernel
/// side is said once per family, here and in kernel::table's slot layouts;
/// the rest is written once for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The prefix length of a single address.
    pub fn exact_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One value per address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerFamily<T> {
    pub v4: T,
    pub v6: T,
}

impl<T> PerFamily<T> {
    pub fn from_fn(mut f: impl FnMut(Family) -> T) -> PerFamily<T> {
        PerFamily { v4: f(Family::V4), v6: f(Family::V6) }
    }
}

impl<T> std::ops::Index<Family> for PerFamily<T> {
    type Output = T;
    fn index(&self, f: Family) -> &T {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

impl<T> std::ops::IndexMut<Family> for PerFamily<T> {
    fn index_mut(&mut self, f: Family) -> &mut T {
        match f {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

/// Why a blocklist entry is not an address or prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrefixError {
    Empty,
    NotAnAddress(String),
    ZoneId(String),
    BadLength { text: String, max: u8 },
    HostBitsSet { text: String, network: Prefix },
    MappedTooShort(String),
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixError::Empty => write!(f, "empty address; remove the entry or write an address"),
            PrefixError::NotAnAddress(t) => write!(
                f,
                "\"{t}\" is not an IPv4 or IPv6 address or prefix (examples: \"192.0.2.10\", \"198.51.100.0/24\", \"2001:db8::/32\")"
            ),
            PrefixError::ZoneId(t) => write!(
                f,
                "\"{t}\" has a zone index; write the address without \"%...\" (the filter matches addresses on every guarded interface)"
            ),
            PrefixError::BadLength { text, max } => write!(
                f,
                "\"{text}\" has an invalid prefix length; it must be a number from 0 to {max}"
            ),
            PrefixError::HostBitsSet { text, network } => write!(
                f,
                "\"{text}\" has host bits set; did you mean \"{network}\"?"
            ),
            PrefixError::MappedTooShort(t) => write!(
                f,
                "\"{t}\" is an IPv4-mapped prefix shorter than /96; write the IPv4 prefix instead"
            ),
        }
    }
}

impl std::error::Error for PrefixError {}

fn mask_v4(addr: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(addr);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(addr: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
    Ipv6Addr::from(bits & mask)
}

impl Prefix {
    /// The order of prefixes as one tuple (`Ord` says the same in fewer
    /// instructions; the tests hold the two together).
    #[cfg(test)]
    fn sort_key(&self) -> (u8, u128, u8) {
        match *self {
            Prefix::V4 { addr, len } => (0, u128::from(u32::from(addr)), len),
            Prefix::V6 { addr, len } => (1, u128::from(addr), len),
        }
    }

    /// The prefix of `len` bits that contains `addr` (host bits cleared).
    /// IPv4-mapped IPv6 addresses become IPv4; `len` is clamped to the
    /// family's maximum.
    pub fn containing(addr: IpAddr, len: u8) -> Prefix {
        match addr {
            IpAddr::V4(a) => {
                let len = len.min(32);
                Prefix::V4 { addr: mask_v4(a, len), len }
            }
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => {
                    let len = len.saturating_sub(96).min(32);
                    Prefix::V4 { addr: mask_v4(v4, len), len }
                }
                None => {
                    let len = len.min(128);
                    Prefix::V6 { addr: mask_v6(a, len), len }
                }
            },
        }
    }

    /// The prefix of `len` bits (at most this prefix's) that contains this one.
    pub fn truncated(&self, len: u8) -> Prefix {
        match *self {
            Prefix::V4 { addr, len: l } => Prefix::V4 { addr: mask_v4(addr, len.min(l)), len: len.min(l) },
            Prefix::V6 { addr, len: l } => Prefix::V6 { addr: mask_v6(addr, len.min(l)), len: len.min(l) },
        }
    }

    /// An exact address: a prefix of full length.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix::containing(addr, 128)
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        match *self {
            Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => len,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Prefix::V4 { .. } => Family::V4,
            Prefix::V6 { .. } => Family::V6,
        }
    }

    pub fn is_v4(&self) -> bool {
        matches!(self, Prefix::V4 { .. })
    }

    /// Whether this is a single address (the whole length) rather than a
    /// range (`check` counts them apart; the kernel side decides where each
    /// lives by its length).
    pub fn is_exact(&self) -> bool {
        match *self {
            Prefix::V4 { len, .. } => len == 32,
            Prefix::V6 { len, .. } => len == 128,
        }
    }

    pub fn addr(&self) -> IpAddr {
        match *self {
            Prefix::V4 { addr, .. } => IpAddr::V4(addr),
            Prefix::V6 { addr, .. } => IpAddr::V6(addr),
        }
    }

    /// Whether `addr` lies inside this prefix (IPv4-mapped counts as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        addr.is_ipv4() == self.is_v4() && Prefix::containing(addr, self.prefix_len()) == *self
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

impl Ord for Prefix {
    /// As `sort_key` orders them, without widening IPv4 to 128 bits: a
    /// plan of ten million entries compares each once.
    fn cmp(&self, other: &Prefix) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Prefix::V4 { addr: a, len: l }, Prefix::V4 { addr: b, len: m }) => {
                (u32::from(*a), *l).cmp(&(u32::from(*b), *m))
            }
            (Prefix::V6 { addr: a, len: l }, Prefix::V6 { addr: b, len: m }) => {
                (u128::from(*a), *l).cmp(&(u128::from(*b), *m))
            }
            (Prefix::V4 { .. }, Prefix::V6 { .. }) => Ordering::Less,
            (Prefix::V6 { .. }, Prefix::V4 { .. }) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Prefix {
    fn partial_cmp(&self, other: &Prefix) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A plain dotted quad ("192.0.2.10") as the standard parser reads it (four
/// decimal parts of one to three digits, no leading zero, each at most
/// 255), in one pass; `None` for anything else, which then takes the
/// general way (and its error messages).
fn dotted_quad(b: &[u8]) -> Option<Ipv4Addr> {
    dotted_quad_at(b).and_then(|(addr, n)| (n == b.len()).then_some(addr))
}

/// The dotted quad at the start of `b`, and its length: what follows it
/// is neither a digit nor a dot.
pub fn dotted_quad_at(b: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u32 = 0;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            v = v * 10 + u32::from(d - b'0');
            i += 1;
            if i - start > 3 {
                return None;
            }
        }
        let digits = i - start;
        if digits == 0 || v > 255 || (digits > 1 && b[start] == b'0') {
            return None;
        }
        *octet = v as u8;
    }
    (b.get(i) != Some(&b'.')).then_some((Ipv4Addr::from(octets), i))
}

/// Sorts prefixes as `sort_unstable` does, in linear time for exact IPv4
/// addresses (see [`sort_into`]). An already sorted list is left as it is.
pub fn sort_prefixes(v: &mut Vec<Prefix>) {
    if v.is_sorted() {
        return;
    }
    let exact = v.iter().filter(|p| matches!(p, Prefix::V4 { len: 32, .. })).count();
    if exact < 1 << 16 {
        v.sort_unstable();
        return;
    }
    let mut keys: Vec<u32> = Vec::with_capacity(exact);
    let mut other: Vec<Prefix> = Vec::with_capacity(v.len() - exact);
    for p in v.iter() {
        match *p {
            Prefix::V4 { addr, len: 32 } => keys.push(u32::from(addr)),
            _ => other.push(*p),
        }
    }
    let high = keys.split_off(keys.len() / 2);
    sort_into([keys, high], other, v, false);
}

/// Exact IPv4 addresses (as integers, in two parts) and other prefixes,
/// in any order, as one sorted list in `out`, without duplicates if
/// `unique`: each part of the addresses by a radix sort of one word each,
/// the parts and the rest on threads of their own; ten million addresses
/// sort in a tenth of the time `sort_unstable` takes.
pub fn sort_into(keys: [Vec<u32>; 2], other: Vec<Prefix>, out: &mut Vec<Prefix>, unique: bool) {
    let (mut v4, mut v6): (Vec<Prefix>, Vec<Prefix>) = other.into_iter().partition(Prefix::is_v4);
    let [mut low, mut high] = keys;
    if low.len() + high.len() + v4.len() + v6.len() < PARALLEL_SORT {
        // A small list: threads would cost more than they save.
        radix_sort(&mut low);
        radix_sort(&mut high);
        v4.sort_unstable();
        v6.sort_unstable();
        return merge_sorted(&low, &high, v4, v6, out, unique);
    }
    let (low_sorted, sorted_aside) = std::thread::scope(|s| {
        let other = std::thread::Builder::new().spawn_scoped(s, || {
            v4.sort_unstable();
            v6.sort_unstable();
        });
        let low_sorted = std::thread::Builder::new().spawn_scoped(s, || radix_sort(&mut low));
        radix_sort(&mut high);
        (low_sorted.is_ok_and(|h| h.join().is_ok()), other.is_ok_and(|h| h.join().is_ok()))
    });
    // No thread to spare: one after the other.
    if !low_sorted {
        radix_sort(&mut low);
    }
    if !sorted_aside {
        v4.sort_unstable();
        v6.sort_unstable();
    }
    merge_sorted(&low, &high, v4, v6, out, unique);
}

/// Lists this long are sorted on threads ([`sort_into`]).
const PARALLEL_SORT: usize = 1 << 16;

/// The two sorted parts of exact IPv4 addresses, the other sorted IPv4
/// prefixes and the sorted IPv6 ones, as one sorted list in `out`.
fn merge_sorted(
    low: &[u32],
    high: &[u32],
    mut v4: Vec<Prefix>,
    mut v6: Vec<Prefix>,
    out: &mut Vec<Prefix>,
    unique: bool,
) {
    if unique {
        v4.dedup();
        v6.dedup();
    }
    out.clear();
    out.reserve(low.len() + high.len() + v4.len() + v6.len());
    // The two parts merged, and with them the other IPv4 entries, by
    // (address, length).
    let (mut i, mut j) = (0, 0);
    let mut last = None;
    let mut prefixes = v4.into_iter().peekable();
    while i < low.len() || j < high.len() {
        let k = if j >= high.len() || (i < low.len() && low[i] <= high[j]) {
            i += 1;
            low[i - 1]
        } else {
            j += 1;
            high[j - 1]
        };
        if unique && last == Some(k) {
            continue;
        }
        last = Some(k);
        let exact = Prefix::V4 { addr: Ipv4Addr::from(k), len: 32 };
        while let Some(p) = prefixes.next_if(|p| *p < exact) {
            out.push(p);
        }
        // An exact address written as a /32 prefix is this one.
        if unique && prefixes.peek() == Some(&exact) {
            prefixes.next();
        }
        out.push(exact);
    }
    out.extend(prefixes);
    out.extend(v6);
}

/// Least significant byte first; the counts of every byte are taken in one
/// pass, and a byte that all keys share is skipped.
fn radix_sort(keys: &mut [u32]) {
    let mut counts = [[0usize; 256]; 4];
    for k in keys.iter() {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((k >> (8 * d)) & 0xff) as usize] += 1;
        }
    }
    let mut scratch = vec![0u32; keys.len()];
    // Whether the sorted keys are in `scratch` (an odd number of passes).
    let mut in_scratch = false;
    for (d, c) in counts.iter_mut().enumerate() {
        if c.contains(&keys.len()) {
            continue;
        }
        let mut at = 0;
        for n in c.iter_mut() {
            (*n, at) = (at, at + *n);
        }
        let (from, to): (&[u32], &mut [u32]) = if in_scratch { (&scratch, keys) } else { (keys, &mut scratch) };
        for &k in from {
            let b = ((k >> (8 * d)) & 0xff) as usize;
            to[c[b]] = k;
            c[b] += 1;
        }
        in_scratch = !in_scratch;
    }
    if in_scratch {
        keys.copy_from_slice(&scratch);
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Prefix, PrefixError> {
        // Most entries of a large list are plain dotted quads.
        if let Some(addr) = dotted_quad(text.as_bytes()) {
            return Ok(Prefix::V4 { addr, len: 32 });
        }
        if text.is_empty() {
            return Err(PrefixError::Empty);
        }
        if text.contains('%') {
            return Err(PrefixError::ZoneId(text.to_string()));
        }
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| PrefixError::NotAnAddress(text.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            // Only plain decimal digits: "+24", " 24" or "024" are typos.
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                match l.parse::<u8>() {
                    Ok(n) if n <= max && (l.len() == 1 || !l.starts_with('0')) => n,
                    _ => {
                        return Err(PrefixError::BadLength { text: text.to_string(), max });
                    }
                }
            }
            Some(_) => return Err(PrefixError::BadLength { text: text.to_string(), max }),
        };
        if let IpAddr::V6(a) = addr {
            if a.to_ipv4_mapped().is_some() && len < 96 {
                return Err(PrefixError::MappedTooShort(text.to_string()));
            }
        }
        let prefix = Prefix::containing(addr, len);
        let unchanged = match (prefix, addr) {
            (Prefix::V4 { addr: p, .. }, IpAddr::V4(a)) => p == a,
            (Prefix::V4 { addr: p, .. }, IpAddr::V6(a)) => a.to_ipv4_mapped() == Some(p),
            (Prefix::V6 { addr: p, .. }, IpAddr::V6(a)) => p == a,
            (Prefix::V6 { .. }, IpAddr::V4(_)) => false,
        };
        if !unchanged {
            return Err(PrefixError::HostBitsSet { text: text.to_string(), network: prefix });
        }
        Ok(prefix)
    }
}

impl fmt::Display for Prefix {
    /// Exact addresses print without a length, prefixes with one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Prefix::V4 { addr, len: 32 } => write!(f, "{addr}"),
            Prefix::V6 { addr, len: 128 } => write!(f, "{addr}"),
            Prefix::V4 { addr, len } => write!(f, "{addr}/{len}"),
            Prefix::V6 { addr, len } => write!(f, "{addr}/{len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dotted_quad_fast_path_reads_exactly_what_the_standard_parser_reads() {
        let mut texts: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.10",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.256",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            ".1.2.3",
            "1..2.3",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.1000",
            "1.2.3.-1",
            "1.2.3.+1",
            "00.0.0.0",
            "0.0.0.00",
            "1.2.3.4/32",
            "",
            "....",
            "999.1.1.1",
            "1.2.3.4\n",
            "١.2.3.4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every byte at every place of a few quads, and random strings of
        // the characters that matter.
        for base in ["192.0.2.10", "1.0.0.1", "10.200.3.255"] {
            for at in 0..base.len() {
                for c in [b'0', b'9', b'.', b'/', b'a', b'x', b':', b' ', b'-'] {
                    let mut b = base.as_bytes().to_vec();
                    b[at] = c;
                    texts.push(String::from_utf8(b).unwrap());
                    let mut b = base.as_bytes().to_vec();
                    b.insert(at, c);
                    texts.push(String::from_utf8(b).unwrap());
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20000 {
            let n = (x % 16) as usize;
            let mut t = String::new();
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t.push(b"0123456789...25"[(x % 15) as usize] as char);
            }
            texts.push(t);
        }
        for t in &texts {
            let std: Option<Ipv4Addr> = t.parse().ok();
            assert_eq!(dotted_quad(t.as_bytes()), std, "{t:?}");
        }
    }

    #[test]
    fn the_order_is_family_then_address_then_length() {
        let list: Vec<Prefix> = [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.0.0.0",
            "10.0.0.1",
            "255.255.255.255",
            "::/0",
            "::1",
            "2001:db8::/32",
            "2001:db8::",
            "ffff::/16",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for a in &list {
            for b in &list {
                assert_eq!(a.cmp(b), a.sort_key().cmp(&b.sort_key()), "{a} {b}");
            }
        }
    }

    #[test]
    fn the_radix_sort_sorts_as_sort_unstable_does() {
        let mut v: Vec<Prefix> = Vec::new();
        let mut x: u32 = 12345;
        for i in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = [32, 32, 32, 24, 16, 0, 28][(i % 7) as usize];
            v.push(Prefix::containing(Ipv4Addr::from(x % 50_000).into(), len));
            if i % 7 == 0 {
                v.push(Prefix::containing(Ipv6Addr::from(u128::from(x) << 64).into(), 64));
            }
        }
        let mut want = v.clone();
        want.sort_unstable();
        sort_prefixes(&mut v);
        assert_eq!(v, want);
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn exact_addresses_have_full_length() {
        assert_eq!(p("192.0.2.10"), Prefix::V4 { addr: Ipv4Addr::new(192, 0, 2, 10), len: 32 });
        assert!(p("192.0.2.10").is_exact());
        assert!(p("2001:db8::1").is_exact());
        assert!(!p("198.51.100.0/24").is_exact());
        assert_eq!(p("192.0.2.10/32"), p("192.0.2.10"));
    }

    #[test]
    fn display_is_canonical() {
        for (input, shown) in [
            ("192.0.2.10", "192.0.2.10"),
            ("198.51.100.0/24", "198.51.100.0/24"),
            ("2001:DB8:0:0::1", "2001:db8::1"),
            ("2001:db8:dead::/48", "2001:db8:dead::/48"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("::ffff:198.51.100.0/120", "198.51.100.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::/0", "::/0"),
        ] {
            assert_eq!(p(input).to_string(), shown, "{input}");
        }
    }

    /// Two parts of exact addresses (duplicates within and across them)
    /// and other prefixes (an exact address written as a /32, an IPv4-
    /// mapped one) sort into one list, without duplicates when asked.
    #[test]
    fn addresses_in_two_parts_and_prefixes_sort_into_one_list() {
        let key = |t: &str| u32::from(t.parse::<Ipv4Addr>().unwrap());
        let low: Vec<u32> = ["192.0.2.9", "198.51.100.1", "192.0.2.9", "192.0.2.1"].iter().map(|t| key(t)).collect();
        let high: Vec<u32> = ["192.0.2.1", "203.0.113.5", "192.0.2.200"].iter().map(|t| key(t)).collect();
        let other: Vec<Prefix> =
            ["2001:db8::1", "192.0.2.0/24", "192.0.2.200/32", "::ffff:203.0.113.5", "2001:db8::1", "192.0.2.0/24"]
                .iter()
                .map(|t| p(t))
                .collect();
        let mut all: Vec<Prefix> =
            low.iter().chain(&high).map(|k| Prefix::V4 { addr: Ipv4Addr::from(*k), len: 32 }).collect();
        all.extend(&other);
        all.sort_unstable();
        let mut out = Vec::new();
        sort_into([low.clone(), high.clone()], other.clone(), &mut out, false);
        assert_eq!(out, all, "duplicates kept");
        all.dedup();
        sort_into([low, high], other, &mut out, true);
        assert_eq!(out, all, "without duplicates");
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        assert_eq!(p("::ffff:192.0.2.7"), p("192.0.2.7"));
        assert!(p("::ffff:192.0.2.7").is_v4());
        assert!(p("192.0.2.0/24").contains("::ffff:192.0.2.99".parse().unwrap()));
    }

    #[test]
    fn host_bits_are_refused_with_the_network_suggested() {
        let e = "192.0.2.1/24".parse::<Prefix>().unwrap_err();
        assert_eq!(e.to_string(), "\"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?");
        let e = "2001:db8:dead::1/48".parse::<Prefix>().unwrap_err();
        assert!(matches!(e, PrefixError::HostBitsSet { .. }), "{e}");
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "",
            "192.0.2",
            "192.0.2.300",
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2.0/",
            "192.0.2.0/+8",
            "192.0.2.0/08",
            "192.0.2.0/ 8",
            " 192.0.2.1",
            "192.0.2.1 ",
            "example.com",
            "fe80::1%eth0",
            "::ffff:0:0/80",
            "192.0.2.0/24/1",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn contains_matches_inside_and_not_outside() {
        let net = p("198.51.100.0/24");
        assert!(net.contains("198.51.100.255".parse().unwrap()));
        assert!(!net.contains("198.51.101.0".parse().unwrap()));
        let net6 = p("2001:db8:dead::/48");
        assert!(net6.contains("2001:db8:dead:1::5".parse().unwrap()));
        assert!(!net6.contains("2001:db8:beef::5".parse().unwrap()));
        assert!(p("0.0.0.0/0").contains("203.0.113.1".parse().unwrap()));
        assert!(!p("0.0.0.0/0").contains("2001:db8::1".parse().unwrap()));
    }
}
