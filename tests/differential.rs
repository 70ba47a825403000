//! Differential packet testing: the BPF programs against the reference
//! classifier (tests/common/reference.rs) on many thousands of random and
//! mutated frames, through BPF_PROG_TEST_RUN.
//!
//! Each case is one frame, one blocklist, one policy and one log mode. The
//! frame is a valid packet of a random shape (0-3 VLAN tags, IPv4 with
//! options and fragments, IPv6 with extension chains up to 8 long, ICMP of
//! any type, TCP, UDP, other protocols), then maybe damaged: bytes flipped
//! or overwritten with protocol numbers, cut at a random length; or random
//! bytes after an EtherType. The blocklist is drawn around the frame's
//! addresses (exact and prefix entries of both families, just inside and
//! just outside), so that matches and near misses both happen, on top of a
//! background of 3500 exact addresses of each family that keeps the
//! exact-address tables near their design load (long probe sequences,
//! tombstones, rebuilds with a new seed) and that frames also aim at. Both the XDP and the tcx program must
//! give the reference's verdict, and the event, counters and per-rule drop
//! count must tell the same story.
//!
//! Beside the random cases: named cases for the shapes the spec names and
//! every disagreement found, probe sequences of both tables made to
//! collide on purpose, and the reference's own tests on hand-written bytes.
//!
//! `ICMPGUARD_DIFF_CASES` sets the number of cases (default below: 10000 in
//! a debug build, 60000 in release; about a minute on two cores);
//! `PROPTEST_RNG_SEED` fixes the seed to replay a run.
//! Run with `--nocapture` to see the figures. A failure is shrunk to a
//! small case and printed with its frame in hex: turn it into a named case
//! in `disagreements_found_stay_fixed` once its side is decided.
//!
//! The privileged tests need root; the reference's own tests do not.

mod common;
#[path = "common/reference.rs"]
mod reference;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::rc::Rc;
use std::time::Instant;

use common::packet::{Ext, Packet, L4};
use icmpguard::addr::{PerFamily, Prefix};
use icmpguard::events::{Direction, Event, Reason as EventReason, Verdict as EventVerdict};
use icmpguard::icmp::TypeSet;
use icmpguard::kernel::sys::from_bytes;
use icmpguard::kernel::{Generation, Outcome as Applied, Sizes};
use icmpguard::plan::{blocks, entries, plan, Entry, Plan};
use icmpguard::plan::{IcmpPolicy, LogMode, Settings};
use icmpguard::skel::types;
use libbpf_rs::{RingBuffer, RingBufferBuilder};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reference::{Logged, Outcome, Reason, Side, Skip, Verdict};

/// Cases in a default run: about a minute on two cores either way. The
/// unoptimized build of `cargo test` (CI) spends most of its time in the
/// generator and the reference, so it runs fewer.
const DEFAULT_CASES: u32 = if cfg!(debug_assertions) { 10_000 } else { 60_000 };

// The kernel's XDP actions, and what the egress program returns
// (bpf/icmpguard.h), from the bindings and the skeleton.
const XDP_DROP: u32 = libbpf_sys::XDP_DROP;
const XDP_PASS: u32 = libbpf_sys::XDP_PASS;
const TCX_DROP: u32 = icmpguard::skel::types::ig_egress_action::IG_EGRESS_DROP.0;
const TCX_NEXT: u32 = icmpguard::skel::types::ig_egress_action::IG_EGRESS_PASS.0;

// ---------------------------------------------------------------------------
// What a case is.

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR a byte with `bits`; `headers` keeps it before the ICMP code.
    Flip { at: usize, bits: u8, headers: bool },
    /// Overwrite a byte with a value parsers care about.
    Poke { at: usize, value: u8, headers: bool },
}

#[derive(Clone, Debug)]
enum Frame {
    /// A packet from the builder, then damaged.
    Built { packet: Packet, mutations: Vec<Mutation>, truncate: Option<usize> },
    /// Ethernet addresses, an EtherType, random bytes.
    Raw { ethertype: u16, body: Vec<u8> },
}

impl Frame {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Frame::Built { packet, mutations, truncate } => {
                let mut f = packet.bytes();
                let headers = (packet.l4_offset() + 2).min(f.len());
                for m in mutations {
                    let (at, headers_only) = match m {
                        Mutation::Flip { at, headers, .. } | Mutation::Poke { at, headers, .. } => (*at, *headers),
                    };
                    let i = at % if headers_only { headers } else { f.len() };
                    match m {
                        Mutation::Flip { bits, .. } => f[i] ^= bits,
                        Mutation::Poke { value, .. } => f[i] = *value,
                    }
                }
                if let Some(t) = truncate {
                    // The kernel refuses test runs shorter than Ethernet.
                    f.truncate(14 + t % (f.len() - 13));
                }
                f
            }
            Frame::Raw { ethertype, body } => {
                let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
                f.extend_from_slice(&ethertype.to_be_bytes());
                f.extend_from_slice(body);
                f
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    frame: Frame,
    rules: Vec<Prefix>,
    /// Background addresses left out of this case's blocklist.
    absent: Vec<u32>,
    /// The allow list: around the frame's addresses, equal to block
    /// entries, covering them.
    allow: Vec<Prefix>,
    policy: IcmpPolicy,
    log: LogMode,
    dry_run: bool,
}

// ---------------------------------------------------------------------------
// Strategies.

const V4_BASES: &[Ipv4Addr] = &[
    Ipv4Addr::new(192, 0, 2, 0),
    Ipv4Addr::new(198, 51, 100, 0),
    Ipv4Addr::new(203, 0, 113, 0),
    Ipv4Addr::new(10, 0, 0, 0),
    Ipv4Addr::new(0, 0, 0, 0),
    Ipv4Addr::new(255, 255, 255, 0),
];

/// Documentation prefixes, link-local, multicast, IPv4-mapped and its near
/// misses (one bit off in the ::ffff:0:0/96 pattern).
const V6_BASES: &[Ipv6Addr] = &[
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
    Ipv6Addr::new(0x2001, 0xdb8, 0xdead, 0, 0, 0, 0, 0),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0200),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc633, 0x6400),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xfffe, 0xc000, 0x0200),
    Ipv6Addr::new(0, 0, 0, 0, 1, 0xffff, 0xc000, 0x0200),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
];

/// Exact addresses of each family every case's blocklist holds (but for a
/// few), so that both exact-address tables are loaded near their design
/// limit (half full): long probe sequences, tombstones from the churn,
/// rebuilds.
const BACKGROUND: u32 = 3500;

/// IPv4 background address `i`: spread over 100.64.0.0/10 (a bijection of
/// the low 22 bits, the multiplier being odd).
fn background(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x6440_0000 | (i.wrapping_mul(2_654_435_761) & 0x3f_ffff))
}

/// IPv6 background address `i`: spread over 2001:db8:b6::/48.
fn background6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_00b6_0000_0000_0000_0000_0000 | u128::from(i.wrapping_mul(2_654_435_761)) << 32 | 0x10)
}

/// Background entry `i`: IPv4 below BACKGROUND, IPv6 from there.
fn background_rule(i: u32) -> Prefix {
    if i < BACKGROUND {
        Prefix::containing(background(i).into(), 32)
    } else {
        Prefix::containing(background6(i - BACKGROUND).into(), 128)
    }
}

