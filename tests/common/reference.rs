//! The reference classifier: the verdict icmpguard promises for one frame
//! and one blocklist, written from the specification (SPEC.md, the `icmp`
//! key) and the parsing rules the README and bpf/parse.h state, as a plain
//! byte parser over a slice. It shares no code and no structure with the
//! BPF program on purpose: tests/differential.rs runs both on the same
//! frames, and a disagreement is a bug in one of them.
//!
//! The rules, as promised:
//! - Ethernet, then at most two VLAN tags (802.1Q or 802.1ad, in any order);
//!   a third tag is not looked through and the frame passes.
//! - IPv4 with any header length of 5 words or more; a non-first fragment
//!   (offset not zero) carries no ICMP header and passes.
//! - IPv6 with at most six extension headers walked (hop-by-hop, routing,
//!   fragment, destination options, authentication); a non-first fragment
//!   passes, and so does a chain still unfinished after six.
//! - The ICMP (IPv4, protocol 1) or ICMPv6 (IPv6, next header 58) type and
//!   code must be in the frame; anything malformed or truncated before them
//!   passes. The IP length fields are not consulted: the verdict depends on
//!   the bytes the frame holds (tests/datapath.rs states the same).
//! - Droppable: echo request and reply (ICMP 8/0, ICMPv6 128/129) under
//!   both policies; never fragmentation-needed (ICMP 3/4), packet-too-big
//!   (ICMPv6 2) or neighbour discovery (ICMPv6 133-137); every other
//!   message under `icmp = "all"` only.
//! - A droppable message is dropped when its source or destination is in
//!   the blocklist: equal to an exact address or inside a prefix. An
//!   IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address: it
//!   matches IPv4 entries and no IPv6 entry (not even `::/0`).
//! - `icmp = [list]`: the types listed (per family) are droppable, but
//!   never fragmentation-needed (ICMP 3 code 4), packet-too-big (ICMPv6 2)
//!   or neighbour discovery (ICMPv6 133-137), whatever the list holds.
//! - Allow wins: a droppable message whose source or destination is in the
//!   allow list (same matching) passes, for the most specific allow entry
//!   of its source, else of its destination; only then do block entries
//!   count (the most specific of the source, else of the destination).
//!   A message the policy does not cover is neither allowed nor blocked.
//! - `dry_run = true`: nothing is dropped; what would be is counted and
//!   logged as a would-drop.
#![allow(dead_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use icmpguard::addr::Prefix;
use icmpguard::config::IcmpPolicy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    Drop,
}

/// Why the filter decided as it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No entry matters: not classified, not a droppable type, no entry.
    None,
    /// A block entry drops it (or would, in a dry run).
    Block,
    /// An allow entry saved it.
    Allow,
}

/// What the event of a classified message says of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logged {
    Pass,
    Drop,
    /// Dry run: passed, but the policy drops it.
    WouldDrop,
}

/// Which address of the packet matched, source first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// Why a frame is not an ICMP message the filter classifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Shorter than an Ethernet header.
    ShortEthernet,
    /// Ends inside a VLAN tag.
    ShortVlan,
    /// A third VLAN tag.
    TooManyVlans,
    /// Neither IPv4 nor IPv6 after the tags.
    NotIp,
    ShortIpv4,
    /// Version nibble not 4, or a header length under 5 words.
    BadIpv4,
    /// The header length points past the end of the frame.
    ShortIpv4Options,
    Ipv4NonFirstFragment,
    ShortIpv6,
    BadIpv6,
    /// Ends inside an extension header's fixed part.
    ShortIpv6Ext,
    Ipv6NonFirstFragment,
    /// Still an extension header after six.
    Ipv6ChainTooLong,
    /// Another upper-layer protocol (TCP, UDP, ICMP of the other family...).
    NotIcmp,
    /// Ends before the ICMP type and code.
    ShortIcmp,
}

/// An ICMP or ICMPv6 message as the filter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmp {
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    /// As carried in the packet (an IPv4-mapped address stays IPv6 here).
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// The intended decision for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What the program returns.
    pub verdict: Verdict,
    /// What was read: an ICMP message, or why the frame is not one.
    pub read: Result<Icmp, Skip>,
    /// The entry that decides (the longest that contains the address: a
    /// block entry that drops it, an allow entry that saves it) and which
    /// address it matched; `None` when no entry decides.
    pub rule: Option<(Side, Prefix)>,
    pub reason: Reason,
    pub dry_run: bool,
}

impl Outcome {
    /// The verdict its event carries.
    pub fn logged(&self) -> Logged {
        match (self.reason, self.dry_run) {
            (Reason::Block, false) => Logged::Drop,
            (Reason::Block, true) => Logged::WouldDrop,
            _ => Logged::Pass,
        }
    }
}

/// What the filter is told: the `icmp` policy, the block and allow lists
/// (each in any order) and whether it is a dry run.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    pub icmp: IcmpPolicy,
    pub block: &'a [Prefix],
    pub allow: &'a [Prefix],
    pub dry_run: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.verdict)?;
        if self.dry_run {
            write!(f, " (dry run: {:?})", self.logged())?;
        }
        match &self.read {
            Ok(i) => write!(
                f,
                " icmp{} type={} code={} src={} dst={}",
                if i.v6 { "v6" } else { "" },
                i.icmp_type,
                i.code,
                i.src,
                i.dst
            )?,
            Err(skip) => write!(f, " (not classified: {skip:?})")?,
        }
        if let Some((side, p)) = &self.rule {
            write!(f, " rule={p} ({side:?}, {:?})", self.reason)?;
        }
        Ok(())
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT: usize = 6;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Reads a frame down to the ICMP type and code, or says why it stops.
pub fn read(frame: &[u8]) -> Result<Icmp, Skip> {
    let mut ethertype = be16(frame, 12).ok_or(Skip::ShortEthernet)?;
    let mut at = 14;
    let mut tags = 0;
    while ethertype == TPID_8021Q || ethertype == TPID_8021AD {
        if tags == MAX_VLAN_TAGS {
            return Err(Skip::TooManyVlans);
        }
        // A tag: 2 bytes of TCI, then the next EtherType.
        ethertype = be16(frame, at + 2).ok_or(Skip::ShortVlan)?;
        at += 4;
        tags += 1;
    }
    match ethertype {
        ETHERTYPE_IPV4 => read_ipv4(frame, at),
        ETHERTYPE_IPV6 => read_ipv6(frame, at),
        _ => Err(Skip::NotIp),
    }
}

fn type_and_code(frame: &[u8], at: usize) -> Result<(u8, u8), Skip> {
    match frame.get(at..at + 2) {
        Some(b) => Ok((b[0], b[1])),
        None => Err(Skip::ShortIcmp),
    }
}

fn read_ipv4(frame: &[u8], at: usize) -> Result<Icmp, Skip> {
    let h = frame.get(at..at + 20).ok_or(Skip::ShortIpv4)?;
    let version = h[0] >> 4;
    let header_len = usize::from(h[0] & 0xf) * 4;
    if version != 4 || header_len < 20 {
        return Err(Skip::BadIpv4);
    }
    if frame.len() < at + header_len {
        return Err(Skip::ShortIpv4Options);
    }
    // Flags are the top 3 bits; the offset the other 13.
    let fragment_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    if fragment_offset != 0 {
        return Err(Skip::Ipv4NonFirstFragment);
    }
    if h[9] != 1 {
        return Err(Skip::NotIcmp);
    }
    let (icmp_type, code) = type_and_code(frame, at + header_len)?;
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    Ok(Icmp { v6: false, icmp_type, code, src: src.into(), dst: dst.into() })
}

fn read_ipv6(frame: &[u8], at: usize) -> Result<Icmp, Skip> {
    let h = frame.get(at..at + 40).ok_or(Skip::ShortIpv6)?;
    if h[0] >> 4 != 6 {
        return Err(Skip::BadIpv6);
    }
    let mut next = h[6];
    let src: [u8; 16] = h[8..24].try_into().expect("16 bytes");
    let dst: [u8; 16] = h[24..40].try_into().expect("16 bytes");
    let mut pos = at + 40;
    let mut walked = 0;
    loop {
        match next {
            58 => {
                let (icmp_type, code) = type_and_code(frame, pos)?;
                let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
                return Ok(Icmp { v6: true, icmp_type, code, src: src.into(), dst: dst.into() });
            }
            0 | 43 | 44 | 51 | 60 | 135 if walked == MAX_IPV6_EXT => return Err(Skip::Ipv6ChainTooLong),
            // Hop-by-hop, routing, destination options, mobility: length in
            // 8-octet units, not counting the first 8 (RFC 8200 4.3-4.6,
            // RFC 6275 6.1.1).
            0 | 43 | 60 | 135 => {
                let b = frame.get(pos..pos + 2).ok_or(Skip::ShortIpv6Ext)?;
                next = b[0];
                pos += (usize::from(b[1]) + 1) * 8;
            }
            // Authentication header: length in 4-octet units, minus 2
            // (RFC 4302 2.2).
            51 => {
                let b = frame.get(pos..pos + 2).ok_or(Skip::ShortIpv6Ext)?;
                next = b[0];
                pos += (usize::from(b[1]) + 2) * 4;
            }
            // Fragment header: 8 octets; the offset is the top 13 bits of
            // octets 2-3 (RFC 8200 4.5).
            44 => {
                let b = frame.get(pos..pos + 8).ok_or(Skip::ShortIpv6Ext)?;
                if u16::from_be_bytes([b[2], b[3]]) >> 3 != 0 {
                    return Err(Skip::Ipv6NonFirstFragment);
                }
                next = b[0];
                pos += 8;
            }
            _ => return Err(Skip::NotIcmp),
        }
        walked += 1;
    }
}