fn v4_addr() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        8 => (select(V4_BASES), any::<u8>()).prop_map(|(b, low)| {
            let mut o = b.octets();
            o[3] = low;
            Ipv4Addr::from(o)
        }),
        2 => (0..BACKGROUND + 20).prop_map(background),
        1 => any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

fn v6_addr() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        8 => (select(V6_BASES), any::<u8>()).prop_map(|(b, low)| Ipv6Addr::from(u128::from(b) | u128::from(low))),
        1 => (0..BACKGROUND + 20).prop_map(|i| background(i).to_ipv6_mapped()),
        2 => (0..BACKGROUND + 20).prop_map(background6),
        1 => any::<u128>().prop_map(Ipv6Addr::from),
    ]
}

const V4_TYPES: &[u8] = &[0, 8, 3, 11, 5, 13, 14, 2, 128, 129, 133, 135];
const V6_TYPES: &[u8] = &[128, 129, 2, 1, 3, 4, 130, 133, 134, 135, 136, 137, 138, 143, 0, 8];
/// Protocol numbers worth a try as "other": ICMP of the other family, no
/// next header, ESP, IPv6 extension headers, mobility, HIP, IP-in-IP.
const OTHER_PROTOS: &[u8] = &[1, 58, 59, 50, 0, 43, 44, 51, 60, 135, 139, 4, 41, 255];

fn l4(v6: bool) -> impl Strategy<Value = L4> {
    let types = if v6 { V6_TYPES } else { V4_TYPES };
    let icmp_type = prop_oneof![3 => select(types), 2 => any::<u8>()];
    let code = prop_oneof![3 => Just(0u8), 1 => Just(4u8), 1 => any::<u8>()];
    prop_oneof![
        12 => (icmp_type, code).prop_map(|(icmp_type, code)| L4::Icmp { icmp_type, code }),
        1 => Just(L4::Tcp),
        1 => Just(L4::Udp),
        2 => prop_oneof![select(OTHER_PROTOS), any::<u8>()].prop_map(|proto| L4::Other { proto }),
    ]
}

fn ext() -> impl Strategy<Value = Ext> {
    let units = prop_oneof![4 => 1usize..=3, 1 => 1usize..=32].prop_map(|n| n * 8);
    let offset = prop_oneof![3 => Just(0u16), 1 => 1u16..0x2000];
    prop_oneof![
        3 => units.clone().prop_map(Ext::HopByHop),
        3 => units.clone().prop_map(Ext::DestOpts),
        2 => units.clone().prop_map(Ext::Routing),
        1 => units.prop_map(Ext::Mobility),
        2 => (offset, any::<bool>()).prop_map(|(offset, more)| Ext::Fragment { offset, more }),
        2 => prop_oneof![4 => 0usize..=6, 1 => 0usize..=60].prop_map(Ext::Auth),
    ]
}

fn vlans() -> impl Strategy<Value = Vec<(u16, u16)>> {
    let tag = (select(&[0x8100u16, 0x88a8][..]), any::<u16>());
    prop_oneof![
        5 => Just(Vec::new()),
        2 => proptest::collection::vec(tag.clone(), 1),
        2 => proptest::collection::vec(tag.clone(), 2),
        1 => proptest::collection::vec(tag, 3),
    ]
}

fn ipv4_packet() -> impl Strategy<Value = Packet> {
    let frag = prop_oneof![4 => Just((0u16, false)), 1 => Just((0, true)), 2 => (1u16..0x2000, any::<bool>())];
    let options = prop_oneof![2 => Just(0usize), 1 => (0usize..=10).prop_map(|w| w * 4)];
    (v4_addr(), v4_addr(), l4(false), options, frag, 0usize..=40).prop_map(|(s, d, l4, options, frag, payload)| {
        Packet::new(s.into(), d.into(), l4).options(options).frag(frag.0, frag.1).payload(payload)
    })
}

fn ipv6_packet() -> impl Strategy<Value = Packet> {
    let chain = prop_oneof![
        3 => Just(Vec::new()),
        4 => proptest::collection::vec(ext(), 1..=5),
        2 => proptest::collection::vec(ext(), 6),
        2 => proptest::collection::vec(ext(), 7..=8),
    ];
    (v6_addr(), v6_addr(), l4(true), chain, 0usize..=40)
        .prop_map(|(s, d, l4, exts, payload)| Packet { exts, ..Packet::new(s.into(), d.into(), l4).payload(payload) })
}

/// Bytes that parsers branch on: EtherTypes' halves, IP versions and header
/// lengths, protocol numbers, ICMP types.
const POKES: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x08, 0x11, 0x2b, 0x2c, 0x33, 0x3a, 0x3b, 0x3c, 0x40, 0x45, 0x4f, 0x60, 0x80,
    0x81, 0x86, 0x88, 0x85, 0x89, 0xa8, 0xdd, 0xff,
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255, prop::bool::weighted(0.8)).prop_map(|(at, bits, headers)| Mutation::Flip {
            at,
            bits,
            headers
        }),
        (any::<usize>(), select(POKES), prop::bool::weighted(0.8)).prop_map(|(at, value, headers)| Mutation::Poke {
            at,
            value,
            headers
        }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    let packet = (prop_oneof![ipv4_packet(), ipv6_packet()], vlans()).prop_map(|(p, tags)| p.vlan_tpids(&tags));
    let mutations = prop_oneof![5 => Just(Vec::new()), 4 => proptest::collection::vec(mutation(), 1..=3)];
    let truncate = prop_oneof![3 => Just(None), 1 => any::<usize>().prop_map(Some)];
    let ethertype = prop_oneof![select(&[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806][..]), any::<u16>()];
    prop_oneof![
        12 => (packet, mutations, truncate)
            .prop_map(|(packet, mutations, truncate)| Frame::Built { packet, mutations, truncate }),
        1 => (ethertype, proptest::collection::vec(any::<u8>(), 0..120))
            .prop_map(|(ethertype, body)| Frame::Raw { ethertype, body }),
    ]
}

/// One blocklist entry around `anchor`: `len_pick` chooses the length
/// (exact, long, any), `flip` may flip one bit of the anchor first (inside
/// the prefix: a near miss; outside: still a match).
fn rule_near(anchor: IpAddr, len_pick: (u8, u8), flip: Option<u8>) -> Prefix {
    let mapped = matches!(anchor, IpAddr::V6(a) if a.to_ipv4_mapped().is_some());
    let width: u8 = if anchor.is_ipv4() { 32 } else { 128 };
    let (mode, r) = len_pick;
    let len = match (mode % 4, mapped) {
        (0, _) => width,
        (1 | 2, true) => 96 + r % 33,
        (1 | 2, false) => width / 2 + r % (width / 2 + 1),
        (_, _) => r % (width + 1),
    };
    let addr = match (anchor, flip) {
        (IpAddr::V4(a), Some(bit)) => IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ (1 << (bit % 32)))),
        (IpAddr::V6(a), Some(bit)) => IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ (1 << (bit % 128)))),
        (a, None) => a,
    };
    Prefix::containing(addr, len)
}

/// Entries that must never match an IPv4-mapped address (they are IPv6)
/// or that match everything of one family.
fn special_rules() -> Vec<Prefix> {
    ["::/0", "::/80", "::/64", "0.0.0.0/0", "::ffff:0.0.0.0/96", "::fffe:0:0/96", "2001:db8::/32"]
        .iter()
        .map(|s| s.parse().expect("prefix"))
        .collect()
}