/// Whether the policy covers this message (for a blocked address).
pub fn droppable(policy: IcmpPolicy, v6: bool, icmp_type: u8, code: u8) -> bool {
    let echo = if v6 { matches!(icmp_type, 128 | 129) } else { matches!(icmp_type, 0 | 8) };
    let path_mtu = if v6 { icmp_type == 2 } else { (icmp_type, code) == (3, 4) };
    let neighbour_discovery = v6 && (133..=137).contains(&icmp_type);
    if path_mtu || neighbour_discovery {
        return false;
    }
    match policy {
        IcmpPolicy::Echo => echo,
        IcmpPolicy::All => true,
        // Bit t of word t / 32 of the family's bitmap.
        IcmpPolicy::Types(t) => {
            let words = if v6 { t.0.v6 } else { t.0.v4 };
            words[usize::from(icmp_type / 32)] & (1 << (icmp_type % 32)) != 0
        }
    }
}

/// An address as the blocklist sees it: the family's width in bits and the
/// bits, IPv4-mapped IPv6 taken as IPv4.
fn bits_of(addr: IpAddr) -> (u32, u128) {
    match addr {
        IpAddr::V4(a) => (32, u128::from(u32::from_be_bytes(a.octets()))),
        IpAddr::V6(a) => {
            let o = a.octets();
            if o[..10].iter().all(|&b| b == 0) && o[10] == 0xff && o[11] == 0xff {
                (32, u128::from(u32::from_be_bytes([o[12], o[13], o[14], o[15]])))
            } else {
                (128, u128::from_be_bytes(o))
            }
        }
    }
}

fn rule_bits(p: &Prefix) -> (u32, u128, u32) {
    match *p {
        Prefix::V4 { addr, len } => (32, u128::from(u32::from_be_bytes(addr.octets())), u32::from(len)),
        Prefix::V6 { addr, len } => (128, u128::from_be_bytes(addr.octets()), u32::from(len)),
    }
}

/// Whether `addr` is `rule` or inside it.
pub fn matches(rule: &Prefix, addr: IpAddr) -> bool {
    let (width, bits) = bits_of(addr);
    let (rule_width, rule_net, len) = rule_bits(rule);
    width == rule_width && (len == 0 || (bits ^ rule_net) >> (width - len) == 0)
}

/// The longest blocklist entry that contains `addr`.
pub fn longest_match(rules: &[Prefix], addr: IpAddr) -> Option<Prefix> {
    rules.iter().filter(|r| matches(r, addr)).max_by_key(|r| r.prefix_len()).copied()
}

/// The intended verdict for `frame` under `policy` and the blocklist
/// `rules` (no allow list, dropping).
pub fn classify(frame: &[u8], policy: IcmpPolicy, rules: &[Prefix]) -> Outcome {
    decide(frame, &Policy { icmp: policy, block: rules, allow: &[], dry_run: false })
}

/// The intended decision for `frame` under `policy`.
pub fn decide(frame: &[u8], policy: &Policy<'_>) -> Outcome {
    let read = read(frame);
    let longest = |list: &[Prefix], m: &Icmp| {
        longest_match(list, m.src)
            .map(|p| (Side::Src, p))
            .or_else(|| longest_match(list, m.dst).map(|p| (Side::Dst, p)))
    };
    let (rule, reason) = match &read {
        Ok(m) if droppable(policy.icmp, m.v6, m.icmp_type, m.code) => {
            match (longest(policy.allow, m), longest(policy.block, m)) {
                (Some(a), _) => (Some(a), Reason::Allow),
                (None, Some(b)) => (Some(b), Reason::Block),
                (None, None) => (None, Reason::None),
            }
        }
        _ => (None, Reason::None),
    };
    let verdict = if reason == Reason::Block && !policy.dry_run { Verdict::Drop } else { Verdict::Pass };
    Outcome { verdict, read, rule, reason, dry_run: policy.dry_run }
}