fn rules(anchors: Vec<IpAddr>) -> impl Strategy<Value = Vec<Prefix>> {
    let near = (select(anchors), (any::<u8>(), any::<u8>()), prop_oneof![Just(None), any::<u8>().prop_map(Some)])
        .prop_map(|(a, len, flip)| rule_near(a, len, flip));
    let elsewhere = (prop_oneof![v4_addr().prop_map(IpAddr::V4), v6_addr().prop_map(IpAddr::V6)], any::<(u8, u8)>())
        .prop_map(|(a, len)| rule_near(a, len, None));
    let rule = prop_oneof![8 => near, 2 => elsewhere, 1 => select(special_rules())];
    proptest::collection::vec(rule, 0..=8)
}

/// The background sorted by address, per family, for counting the
/// entries a prefix covers.
fn background_sorted() -> &'static (Vec<u32>, Vec<u128>) {
    static SORTED: std::sync::OnceLock<(Vec<u32>, Vec<u128>)> = std::sync::OnceLock::new();
    SORTED.get_or_init(|| {
        let mut v4: Vec<u32> = (0..BACKGROUND).map(|i| u32::from(background(i))).collect();
        let mut v6: Vec<u128> = (0..BACKGROUND).map(|i| u128::from(background6(i))).collect();
        v4.sort_unstable();
        v6.sort_unstable();
        (v4, v6)
    })
}

/// The addresses of `p`, as the first and last of a range of integers.
fn span(p: &Prefix) -> (bool, u128, u128) {
    match *p {
        Prefix::V4 { addr, len } => {
            let lo = u128::from(u32::from(addr));
            (false, lo, lo | u128::from(u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)))
        }
        Prefix::V6 { addr, len } => {
            let lo = u128::from(addr);
            (true, lo, lo | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0))
        }
    }
}

/// How many of the sorted `list` (IPv4 as u32 widened) lie in `p`.
fn covered_in<T: Copy + Into<u128>>(list: &[T], lo: u128, hi: u128) -> std::ops::Range<usize> {
    list.partition_point(|a| (*a).into() < lo)..list.partition_point(|a| (*a).into() <= hi)
}

/// Background entries an allow entry covers (and so takes out).
fn background_covered(p: &Prefix) -> usize {
    let (v4, v6) = background_sorted();
    match span(p) {
        (false, lo, hi) => covered_in(v4, lo, hi).len(),
        (true, lo, hi) => covered_in(v6, lo, hi).len(),
    }
}

/// The allow list of a case: entries around the frame's addresses (so that
/// an allowed address sits inside a blocked prefix or next to it), equal to
/// a block entry, covering one, or elsewhere. An allow entry covering much
/// of the background takes thousands of entries out of the kernel and puts
/// them back the next case (a rebuild): `big` lets that happen rarely.
fn allows(anchors: Vec<IpAddr>, block: Vec<Prefix>) -> impl Strategy<Value = Vec<Prefix>> {
    let pool = if block.is_empty() { vec![rule_near(anchors[0], (0, 0), None)] } else { block };
    let near = (select(anchors), (any::<u8>(), any::<u8>()), prop_oneof![Just(None), any::<u8>().prop_map(Some)])
        .prop_map(|(a, len, flip)| rule_near(a, len, flip));
    let equal = select(pool.clone());
    let covering = (select(pool), any::<u8>()).prop_map(|(b, r)| b.truncated(r % (b.prefix_len() + 1)));
    let elsewhere = (prop_oneof![v4_addr().prop_map(IpAddr::V4), v6_addr().prop_map(IpAddr::V6)], any::<(u8, u8)>())
        .prop_map(|(a, len)| rule_near(a, len, None));
    let one = prop_oneof![6 => near, 3 => equal, 3 => covering, 1 => elsewhere, 1 => select(special_rules())];
    let list = prop_oneof![3 => Just(Vec::new()), 5 => proptest::collection::vec(one, 1..=4)];
    (list, prop::bool::weighted(0.002)).prop_map(|(list, big)| {
        list.into_iter()
            .map(|p| {
                if big || background_covered(&p) <= 8 {
                    return p;
                }
                // Narrowed to the first address it holds.
                match p {
                    Prefix::V4 { addr, .. } => Prefix::containing(IpAddr::V4(addr), 32),
                    Prefix::V6 { addr, .. } => Prefix::containing(IpAddr::V6(addr), 128),
                }
            })
            .collect()
    })
}

/// A type list: a few types of each family (some never droppable: the
/// kernel's own exemptions must hold), or a random bitmap.
fn policy() -> impl Strategy<Value = IcmpPolicy> {
    let few =
        |types: &'static [u8]| proptest::collection::vec(prop_oneof![3 => select(types), 1 => any::<u8>()], 0..=5);
    let listed = (few(V4_TYPES), few(V6_TYPES)).prop_map(|(v4, v6)| {
        let mut t = TypeSet::default();
        for x in v4 {
            t.insert(icmpguard::addr::Family::V4, x);
        }
        for x in v6 {
            t.insert(icmpguard::addr::Family::V6, x);
        }
        IcmpPolicy::Types(t)
    });
    let bitmap = any::<([u32; 8], [u32; 8])>().prop_map(|(v4, v6)| IcmpPolicy::Types(TypeSet(PerFamily { v4, v6 })));
    prop_oneof![3 => Just(IcmpPolicy::Echo), 3 => Just(IcmpPolicy::All), 3 => listed, 1 => bitmap]
}

fn case() -> impl Strategy<Value = Case> {
    frame().prop_flat_map(|frame| {
        let mut anchors = Vec::new();
        if let Frame::Built { packet, .. } = &frame {
            anchors.extend([packet.src, packet.dst]);
        }
        // The addresses as damaged, too (a flipped address bit).
        if let Ok(m) = reference::read(&frame.bytes()) {
            anchors.extend([m.src, m.dst]);
        }
        if anchors.is_empty() {
            anchors.push(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
        }
        let log = prop_oneof![Just(LogMode::None), Just(LogMode::Blocked), Just(LogMode::All)];
        let absent = proptest::collection::vec(0..2 * BACKGROUND, 0..=4);
        let dry_run = prop::bool::weighted(0.2);
        let rules_and_allow = rules(anchors.clone()).prop_flat_map(move |rules| {
            let allow = allows(anchors.clone(), rules.clone());
            (Just(rules), allow)
        });
        (Just(frame), rules_and_allow, absent, policy(), log, dry_run).prop_map(
            |(frame, (rules, allow), absent, policy, log, dry_run)| Case {
                frame,
                rules,
                absent,
                allow,
                policy,
                log,
                dry_run,
            },
        )
    })
}

// ---------------------------------------------------------------------------
// The programs in the kernel.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    Xdp,
    Tcx,
}

/// One loaded generation, reconfigured for each case, with a reader on its
/// ring buffer; rebuilt as the daemon does when the IPv4 table asks for it.
///
/// The blocklist of a case is the background (but for the addresses the
/// case leaves out) plus the case's own rules. Only the difference to the
/// previous case is computed and applied, as a reload does: the thousands
/// of background entries cost nothing per case.
struct Harness {
    g: Generation,
    ring: RingBuffer<'static>,
    events: Rc<RefCell<Vec<Vec<u8>>>>,
    settings: Settings,
    rebuilds: u64,
    /// The background, and the index of each of its entries.
    background: Vec<Prefix>,
    background_index: HashMap<Prefix, u32>,
    /// The background's entries by address, per family (IPv4 widened).
    background_v4: Vec<(u128, u32)>,
    background_v6: Vec<(u128, u32)>,
    /// What the previous case asked for: its rules (sorted), the
    /// background entries it left out and its allow list (sorted).
    rules: Vec<Prefix>,
    absent: Vec<u32>,
    allow: Vec<Prefix>,
}

/// Rule ids for the background and the cases; tables of 2^13 slots, which
/// the background of 3500 addresses a family loads to 43% (the design
/// limit is half). The table's prefix lengths are the blocklist's longest,
/// as the daemon picks them; a case that brings a length that fits neither
/// the table nor the trie makes a rebuild, as it does in the daemon.
fn sizes(block: &[Prefix], allow: &[Prefix]) -> Sizes {
    Sizes { ids: 8192, bits: PerFamily { v4: 13, v6: 13 }, ..Sizes::for_entries(entries(block, allow), 1024) }
}

fn load(block: &[Prefix], allow: &[Prefix]) -> (Generation, RingBuffer<'static>, Rc<RefCell<Vec<Vec<u8>>>>) {
    let g = Generation::create_sized(sizes(block, allow)).expect("loading the programs (are you root?)");
    let events = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&events);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&g.maps.events, move |record: &[u8]| {
            sink.borrow_mut().push(record.to_vec());
            0
        })
        .expect("ring buffer reader");
    let ring = builder.build().expect("ring buffer reader");
    (g, ring, events)
}

impl Harness {
    /// With `background` entries always (or nearly) in the blocklist.
    fn new(background: u32) -> Harness {
        let (g, ring, events) = load(&[], &[]);
        let background: Vec<Prefix> = (0..background).map(background_rule).collect();
        let background_index = background.iter().zip(0..).map(|(p, i)| (*p, i)).collect();
        let by_address = |v6: bool| {
            let mut v: Vec<(u128, u32)> =
                background.iter().zip(0..).filter(|(p, _)| span(p).0 == v6).map(|(p, i)| (span(p).1, i)).collect();
            v.sort_unstable();
            v
        };
        let (background_v4, background_v6) = (by_address(false), by_address(true));
        let settings = Settings::default();
        let mut h = Harness {
            g,
            ring,
            events,
            settings,
            rebuilds: 0,
            background,
            background_index,
            background_v4,
            background_v6,
            rules: Vec::new(),
            absent: Vec::new(),
            allow: Vec::new(),
        };
        h.rebuild();
        h.rebuilds = 0;
        h
    }

    /// Every rule of the blocklist now asked for, in no order, maybe twice.
    fn blocklist(&self) -> Vec<Prefix> {
        (0..self.background.len() as u32)
            .filter(|i| !self.absent.contains(i))
            .map(|i| self.background[i as usize])
            .chain(self.rules.iter().copied())
            .collect()
    }

    fn wanted(&self, p: &Prefix, rules: &[Prefix], absent: &[u32]) -> bool {
        rules.binary_search(p).is_ok() || self.background_index.get(p).is_some_and(|i| !absent.contains(i))
    }

    /// What the kernel must hold for `p` when the case asks for `rules`,
    /// `absent` and `allow` (as plan::entries says, written out here):
    /// Some(true) an allow entry, Some(false) a block entry, None nothing.
    fn state(&self, p: &Prefix, rules: &[Prefix], absent: &[u32], allow: &[Prefix]) -> Option<bool> {
        if allow.binary_search(p).is_ok() {
            return Some(true);
        }
        let covered = allow
            .iter()
            .any(|a| a.family() == p.family() && a.prefix_len() <= p.prefix_len() && p.truncated(a.prefix_len()) == *a);
        (self.wanted(p, rules, absent) && !covered).then_some(false)
    }

    /// Background entries inside `p`.
    fn background_in(&self, p: &Prefix) -> impl Iterator<Item = Prefix> + '_ {
        let (v6, lo, hi) = span(p);
        let list = if v6 { &self.background_v6 } else { &self.background_v4 };
        let range = list.partition_point(|(a, _)| *a < lo)..list.partition_point(|(a, _)| *a <= hi);
        list[range].iter().map(|(_, i)| self.background[*i as usize])
    }

    /// Makes the kernel enforce the background but `absent`, `rules`
    /// (sorted, deduplicated) and `allow` (sorted, deduplicated), with
    /// `settings`.
    fn configure(&mut self, rules: &[Prefix], absent: &[u32], allow: &[Prefix], s: Settings) {
        if self.settings != s {
            self.g.set_settings(s).expect("writing settings");
            self.settings = s;
        }
        let mut touched: Vec<Prefix> =
            self.rules.iter().chain(rules).chain(&self.allow).chain(allow).copied().collect();
        touched.extend(self.absent.iter().chain(absent).map(|&i| self.background[i as usize]));
        // Background entries an allow entry takes out, or gave back.
        for a in self.allow.iter().chain(allow) {
            if self.allow.binary_search(a).is_err() || allow.binary_search(a).is_err() {
                touched.extend(self.background_in(a));
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let mut plan = Plan::default();
        for p in touched {
            match (self.state(&p, &self.rules, &self.absent, &self.allow), self.state(&p, rules, absent, allow)) {
                (None, Some(allow)) => plan.add.push(Entry { prefix: p, allow }),
                (Some(_), None) => plan.remove.push(p),
                (Some(was), Some(allow)) if was != allow => plan.flip.push(Entry { prefix: p, allow }),
                _ => {}
            }
        }
        self.rules = rules.to_vec();
        self.absent = absent.to_vec();
        self.allow = allow.to_vec();
        // As the daemon does: a generation that cannot take the change, or
        // that is left with too many tombstones, is replaced. The daemon
        // adds before it removes; here, where only the state reached
        // matters, a change that trades one prefix length for another is
        // made in two steps instead, so that a rebuild (a program load, the
        // slowest part of a case) happens only when a table truly needs it.
        let fits = if self.g.cannot_take(&plan).is_none() {
            self.step(&plan)
        } else {
            let removal = Plan { remove: plan.remove.clone(), flip: plan.flip.clone(), ..Plan::default() };
            let addition = Plan { add: plan.add.clone(), ..Plan::default() };
            self.step(&removal) && self.step(&addition)
        };
        if !fits {
            self.rebuild();
        }
        self.drain();
    }

    /// Applies `plan` if the generation can take it and stays fit; false
    /// when it must be rebuilt instead.
    fn step(&mut self, plan: &Plan) -> bool {
        if plan.is_empty() {
            return true;
        }
        if self.g.cannot_take(plan).is_some() {
            return false;
        }
        matches!(self.g.apply(plan).expect("applying the blocklist"), Applied::Applied) && !self.g.wants_rebuild()
    }

    /// A new generation (a new seed for the IPv4 table) with the blocklist.
    fn rebuild(&mut self) {
        let mut all = self.blocklist();
        all.sort_unstable();
        all.dedup();
        for _ in 0..8 {
            let (mut g, ring, events) = load(&all, &self.allow);
            g.set_settings(self.settings).expect("writing settings");
            if g.apply(&plan(entries(&all, &self.allow), g.rules())).expect("applying the blocklist")
                == Applied::Applied
            {
                // The old reader goes before the maps it reads.
                self.ring = ring;
                self.events = events;
                self.g = g;
                self.rebuilds += 1;
                return;
            }
        }
        panic!("no seed places {} rules in the IPv4 table", all.len());
    }

    fn run(&self, prog: Prog, frame: &[u8]) -> Result<Verdict, String> {
        let r = match prog {
            Prog::Xdp => self.g.test_run_xdp(frame, 1),
            Prog::Tcx => self.g.test_run_tcx(frame, 1),
        }
        .map_err(|e| format!("{prog:?} test run failed: {e}"))?;
        match (prog, r.retval) {
            (Prog::Xdp, XDP_DROP) | (Prog::Tcx, TCX_DROP) => Ok(Verdict::Drop),
            (Prog::Xdp, XDP_PASS) | (Prog::Tcx, TCX_NEXT) => Ok(Verdict::Pass),
            (_, other) => Err(format!("{prog:?} returned {other}, neither pass nor drop")),
        }
    }

    fn drain(&self) -> Vec<Vec<u8>> {
        self.ring.consume().expect("reading the ring buffer");
        std::mem::take(&mut *self.events.borrow_mut())
    }
}

/// BPF_PROG_TEST_RUN refuses to build an skb whose EtherType is IPv4 or
/// IPv6 but whose frame ends inside the fixed IP header (EINVAL). Such a
/// packet never reaches tcx egress (the stack built its header); the XDP
/// program still gets it.
fn tcx_refuses(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.len() < 14 + 20,
        Some([0x86, 0xdd]) => frame.len() < 14 + 40,
        _ => false,
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, byte) in b.iter().enumerate() {
        if i > 0 && i % 16 == 0 {
            s.push('\n');
        } else if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// The id the maps hold for the entry `p` (with the allow bit for an
/// allow entry), checking that it is held on the side the reference says.
fn kernel_id(h: &Harness, p: &Prefix, reason: Reason) -> Result<u32, String> {
    let r = h.g.rules().get(p).ok_or_else(|| format!("the entry {p} that decides is not in the kernel"))?;
    if r.allow() != (reason == Reason::Allow) {
        return Err(format!(
            "the entry {p} is held as {}, the reference says {reason:?}",
            if r.allow() { "allow" } else { "block" }
        ));
    }
    Ok(if r.allow() { r.id() | types::ig_abi::IG_ID_ALLOW.0 } else { r.id() })
}

/// What the event of `prog` must say, if there must be one.
fn check_event(h: &Harness, prog: Prog, want: &Outcome, log: LogMode, records: &[Vec<u8>]) -> Result<(), String> {
    let expected = match (&want.read, log) {
        (Err(_), _) | (_, LogMode::None) => 0,
        (Ok(_), LogMode::Blocked) => usize::from(want.logged() != Logged::Pass),
        (Ok(_), LogMode::All) => 1,
    };
    if records.len() != expected {
        return Err(format!("{prog:?}: {} events queued, want {expected} (log = {log:?})", records.len()));
    }
    let (Some(record), Ok(icmp)) = (records.first(), &want.read) else {
        return Ok(());
    };
    let ev = Event::decode(record).ok_or_else(|| format!("{prog:?}: the event does not decode: {record:02x?}"))?;
    let raw: types::ig_event = from_bytes(record).ok_or("event of the wrong size")?;
    let direction = if prog == Prog::Xdp { Direction::Ingress } else { Direction::Egress };
    let verdict = match want.logged() {
        Logged::Pass => EventVerdict::Pass,
        Logged::Drop => EventVerdict::Drop,
        Logged::WouldDrop => EventVerdict::WouldDrop,
    };
    let reason = match want.reason {
        Reason::None => EventReason::None,
        Reason::Block => EventReason::Block,
        Reason::Allow => EventReason::Allow,
    };
    let side = match want.rule {
        None => 0,
        Some((Side::Src, _)) => 1,
        Some((Side::Dst, _)) => 2,
    };
    let rule = want.rule.map(|(_, p)| p);
    let rule_id = match rule {
        Some(p) => kernel_id(h, &p, want.reason)?,
        None => 0,
    };
    let got = (
        ev.direction,
        ev.verdict,
        ev.reason,
        ev.icmp_type,
        ev.icmp_code,
        ev.src,
        ev.dst,
        ev.rule,
        raw.r#match,
        raw.rule_id,
    );
    let wanted = (direction, verdict, reason, icmp.icmp_type, icmp.code, icmp.src, icmp.dst, rule, side, rule_id);
    if got != wanted {
        return Err(format!("{prog:?}: event {got:?}, want {wanted:?}"));
    }
    if raw.family != if icmp.v6 { 6 } else { 4 } {
        return Err(format!("{prog:?}: event family {}", raw.family));
    }
    Ok(())
}

/// Runs one case through both programs; describes every disagreement.
fn check_case(h: &mut Harness, case: &Case, stats: &mut Stats) -> Result<(), String> {
    let frame = case.frame.bytes();
    let sorted = |v: &[Prefix]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (rules, allow) = (sorted(&case.rules), sorted(&case.allow));
    let settings = Settings { policy: case.policy, log: case.log, dry_run: case.dry_run, ..Settings::default() };
    h.configure(&rules, &case.absent, &allow, settings);
    let block = h.blocklist();
    let want = reference::decide(
        &frame,
        &reference::Policy { icmp: case.policy, block: &block, allow: &allow, dry_run: case.dry_run },
    );
    stats.count(&want);
    // Now and then: the harness's own bookkeeping against plan::entries.
    if stats.cases % 1009 == 1 {
        let held: Vec<Entry> = h.g.rules().iter().map(|(p, r)| Entry { prefix: *p, allow: r.allow() }).collect();
        let all = sorted(&block);
        let planned: Vec<Entry> = entries(&all, &allow).collect();
        assert!(
            held == planned,
            "the harness lost track: the kernel holds {} entries, plan::entries {}",
            held.len(),
            planned.len()
        );
    }

    let before = h.g.maps.read_counters();
    let mut problems = Vec::new();
    let rule_id = match (want.rule, want.reason) {
        (Some((_, p)), Reason::Block) => match kernel_id(h, &p, Reason::Block) {
            Ok(id) => Some(id),
            Err(e) => {
                problems.push(e);
                None
            }
        },
        _ => None,
    };
    let drops_before = rule_id.map(|id| h.g.maps.read_drops(id));
    let mut runs = 0;
    for prog in [Prog::Xdp, Prog::Tcx] {
        if prog == Prog::Tcx && tcx_refuses(&frame) {
            continue;
        }
        runs += 1;
        match h.run(prog, &frame) {
            Ok(got) if got == want.verdict => {}
            Ok(got) => problems.push(format!("{prog:?} says {got:?}")),
            Err(e) => problems.push(e),
        }
        let records = h.drain();
        if let Err(e) = check_event(h, prog, &want, case.log, &records) {
            problems.push(e);
        }
    }
    stats.runs += runs;
    let after = h.g.maps.read_counters();
    let icmp = u64::from(want.read.is_ok()) * runs;
    let dropped = u64::from(want.reason == Reason::Block) * runs;
    let allowed = u64::from(want.reason == Reason::Allow) * runs;
    let got = (
        after.icmp_seen - before.icmp_seen,
        after.dropped - before.dropped,
        after.allowed - before.allowed,
        after.limited - before.limited,
    );
    if got != (icmp, dropped, allowed, 0) {
        problems.push(format!(
            "counters: icmp_seen, dropped, allowed, limited moved by {got:?}, want {:?}",
            (icmp, dropped, allowed, 0)
        ));
    }
    if let (Some(id), Some(b)) = (rule_id, drops_before) {
        let d = h.g.maps.read_drops(id) - b;
        if d != runs {
            problems.push(format!("rule {id}: {d} drops counted, want {runs}"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}\nreference: {want}\npolicy {}, dry run {}, blocklist [{}] and the background but {:?}\nallow [{}]\nframe ({} bytes):\n{}\n{:#?}",
        problems.join("\n"),
        case.policy,
        case.dry_run,
        case.rules.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
        case.absent.iter().map(|&i| background_rule(i).to_string()).collect::<Vec<_>>(),
        case.allow.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
        frame.len(),
        hex(&frame),
        case.frame
    ))
}

/// What the cases covered, by the reference's reading.
#[derive(Default)]
struct Stats {
    cases: u64,
    runs: u64,
    kinds: BTreeMap<String, u64>,
}

impl Stats {
    fn count(&mut self, o: &Outcome) {
        self.cases += 1;
        if self.cases % 100_000 == 0 {
            eprintln!("differential: {} cases", self.cases);
        }
        let kind = match (&o.read, o.verdict, o.reason) {
            (Ok(m), Verdict::Drop, _) => format!("icmp{} dropped", if m.v6 { "v6" } else { "" }),
            (Ok(m), Verdict::Pass, Reason::Block) => {
                format!("icmp{} would drop (dry run)", if m.v6 { "v6" } else { "" })
            }
            (Ok(m), Verdict::Pass, Reason::Allow) => format!("icmp{} allowed", if m.v6 { "v6" } else { "" }),
            (Ok(m), Verdict::Pass, _) => format!("icmp{} passed", if m.v6 { "v6" } else { "" }),
            (Err(skip), _, _) => format!("not classified: {skip:?}"),
        };
        *self.kinds.entry(kind).or_default() += 1;
    }

    fn report(&self) -> String {
        let mut s = format!("{} cases, {} test runs\n", self.cases, self.runs);
        for (kind, n) in &self.kinds {
            let _ = writeln!(s, "  {n:>9}  {:5.2}%  {kind}", *n as f64 * 100.0 / self.cases.max(1) as f64);
        }
        s
    }
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn bpf_programs_agree_with_the_reference_on_random_and_mutated_frames() {
    if !common::require_root() {
        return;
    }
    let cases = std::env::var("ICMPGUARD_DIFF_CASES")
        .ok()
        .map(|v| v.parse().expect("ICMPGUARD_DIFF_CASES must be a number"))
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let harness = RefCell::new(Harness::new(2 * BACKGROUND));
    let stats = RefCell::new(Stats::default());
    let start = Instant::now();
    let result = runner.run(&case(), |case| {
        check_case(&mut harness.borrow_mut(), &case, &mut stats.borrow_mut()).map_err(TestCaseError::fail)
    });
    eprintln!(
        "differential: {:.1} s, {} generations rebuilt, {}",
        start.elapsed().as_secs_f64(),
        harness.borrow().rebuilds,
        stats.borrow().report()
    );
    if let Err(e) = result {
        panic!("the BPF programs and the reference disagree:\n{e}");
    }
    // The generator must reach every shape the spec talks about.
    let kinds = &stats.borrow().kinds;
    if cases >= 10_000 {
        for kind in [
            "icmp dropped",
            "icmpv6 dropped",
            "icmp passed",
            "icmpv6 passed",
            "icmp allowed",
            "icmpv6 allowed",
            "icmp would drop (dry run)",
            "icmpv6 would drop (dry run)",
            "not classified: TooManyVlans",
            "not classified: Ipv4NonFirstFragment",
            "not classified: Ipv6NonFirstFragment",
            "not classified: Ipv6ChainTooLong",
            "not classified: ShortIcmp",
            "not classified: ShortIpv6Ext",
            "not classified: BadIpv4",
            "not classified: NotIcmp",
        ] {
            assert!(kinds.get(kind).copied().unwrap_or(0) >= 10, "too few cases of {kind}: {kinds:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Fixed cases: disagreements found, and shapes worth keeping in every run.

struct Fixed {
    name: &'static str,
    frame: Vec<u8>,
    policy: IcmpPolicy,
    rules: &'static [&'static str],
    want: Verdict,
}

fn fixed_cases() -> Vec<Fixed> {
    let v4 = || Packet::echo("192.0.2.10", "192.0.2.1");
    let v6 = || Packet::echo("2001:db8::10", "2001:db8::1");
    let opt = |n| Ext::DestOpts(n);
    let f = |name, p: Packet, policy, rules, want| Fixed { name, frame: p.bytes(), policy, rules, want };
    let echo = IcmpPolicy::Echo;
    let all = IcmpPolicy::All;
    let (drop, pass) = (Verdict::Drop, Verdict::Pass);
    vec![
        f(
            "two tags, 802.1Q outside 802.1ad",
            v4().vlan_tpids(&[(0x8100, 1), (0x88a8, 2)]),
            echo,
            &["192.0.2.10"],
            drop,
        ),
        f("two 802.1ad tags", v4().vlan_tpids(&[(0x88a8, 1), (0x88a8, 2)]), echo, &["192.0.2.10"], drop),
        f("three tags are not looked through", v4().vlan(&[1, 2, 3]), echo, &["192.0.2.10"], pass),
        f("six extension headers", (0..6).fold(v6(), |p, _| p.ext(opt(8))), echo, &["2001:db8::10"], drop),
        f("seven extension headers", (0..7).fold(v6(), |p, _| p.ext(opt(8))), echo, &["2001:db8::10"], pass),
        f(
            "ICMP (protocol 1) inside IPv6 is not ICMPv6",
            Packet::new("2001:db8::10".parse().unwrap(), "2001:db8::1".parse().unwrap(), L4::Other { proto: 1 })
                .payload(8),
            all,
            &["2001:db8::10"],
            pass,
        ),
        f(
            "ICMPv6 (58) inside IPv4 is not ICMP",
            Packet::new("192.0.2.10".parse().unwrap(), "192.0.2.1".parse().unwrap(), L4::Other { proto: 58 })
                .payload(8),
            all,
            &["192.0.2.10"],
            pass,
        ),
        f(
            "an IPv6 prefix never matches IPv4-mapped",
            Packet::echo("::ffff:192.0.2.10", "::ffff:192.0.2.1"),
            echo,
            &["::/0", "::/80"],
            pass,
        ),
        f(
            "IPv4-mapped matches an IPv4 prefix",
            Packet::echo("2001:db8::1", "::ffff:192.0.2.10"),
            echo,
            &["0.0.0.0/0"],
            drop,
        ),
        f(
            "one bit off IPv4-mapped is IPv6",
            Packet::echo("::fffe:c000:20a", "2001:db8::1"),
            echo,
            &["192.0.2.10", "::/64"],
            drop,
        ),
        f(
            "ICMPv6 type 2 code 1 is still packet-too-big",
            Packet::icmp("2001:db8::10", "2001:db8::1", 2, 1),
            all,
            &["2001:db8::10"],
            pass,
        ),
        f("ICMP 3/3 is not frag-needed", Packet::icmp("192.0.2.10", "192.0.2.1", 3, 3), all, &["192.0.2.10"], drop),
        f(
            "echo with a nonzero code is echo",
            Packet::icmp("192.0.2.1", "192.0.2.10", 8, 9),
            echo,
            &["192.0.2.0/24"],
            drop,
        ),
        f(
            "IPv4 router advertisement is not neighbour discovery",
            Packet::icmp("192.0.2.10", "192.0.2.1", 9, 0),
            all,
            &["192.0.2.10"],
            drop,
        ),
        f("a first fragment with options", v4().options(40).frag(0, true), echo, &["192.0.2.10"], drop),
        f("a non-first fragment with MF clear", v4().frag(1, false), all, &["192.0.2.10"], pass),
        f(
            "a fragment header with offset 0 and M set",
            v6().ext(Ext::Fragment { offset: 0, more: true }),
            echo,
            &["2001:db8::10"],
            drop,
        ),
        f(
            "a fragment header after five others",
            (0..5).fold(v6(), |p, _| p.ext(opt(8))).ext(Ext::Fragment { offset: 0, more: false }),
            echo,
            &["2001:db8::10"],
            drop,
        ),
        f("a long AH", v6().ext(Ext::Auth(60)), echo, &["2001:db8::10"], drop),
    ]
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn disagreements_found_stay_fixed() {
    let cases = fixed_cases();
    for c in &cases {
        let rules: Vec<Prefix> = c.rules.iter().map(|r| r.parse().unwrap()).collect();
        assert_eq!(reference::classify(&c.frame, c.policy, &rules).verdict, c.want, "reference: {}", c.name);
    }
    if !common::require_root() {
        return;
    }
    let mut h = Harness::new(0);
    for c in &cases {
        let mut rules: Vec<Prefix> = c.rules.iter().map(|r| r.parse().unwrap()).collect();
        rules.sort_unstable();
        h.configure(&rules, &[], &[], Settings { policy: c.policy, ..Settings::default() });
        for prog in [Prog::Xdp, Prog::Tcx] {
            assert_eq!(h.run(prog, &c.frame), Ok(c.want), "{prog:?}: {}\n{}", c.name, hex(&c.frame));
        }
    }
}

/// IG_HASH_MUL and IG_MAX_PROBE, from the object (bpf/icmpguard.h).
fn hash_mul() -> u64 {
    icmpguard::kernel::abi_constants().hash_mul
}
const MAX_PROBE: usize = icmpguard::skel::types::ig_abi::IG_MAX_PROBE.0 as usize;

/// The home slot of an exact address, as bpf/icmpguard.h documents the
/// hash: IPv4, the address (a native 32-bit word) with the seed in the
/// high half and the prefix length (32) in the low half, times the
/// multiplier; IPv6, the address's two native 64-bit words, the first with
/// the seed (in both halves), times the multiplier, then the second and the
/// length (128), times it again; the top `bits` bits.
fn home(addr: IpAddr, seed: u32, bits: u32) -> u32 {
    let h = match addr {
        IpAddr::V4(a) => (u64::from(u32::from_ne_bytes(a.octets()) ^ seed) << 32 | 32).wrapping_mul(hash_mul()),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w0 = u64::from_ne_bytes(o[..8].try_into().unwrap());
            let w1 = u64::from_ne_bytes(o[8..].try_into().unwrap());
            let s = u64::from(seed) << 32 | u64::from(seed);
            ((w0 ^ s).wrapping_mul(hash_mul()) ^ w1 ^ 128).wrapping_mul(hash_mul())
        }
    };
    (h >> (64 - bits)) as u32
}

/// Long probe sequences, tombstones and the probe bound of an exact-address
/// table, made on purpose: addresses of `family` (`candidates`, in order)
/// that all hash to one slot, found with the seed the generation chose. The
/// first 32 fill the sequence up to the bound: every one must be found
/// however deep it sits, a removed one must not be (nor hide those behind
/// it), and a 33rd must not fit (which also proves that they collide).
fn probe_sequences(candidates: impl Iterator<Item = IpAddr>, v6: bool) {
    let mut g = Generation::create(4096).expect("loading the programs");
    g.set_settings(Settings::default()).unwrap();
    let s = g.maps.read_settings().expect("settings");
    let (seed, bits) = if v6 { (s.v6_seed, s.v6_bits) } else { (s.v4_seed, s.v4_bits) };
    assert!(bits > 0, "no table");
    let mut candidates = candidates.peekable();
    let slot = home(*candidates.peek().expect("candidates"), seed, bits);
    let colliding: Vec<IpAddr> = candidates.filter(|a| home(*a, seed, bits) == slot).take(MAX_PROBE + 1).collect();
    assert_eq!(colliding.len(), MAX_PROBE + 1, "too few candidates share a slot");
    let set = |list: &[IpAddr]| {
        let mut v: Vec<Prefix> = list.iter().map(|a| Prefix::host(*a)).collect();
        v.sort_unstable();
        v
    };
    let peer = if v6 { "2001:db8::1" } else { "192.0.2.1" };
    let check = |g: &Generation, enforced: &[Prefix], step: &str| {
        for a in &colliding {
            let mut frames = vec![
                (Packet::echo(&a.to_string(), peer).bytes(), "source"),
                (Packet::echo(peer, &a.to_string()).bytes(), "destination"),
            ];
            if let IpAddr::V4(a4) = a {
                frames.push((Packet::echo("2001:db8::1", &a4.to_ipv6_mapped().to_string()).bytes(), "IPv4-mapped"));
            }
            for (frame, what) in &frames {
                let want = reference::classify(frame, IcmpPolicy::Echo, enforced).verdict;
                for prog in [Prog::Xdp, Prog::Tcx] {
                    let drop = match prog {
                        Prog::Xdp => g.test_run_xdp(frame, 1).unwrap().retval == XDP_DROP,
                        Prog::Tcx => g.test_run_tcx(frame, 1).unwrap().retval == TCX_DROP,
                    };
                    let got = if drop { Verdict::Drop } else { Verdict::Pass };
                    assert_eq!(got, want, "{step}: {prog:?}, {a} as {what}");
                }
            }
        }
    };

    let full = set(&colliding[..MAX_PROBE]);
    assert_eq!(g.apply(&plan(blocks(&full), g.rules())).unwrap(), Applied::Applied);
    check(&g, &full, "32 addresses in one probe sequence");

    let kept: Vec<IpAddr> =
        colliding[..MAX_PROBE].iter().enumerate().filter(|(i, _)| i % 3 != 1).map(|(_, a)| *a).collect();
    let kept = set(&kept);
    assert_eq!(g.apply(&plan(blocks(&kept), g.rules())).unwrap(), Applied::Applied);
    check(&g, &kept, "every third removed (tombstones)");

    if !v6 {
        // IPv4 slots are rewritten in one store: a tombstone is reused.
        assert_eq!(g.apply(&plan(blocks(&full), g.rules())).unwrap(), Applied::Applied);
        check(&g, &full, "the removed ones back in their tombstones");
    }
    let over = set(&colliding);
    assert_eq!(g.apply(&plan(blocks(&over), g.rules())).unwrap(), Applied::Rebuild, "more than 32 addresses fitted");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn ipv4_table_probe_sequences_agree_with_the_reference() {
    if !common::require_root() {
        return;
    }
    probe_sequences((0u32..1 << 22).map(|i| Ipv4Addr::from(0x6440_0000 | i).into()), false);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn ipv6_table_probe_sequences_agree_with_the_reference() {
    if !common::require_root() {
        return;
    }
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xc0, 0, 0, 0, 0, 0));
    probe_sequences((0u128..1 << 22).map(|i| Ipv6Addr::from(base | i << 40 | 1).into()), true);
}

// ---------------------------------------------------------------------------
// The reference on hand-written bytes, independent of the packet builder.

/// Bytes from hex with spaces and newlines.
fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).unwrap()).collect()
}

const ETH_V4: &str = "020000000002 020000000001 0800";
const ETH_V6: &str = "020000000002 020000000001 86dd";
/// IPv4 192.0.2.10 -> 192.0.2.1, ICMP, no options.
const IPV4: &str = "45000024 12340000 4001 0000 c000020a c0000201";
/// IPv6 2001:db8::10 -> 2001:db8::1, next header given separately.
const IPV6_ADDRS: &str = "20010db8000000000000000000000010 20010db8000000000000000000000001";

fn v6_frame(next: &str, rest: &str) -> Vec<u8> {
    unhex(&format!("{ETH_V6} 60000000 0010 {next} 40 {IPV6_ADDRS} {rest}"))
}

#[test]
fn reference_reads_hand_written_frames() {
    let block: Vec<Prefix> = ["192.0.2.10", "2001:db8::/64"].iter().map(|s| s.parse().unwrap()).collect();
    let verdict = |frame: &[u8], policy| reference::classify(frame, policy, &block).verdict;
    let read = |frame: &[u8]| reference::read(frame);

    let echo_v4 = unhex(&format!("{ETH_V4} {IPV4} 0800 0000 00010001"));
    assert_eq!(verdict(&echo_v4, IcmpPolicy::Echo), Verdict::Drop);
    let m = read(&echo_v4).unwrap();
    assert_eq!((m.v6, m.icmp_type, m.code), (false, 8, 0));
    assert_eq!(m.src, "192.0.2.10".parse::<IpAddr>().unwrap());

    // Cut anywhere before the code: passes; the code is the last byte read.
    let needed = 14 + 20 + 2;
    for len in 0..echo_v4.len() {
        let want = if len >= needed { Verdict::Drop } else { Verdict::Pass };
        assert_eq!(verdict(&echo_v4[..len], IcmpPolicy::Echo), want, "cut at {len}");
    }

    // 802.1ad + 802.1Q, then the same packet.
    let tagged = unhex(&format!("020000000002 020000000001 88a8 0064 8100 00c8 0800 {IPV4} 0000 0000"));
    assert_eq!(verdict(&tagged, IcmpPolicy::Echo), Verdict::Drop, "echo reply, two tags");
    let three = unhex(&format!("020000000002 020000000001 8100 0001 8100 0002 8100 0003 0800 {IPV4} 0800 0000"));
    assert_eq!(read(&three), Err(Skip::TooManyVlans));

    // IHL 6 (one option word), non-first fragment, time exceeded.
    let options = unhex(&format!("{ETH_V4} 46000028 12340000 4001 0000 c000020a c0000201 01010100 0800 0000"));
    assert_eq!(read(&options).unwrap().icmp_type, 8);
    let fragment = unhex(&format!("{ETH_V4} 45000024 12342001 4001 0000 c000020a c0000201 0800 0000"));
    assert_eq!(read(&fragment), Err(Skip::Ipv4NonFirstFragment));
    let exceeded = unhex(&format!("{ETH_V4} {IPV4} 0b00 0000"));
    assert_eq!(verdict(&exceeded, IcmpPolicy::Echo), Verdict::Pass);
    assert_eq!(verdict(&exceeded, IcmpPolicy::All), Verdict::Drop);
    let frag_needed = unhex(&format!("{ETH_V4} {IPV4} 0304 0000"));
    assert_eq!(verdict(&frag_needed, IcmpPolicy::All), Verdict::Pass);
    let ihl4 = unhex(&format!("{ETH_V4} 44000024 12340000 4001 0000 c000020a c0000201 0800 0000"));
    assert_eq!(read(&ihl4), Err(Skip::BadIpv4));

    // IPv6: hop-by-hop (8 bytes), AH (hdrlen 1: 12 bytes), then ICMPv6.
    let chain = v6_frame("00", "33 00 01040000 0000 3a 01 0000 00000000 00000000 8000 0000");
    let m = read(&chain).unwrap();
    assert_eq!((m.v6, m.icmp_type), (true, 128));
    assert_eq!(verdict(&chain, IcmpPolicy::Echo), Verdict::Drop);
    let nonfirst = v6_frame("2c", "3a 00 0008 deadbeef 8000 0000");
    assert_eq!(read(&nonfirst), Err(Skip::Ipv6NonFirstFragment));
    let seven: String = (0..7).map(|i| if i == 6 { "3a00 0104 00000000 " } else { "3c00 0104 00000000 " }).collect();
    assert_eq!(read(&v6_frame("3c", &format!("{seven} 8000 0000"))), Err(Skip::Ipv6ChainTooLong));
    let six: String = (0..6).map(|i| if i == 5 { "3a00 0104 00000000 " } else { "3c00 0104 00000000 " }).collect();
    assert_eq!(verdict(&v6_frame("3c", &format!("{six} 8100 0000")), IcmpPolicy::Echo), Verdict::Drop);
    for t in ["85", "86", "87", "88", "89", "02"] {
        let m = v6_frame("3a", &format!("{t}00 0000"));
        assert_eq!(verdict(&m, IcmpPolicy::All), Verdict::Pass, "ICMPv6 type 0x{t}");
    }
    assert_eq!(verdict(&v6_frame("3a", "0100 0000"), IcmpPolicy::All), Verdict::Drop);
    assert_eq!(read(&v6_frame("01", "0800 0000")), Err(Skip::NotIcmp));
}

#[test]
fn reference_matches_addresses_as_the_spec_says() {
    let p = |s: &str| s.parse::<Prefix>().unwrap();
    let a = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(reference::matches(&p("198.51.100.0/24"), a("198.51.100.255")));
    assert!(!reference::matches(&p("198.51.100.0/24"), a("198.51.101.0")));
    assert!(reference::matches(&p("198.51.100.0/24"), a("::ffff:198.51.100.7")));
    assert!(!reference::matches(&p("::/0"), a("::ffff:198.51.100.7")));
    assert!(reference::matches(&p("::/0"), a("::fffe:c633:6407")));
    assert!(reference::matches(&p("0.0.0.0/0"), a("0.0.0.0")));
    assert!(!reference::matches(&p("0.0.0.0/0"), a("2001:db8::1")));
    assert!(reference::matches(&p("2001:db8:dead::/48"), a("2001:db8:dead:ffff::1")));
    assert!(!reference::matches(&p("2001:db8:dead::/48"), a("2001:db8:deae::")));
    assert!(reference::matches(&p("2001:db8::1"), a("2001:db8::1")));
    let rules = [p("192.0.2.0/24"), p("192.0.2.0/28"), p("192.0.2.10"), p("0.0.0.0/0")];
    assert_eq!(reference::longest_match(&rules, a("192.0.2.10")), Some(p("192.0.2.10")));
    assert_eq!(reference::longest_match(&rules, a("192.0.2.11")), Some(p("192.0.2.0/28")));
    assert_eq!(reference::longest_match(&rules, a("192.0.2.200")), Some(p("192.0.2.0/24")));
    assert_eq!(reference::longest_match(&rules, a("203.0.113.1")), Some(p("0.0.0.0/0")));
}
