//! The classifier, proven on crafted frames through BPF_PROG_TEST_RUN:
//! header variants, fragments, policies, and truncation at every length.
//! Needs root (it loads the real programs into the kernel).

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::packet::{Ext, Packet};
use icmpguard::addr::{Family, Prefix};
use icmpguard::events::{Direction, Event, Reason, Verdict as EventVerdict};
use icmpguard::icmp::TypeSet;
use icmpguard::kernel::Generation;
use icmpguard::plan::{blocks, entries, plan, IcmpPolicy, Limit, LogMode, Rules, Settings};
use libbpf_rs::{MapCore, RingBufferBuilder};

// The kernel's XDP actions, and what the egress program returns
// (bpf/icmpguard.h), from the bindings and the skeleton.
const XDP_DROP: u32 = libbpf_sys::XDP_DROP;
const XDP_PASS: u32 = libbpf_sys::XDP_PASS;
const TCX_DROP: u32 = icmpguard::skel::types::ig_egress_action::IG_EGRESS_DROP.0;
const TCX_NEXT: u32 = icmpguard::skel::types::ig_egress_action::IG_EGRESS_PASS.0;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum V {
    Pass,
    Drop,
}

const BLOCK: &[&str] = &["192.0.2.10", "198.51.100.0/24", "2001:db8::10", "2001:db8:dead::/48"];

fn filter(policy: IcmpPolicy) -> Generation {
    let mut g = Generation::create(4096).expect("loading the programs (are you root?)");
    g.set_settings(Settings { policy, ..Settings::default() }).unwrap();
    let mut rules: Vec<Prefix> = BLOCK.iter().map(|s| s.parse().unwrap()).collect();
    rules.sort_unstable();
    g.apply(&plan(blocks(&rules), &Rules::default())).unwrap();
    g
}

fn xdp(g: &Generation, frame: &[u8]) -> V {
    match g.test_run_xdp(frame, 1).expect("test run").retval {
        XDP_DROP => V::Drop,
        XDP_PASS => V::Pass,
        other => panic!("unexpected XDP verdict {other}"),
    }
}

fn tcx(g: &Generation, frame: &[u8]) -> V {
    match g.test_run_tcx(frame, 1).expect("test run").retval {
        TCX_DROP => V::Drop,
        TCX_NEXT => V::Pass,
        other => panic!("unexpected tcx verdict {other}"),
    }
}

fn check(g: &Generation, cases: &[(&str, Packet, V)]) {
    let mut wrong = Vec::new();
    for (name, p, want) in cases {
        let got = xdp(g, &p.bytes());
        if got != *want {
            wrong.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn echo_from_or_to_blocked_addresses_and_prefixes_is_dropped() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::Echo);
    check(
        &g,
        &[
            ("v4 exact source", Packet::echo("192.0.2.10", "192.0.2.1"), V::Drop),
            ("v4 exact source, reply", Packet::echo_reply("192.0.2.10", "192.0.2.1"), V::Drop),
            ("v4 exact destination", Packet::echo("192.0.2.1", "192.0.2.10"), V::Drop),
            ("v4 inside prefix", Packet::echo("198.51.100.77", "192.0.2.1"), V::Drop),
            ("v4 prefix as destination", Packet::echo("192.0.2.1", "198.51.100.0"), V::Drop),
            ("v4 next to prefix", Packet::echo("198.51.101.1", "192.0.2.1"), V::Pass),
            ("v4 neighbour", Packet::echo("192.0.2.20", "192.0.2.1"), V::Pass),
            ("v6 exact source", Packet::echo("2001:db8::10", "2001:db8::1"), V::Drop),
            ("v6 exact destination", Packet::echo("2001:db8::1", "2001:db8::10"), V::Drop),
            ("v6 inside prefix", Packet::echo("2001:db8:dead:beef::1", "2001:db8::1"), V::Drop),
            ("v6 reply inside prefix", Packet::echo_reply("2001:db8:dead::5", "2001:db8::1"), V::Drop),
            ("v6 next to prefix", Packet::echo("2001:db8:deae::1", "2001:db8::1"), V::Pass),
            ("v6 neighbour", Packet::echo("2001:db8::20", "2001:db8::1"), V::Pass),
            ("v4-mapped source in IPv6", Packet::echo("::ffff:192.0.2.10", "2001:db8::1"), V::Drop),
            ("v4-mapped prefix in IPv6", Packet::echo("2001:db8::1", "::ffff:198.51.100.3"), V::Drop),
            ("v4-mapped neighbour", Packet::echo("::ffff:192.0.2.20", "2001:db8::1"), V::Pass),
        ],
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn non_icmp_traffic_from_blocked_addresses_passes() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::All);
    check(
        &g,
        &[
            ("tcp v4", Packet::tcp("192.0.2.10", "192.0.2.1"), V::Pass),
            ("tcp v6", Packet::tcp("2001:db8::10", "2001:db8::1"), V::Pass),
            ("udp v4", Packet { l4: common::packet::L4::Udp, ..Packet::echo("192.0.2.10", "192.0.2.1") }, V::Pass),
        ],
    );
    // Not IP at all: ARP.
    let mut arp = Packet::echo("192.0.2.10", "192.0.2.1").bytes();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(xdp(&g, &arp), V::Pass);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn ipv4_options_of_every_length_are_skipped() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::Echo);
    for opt in (0..=40).step_by(4) {
        let blocked = Packet::echo("192.0.2.10", "192.0.2.1").options(opt);
        let allowed = Packet::echo("192.0.2.20", "192.0.2.1").options(opt);
        assert_eq!(xdp(&g, &blocked.bytes()), V::Drop, "{opt} option bytes, blocked");
        assert_eq!(xdp(&g, &allowed.bytes()), V::Pass, "{opt} option bytes, allowed");
    }
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn single_and_double_vlan_tags_are_parsed() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::Echo);
    check(
        &g,
        &[
            ("802.1Q v4", Packet::echo("192.0.2.10", "192.0.2.1").vlan(&[100]), V::Drop),
            ("802.1ad+802.1Q v4", Packet::echo("192.0.2.10", "192.0.2.1").vlan(&[100, 200]), V::Drop),
            ("802.1Q v6", Packet::echo("2001:db8::10", "2001:db8::1").vlan(&[7]), V::Drop),
            ("802.1ad+802.1Q v6", Packet::echo("2001:db8:dead::1", "2001:db8::1").vlan(&[7, 8]), V::Drop),
            ("802.1Q allowed", Packet::echo("192.0.2.20", "192.0.2.1").vlan(&[100]), V::Pass),
            ("802.1Q tcp", Packet::tcp("192.0.2.10", "192.0.2.1").vlan(&[100, 200]), V::Pass),
        ],
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn ipv6_extension_headers_before_icmpv6_are_walked() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::Echo);
    let b = || Packet::echo("2001:db8::10", "2001:db8::1");
    check(
        &g,
        &[
            ("hop-by-hop", b().ext(Ext::HopByHop(8)), V::Drop),
            ("hop-by-hop + destination options", b().ext(Ext::HopByHop(8)).ext(Ext::DestOpts(16)), V::Drop),
            ("routing", b().ext(Ext::Routing(24)), V::Drop),
            ("mobility header", b().ext(Ext::Mobility(16)), V::Drop),
            ("destination options + mobility", b().ext(Ext::DestOpts(8)).ext(Ext::Mobility(8)), V::Drop),
            ("authentication header", b().ext(Ext::Auth(3)), V::Drop),
            ("first fragment", b().ext(Ext::Fragment { offset: 0, more: true }), V::Drop),
            (
                "six headers",
                b().ext(Ext::HopByHop(8))
                    .ext(Ext::DestOpts(8))
                    .ext(Ext::Routing(8))
                    .ext(Ext::Fragment { offset: 0, more: true })
                    .ext(Ext::Auth(1))
                    .ext(Ext::DestOpts(8)),
                V::Drop,
            ),
            (
                "allowed with headers",
                Packet::echo("2001:db8::20", "2001:db8::1").ext(Ext::HopByHop(8)).ext(Ext::DestOpts(8)),
                V::Pass,
            ),
        ],
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn fragments_without_an_icmp_header_pass_and_chains_too_long_to_walk_pass() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::All);
    let v6 = || Packet::echo("2001:db8::10", "2001:db8::1");
    check(
        &g,
        &[
            ("v4 first fragment", Packet::echo("192.0.2.10", "192.0.2.1").frag(0, true), V::Drop),
            ("v4 non-first fragment", Packet::echo("192.0.2.10", "192.0.2.1").frag(185, false), V::Pass),
            ("v4 middle fragment", Packet::echo("192.0.2.10", "192.0.2.1").frag(1, true), V::Pass),
            ("v6 non-first fragment", v6().ext(Ext::Fragment { offset: 185, more: false }), V::Pass),
            (
                "v6 seven extension headers",
                v6().ext(Ext::HopByHop(8))
                    .ext(Ext::DestOpts(8))
                    .ext(Ext::Routing(8))
                    .ext(Ext::DestOpts(8))
                    .ext(Ext::Routing(8))
                    .ext(Ext::DestOpts(8))
                    .ext(Ext::DestOpts(8)),
                V::Pass,
            ),
        ],
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn echo_policy_drops_only_echo_and_never_pmtu_or_neighbour_discovery() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::Echo);
    check(
        &g,
        &[
            ("frag-needed", Packet::icmp("192.0.2.10", "192.0.2.1", 3, 4), V::Pass),
            ("port unreachable", Packet::icmp("192.0.2.10", "192.0.2.1", 3, 3), V::Pass),
            ("time exceeded", Packet::icmp("192.0.2.10", "192.0.2.1", 11, 0), V::Pass),
            ("timestamp", Packet::icmp("192.0.2.10", "192.0.2.1", 13, 0), V::Pass),
            ("packet-too-big", Packet::icmp("2001:db8::10", "2001:db8::1", 2, 0), V::Pass),
            ("v6 unreachable", Packet::icmp("2001:db8::10", "2001:db8::1", 1, 4), V::Pass),
            ("neighbour advertisement", Packet::icmp("2001:db8::10", "2001:db8::1", 136, 0), V::Pass),
        ],
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn all_policy_drops_every_icmp_but_pmtu_and_neighbour_discovery() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::All);
    let mut cases = vec![
        ("echo", Packet::echo("192.0.2.10", "192.0.2.1"), V::Drop),
        ("frag-needed", Packet::icmp("192.0.2.10", "192.0.2.1", 3, 4), V::Pass),
        ("port unreachable", Packet::icmp("192.0.2.10", "192.0.2.1", 3, 3), V::Drop),
        ("time exceeded", Packet::icmp("198.51.100.9", "192.0.2.1", 11, 0), V::Drop),
        ("timestamp", Packet::icmp("192.0.2.1", "192.0.2.10", 13, 0), V::Drop),
        ("packet-too-big", Packet::icmp("2001:db8::10", "2001:db8::1", 2, 0), V::Pass),
        ("v6 unreachable", Packet::icmp("2001:db8::10", "2001:db8::1", 1, 4), V::Drop),
        ("v6 time exceeded", Packet::icmp("2001:db8:dead::1", "2001:db8::1", 3, 0), V::Drop),
        ("v6 allowed unreachable", Packet::icmp("2001:db8::20", "2001:db8::1", 1, 4), V::Pass),
    ];
    for t in 133..=137u8 {
        cases.push(("neighbour discovery", Packet::icmp("2001:db8::10", "ff02::1", t, 0), V::Pass));
    }
    check(&g, &cases);
}

/// Truncating a blocked echo anywhere before the end of the ICMP type and
/// code must never drop it (nothing was read that says it is echo) and must
/// never read past the end (the verifier already forbids that; here we check
/// the verdicts). From there on, it is dropped.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_packet_truncated_at_every_length_is_never_misread() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::Echo);
    let packets = [
        Packet::echo("192.0.2.10", "192.0.2.1"),
        Packet::echo("192.0.2.10", "192.0.2.1").options(24).vlan(&[10, 20]),
        Packet::echo("2001:db8::10", "2001:db8::1").ext(Ext::HopByHop(8)).ext(Ext::DestOpts(16)),
        Packet::echo("2001:db8:dead::9", "2001:db8::1").vlan(&[5]).ext(Ext::Fragment { offset: 0, more: true }),
    ];
    for p in &packets {
        let full = p.bytes();
        let needed = p.l4_offset() + 2;
        for len in 0..=full.len() {
            let want = if len >= needed { V::Drop } else { V::Pass };
            match g.test_run_xdp(&full[..len], 1) {
                Ok(r) => {
                    let got = if r.retval == XDP_DROP { V::Drop } else { V::Pass };
                    assert_eq!(got, want, "{p:?} truncated to {len} of {} bytes", full.len());
                }
                // The kernel refuses frames shorter than an Ethernet header.
                Err(e) => assert!(len < 14, "test run of {len} bytes failed: {e}"),
            }
        }
    }
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn malformed_ip_headers_pass_untouched() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::All);
    let mut ihl_short = Packet::echo("192.0.2.10", "192.0.2.1").bytes();
    ihl_short[14] = 0x44; // IHL 4: shorter than an IPv4 header
    assert_eq!(xdp(&g, &ihl_short), V::Pass);
    let mut wrong_version = Packet::echo("192.0.2.10", "192.0.2.1").bytes();
    wrong_version[14] = 0x65;
    assert_eq!(xdp(&g, &wrong_version), V::Pass);
    let mut v6_says_v4 = Packet::echo("2001:db8::10", "2001:db8::1").bytes();
    v6_says_v4[14] = 0x40;
    assert_eq!(xdp(&g, &v6_says_v4), V::Pass);
    // An IHL that points past the end of the frame.
    let mut ihl_long = Packet::echo("192.0.2.10", "192.0.2.1").bytes();
    ihl_long.truncate(14 + 20 + 8);
    ihl_long[14] = 0x4f;
    assert_eq!(xdp(&g, &ihl_long), V::Pass);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn egress_program_drops_echo_to_blocked_destinations() {
    if !common::require_root() {
        return;
    }
    let g = filter(IcmpPolicy::Echo);
    for (p, want) in [
        (Packet::echo("192.0.2.1", "192.0.2.10"), V::Drop),
        (Packet::echo("192.0.2.1", "198.51.100.200"), V::Drop),
        (Packet::echo("2001:db8::1", "2001:db8:dead::1"), V::Drop),
        (Packet::echo("192.0.2.1", "192.0.2.20"), V::Pass),
        (Packet::icmp("192.0.2.1", "192.0.2.10", 3, 4), V::Pass),
        (Packet::tcp("192.0.2.1", "192.0.2.10"), V::Pass),
    ] {
        assert_eq!(tcx(&g, &p.bytes()), want, "{p:?}");
    }
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn rules_removed_by_a_reconcile_stop_matching_and_added_ones_start() {
    if !common::require_root() {
        return;
    }
    let mut g = filter(IcmpPolicy::Echo);
    let echo = Packet::echo("203.0.113.5", "192.0.2.1").bytes();
    assert_eq!(xdp(&g, &echo), V::Pass);
    let mut next: Vec<Prefix> = ["203.0.113.0/24", "2001:db8::10"].iter().map(|s| s.parse().unwrap()).collect();
    next.sort_unstable();
    let p = plan(blocks(&next), g.rules());
    assert_eq!((p.add.len(), p.remove.len()), (1, 3));
    g.apply(&p).unwrap();
    assert_eq!(xdp(&g, &echo), V::Drop);
    assert_eq!(xdp(&g, &Packet::echo("192.0.2.10", "192.0.2.1").bytes()), V::Pass);
    assert_eq!(xdp(&g, &Packet::echo("198.51.100.1", "192.0.2.1").bytes()), V::Pass);
    assert_eq!(xdp(&g, &Packet::echo("2001:db8::10", "2001:db8::1").bytes()), V::Drop);
}

/// The tables hold the IG_TABLE_LENS (4) longest prefix lengths of each
/// family; a change that brings a new length puts it in a free table slot
/// when it is longer than every trie length, in the trie when it is shorter
/// than every table length, and asks for a rebuild otherwise. Whichever
/// way, every rule matches, and the most specific one counts the drop.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn prefix_lengths_move_between_table_and_trie_and_the_most_specific_rule_counts() {
    if !common::require_root() {
        return;
    }
    use icmpguard::kernel::Outcome;
    const NO: u32 = icmpguard::skel::types::ig_abi::IG_NO_LEN.0;
    assert_eq!(icmpguard::skel::types::ig_abi::IG_TABLE_LENS.0, 4, "this test is written for four table lengths");
    let mut g = filter(IcmpPolicy::Echo);
    let set = |list: &[&str]| {
        let mut v: Vec<Prefix> = list.iter().map(|s| s.parse().unwrap()).collect();
        v.sort_unstable();
        v
    };
    let lens = |g: &Generation| {
        let s = g.maps.read_settings().expect("settings");
        (s.v4_lens, s.v4_prefixes)
    };
    let drops = |g: &Generation, p: &str| g.maps.read_drops(g.rules()[&p.parse::<Prefix>().unwrap()].id());
    let echo = |src: &str| Packet::echo(src, "192.0.2.1").bytes();
    const BASE: [&str; 4] = ["192.0.2.10", "198.51.100.0/24", "2001:db8::10", "2001:db8:dead::/48"];
    let with = |more: &[&str]| set(&[&BASE[..], more].concat());

    // BLOCK's one IPv4 prefix length (/24) is in the table, the trie empty.
    assert_eq!(lens(&g), ([24, NO, NO, NO], 0));

    // Shorter lengths while slots are free: into the table, in order.
    let step = with(&["198.51.96.0/20", "198.51.0.0/16", "198.48.0.0/12"]);
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([24, 20, 16, 12], 0));
    assert_eq!(xdp(&g, &echo("198.51.100.7")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.51.7.7")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.50.0.1")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.64.0.1")), V::Pass);
    assert_eq!((drops(&g, "198.51.100.0/24"), drops(&g, "198.51.0.0/16")), (1, 1));

    // /8 is shorter than every table length: into the trie.
    let step = with(&["198.51.96.0/20", "198.51.0.0/16", "198.48.0.0/12", "198.0.0.0/8"]);
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([24, 20, 16, 12], 1));
    assert_eq!(xdp(&g, &echo("198.7.7.7")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.51.100.8")), V::Drop);
    assert_eq!(drops(&g, "198.0.0.0/8"), 1);
    assert_eq!(drops(&g, "198.51.100.0/24"), 2, "the /24 inside the /8, /12, /16 and /20 counts its drops");

    // /28 is longer than every table length and no slot is free: a rebuild,
    // and the generation is left as it was.
    let with_28 = {
        let mut v = step.clone();
        v.push("198.51.100.16/28".parse().unwrap());
        v.sort_unstable();
        v
    };
    assert_eq!(g.apply(&plan(blocks(&with_28), g.rules())).unwrap(), Outcome::Rebuild);
    assert_eq!(lens(&g), ([24, 20, 16, 12], 1));
    assert_eq!(xdp(&g, &echo("198.51.100.20")), V::Drop);

    // A change that drops /24 and brings /22 at once needs a rebuild too:
    // the additions go in before the deletions, while /24 holds its slot.
    let no_24 = ["192.0.2.10", "2001:db8::10", "198.51.96.0/20", "198.51.0.0/16", "198.48.0.0/12", "198.0.0.0/8"];
    let step = set(&[&no_24[..], &["203.0.112.0/22"]].concat());
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Rebuild);
    // Without its /24 the slot frees; then /22 fits before /20.
    let without_24 = set(&no_24);
    assert_eq!(g.apply(&plan(blocks(&without_24), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([NO, 20, 16, 12], 1));
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([22, 20, 16, 12], 1));
    assert_eq!(xdp(&g, &echo("203.0.113.9")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.51.100.9")), V::Drop);
    assert_eq!(xdp(&g, &echo("203.0.116.1")), V::Pass);
    assert_eq!(drops(&g, "198.51.96.0/20"), 1, "the /20 counts once the /24 inside it is gone");

    // A fresh generation sized for the new blocklist takes the /28 too.
    let mut fresh = Generation::create_sized(icmpguard::kernel::Sizes::for_entries(blocks(&with_28), 1024)).unwrap();
    fresh.set_settings(Settings::default()).unwrap();
    assert_eq!(fresh.apply(&plan(blocks(&with_28), fresh.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&fresh), ([28, 24, 20, 16], 2));
    for (src, want) in [
        ("198.51.100.20", V::Drop),
        ("198.51.100.40", V::Drop),
        ("198.51.1.1", V::Drop),
        ("198.50.0.1", V::Drop),
        ("198.7.0.1", V::Drop),
        ("199.0.0.1", V::Pass),
    ] {
        assert_eq!(xdp(&fresh, &echo(src)), want, "{src}");
        assert_eq!(tcx(&fresh, &Packet::echo("192.0.2.1", src).bytes()), want, "{src} as destination");
    }
    assert_eq!(drops(&fresh, "198.51.100.16/28"), 2);
}

/// The hash and probe sequence of user space (src/kernel/table.rs) against
/// the program's: every address the daemon placed in a table, with the
/// table's random seed, is found by the program. Twenty generations, so
/// twenty seeds per family.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn the_program_finds_every_address_user_space_placed_whatever_the_seed() {
    if !common::require_root() {
        return;
    }
    for round in 0..20u32 {
        let mut g = Generation::create(4096).expect("loading the programs");
        g.set_settings(Settings::default()).unwrap();
        let addrs: Vec<String> = (0..300u32)
            .flat_map(|i| {
                let n = i.wrapping_mul(2_654_435_761).rotate_left(round);
                [
                    format!("198.51.{}.{}", (n >> 8) & 0xff, n & 0xff),
                    format!("2001:db8:{:x}:{:x}::{:x}", n >> 16, n & 0xffff, round + 1),
                ]
            })
            .collect();
        let mut rules: Vec<Prefix> = addrs.iter().map(|s| s.parse().unwrap()).collect();
        rules.sort_unstable();
        rules.dedup();
        let outcome = g.apply(&plan(blocks(&rules), &Rules::default())).unwrap();
        assert_eq!(outcome, icmpguard::kernel::Outcome::Applied, "round {round}: a table rebuild was asked for");
        let dst = |a: &str| if a.contains(':') { "2001:db8::1" } else { "192.0.2.1" };
        let missed: Vec<&String> =
            addrs.iter().filter(|a| xdp(&g, &Packet::echo(a, dst(a)).bytes()) != V::Drop).collect();
        assert!(missed.is_empty(), "round {round}: the program did not find {} of them: {:?}", missed.len(), missed);
    }
}

// ---------------------------------------------------------------------------
// Allow lists, type lists, dry run and the echo rate limit.

/// A generation enforcing `block` and `allow` (as the daemon plans them:
/// block entries inside an allowed prefix left out) with `settings`.
fn policy_filter(block: &[&str], allow: &[&str], settings: Settings) -> Generation {
    let set = |list: &[&str]| {
        let mut v: Vec<Prefix> = list.iter().map(|s| s.parse().unwrap()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (block, allow) = (set(block), set(allow));
    let mut g = Generation::create(4096).expect("loading the programs (are you root?)");
    g.set_settings(settings).unwrap();
    g.apply(&plan(entries(&block, &allow), &Rules::default())).unwrap();
    assert_eq!(g.rules().allows(), allow.len());
    g
}

/// Counters of one direction (enum ig_direction) as the programs keep them.
fn counters(g: &Generation, egress: bool) -> icmpguard::skel::types::ig_counters {
    g.maps.read_counters_by_direction()[usize::from(egress)]
}

/// The types of `list`, each of both families (a type a family lacks is
/// harmless: nothing of it is sent).
fn types(v4: &[u8], v6: &[u8]) -> IcmpPolicy {
    let mut t = TypeSet::default();
    for &x in v4 {
        t.insert(Family::V4, x);
    }
    for &x in v6 {
        t.insert(Family::V6, x);
    }
    IcmpPolicy::Types(t)
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn allowed_sources_and_destinations_pass_inside_blocked_prefixes() {
    if !common::require_root() {
        return;
    }
    let g = policy_filter(
        &["198.51.100.0/24", "192.0.2.10", "2001:db8:dead::/48", "2001:db8::10", "203.0.113.0/25"],
        &[
            "198.51.100.7",
            "192.0.2.99",
            "2001:db8:dead::5",
            "2001:db8:dead:1::/64",
            // Covers a block entry (203.0.113.0/25): allow wins.
            "203.0.113.0/24",
            // An IPv4 entry: an IPv4-mapped address is that address.
            "198.51.100.8",
        ],
        Settings { policy: IcmpPolicy::All, ..Settings::default() },
    );
    let before = counters(&g, false);
    let cases = [
        ("allowed source inside a blocked prefix", Packet::echo("198.51.100.7", "192.0.2.1"), V::Pass),
        ("its neighbour", Packet::echo("198.51.100.6", "192.0.2.1"), V::Drop),
        ("allowed source, blocked destination", Packet::echo("198.51.100.7", "192.0.2.10"), V::Pass),
        ("blocked source, allowed destination", Packet::echo("192.0.2.10", "192.0.2.99"), V::Pass),
        ("blocked source, allowed destination in a prefix", Packet::echo("198.51.100.1", "198.51.100.7"), V::Pass),
        ("blocked source, other destination", Packet::echo("192.0.2.10", "192.0.2.98"), V::Drop),
        ("allowed source, time exceeded", Packet::icmp("198.51.100.7", "192.0.2.1", 11, 0), V::Pass),
        ("v6 allowed address inside a blocked /48", Packet::echo("2001:db8:dead::5", "2001:db8::1"), V::Pass),
        ("v6 allowed /64 inside a blocked /48", Packet::echo("2001:db8:dead:1::77", "2001:db8::1"), V::Pass),
        ("v6 rest of the /48", Packet::echo("2001:db8:dead:2::77", "2001:db8::1"), V::Drop),
        ("v6 blocked source, allowed destination", Packet::echo("2001:db8::10", "2001:db8:dead:1::1"), V::Pass),
        ("allow covering a block entry", Packet::echo("203.0.113.5", "192.0.2.1"), V::Pass),
        ("allow covering a block entry, as destination", Packet::echo("192.0.2.10", "203.0.113.127"), V::Pass),
        ("IPv4-mapped source allowed by an IPv4 entry", Packet::echo("::ffff:198.51.100.8", "2001:db8::10"), V::Pass),
        ("IPv4-mapped neighbour", Packet::echo("::ffff:198.51.100.9", "2001:db8::1"), V::Drop),
        ("IPv4-mapped destination allowed", Packet::echo("2001:db8::10", "::ffff:198.51.100.8"), V::Pass),
    ];
    check(&g, &cases);
    let after = counters(&g, false);
    let passed = cases.iter().filter(|c| c.2 == V::Pass).count() as u64;
    let dropped = cases.len() as u64 - passed;
    assert_eq!(after.allowed - before.allowed, passed, "every pass here is for an allow entry");
    assert_eq!(after.dropped - before.dropped, dropped);
    assert_eq!(counters(&g, true).allowed, 0, "ingress only");

    // The egress program: the same entries.
    let before = counters(&g, true);
    for (p, want) in [
        (Packet::echo("192.0.2.1", "198.51.100.7"), V::Pass),
        (Packet::echo("192.0.2.1", "198.51.100.6"), V::Drop),
        (Packet::echo("192.0.2.10", "192.0.2.99"), V::Pass),
        (Packet::echo("2001:db8::1", "2001:db8:dead:1::9"), V::Pass),
        (Packet::echo("2001:db8::1", "2001:db8:dead:2::9"), V::Drop),
        (Packet::echo("2001:db8::1", "::ffff:198.51.100.8"), V::Pass),
    ] {
        assert_eq!(tcx(&g, &p.bytes()), want, "egress {p:?}");
    }
    let after = counters(&g, true);
    assert_eq!((after.allowed - before.allowed, after.dropped - before.dropped), (4, 2));

    // A type the policy does not drop is not "allowed": nothing was saved.
    let g = policy_filter(&["198.51.100.0/24"], &["198.51.100.7"], Settings::default());
    let before = counters(&g, false);
    assert_eq!(xdp(&g, &Packet::icmp("198.51.100.7", "192.0.2.1", 11, 0).bytes()), V::Pass);
    assert_eq!(xdp(&g, &Packet::icmp("198.51.100.6", "192.0.2.1", 11, 0).bytes()), V::Pass);
    let after = counters(&g, false);
    assert_eq!((after.icmp_seen - before.icmp_seen, after.allowed - before.allowed), (2, 0));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn block_everything_but_one_address() {
    if !common::require_root() {
        return;
    }
    let g = policy_filter(&["0.0.0.0/0", "::/0"], &["203.0.113.5", "2001:db8::5"], Settings::default());
    check(
        &g,
        &[
            ("allowed source", Packet::echo("203.0.113.5", "192.0.2.1"), V::Pass),
            ("allowed destination", Packet::echo("192.0.2.1", "203.0.113.5"), V::Pass),
            ("anyone else", Packet::echo("203.0.113.6", "192.0.2.1"), V::Drop),
            ("v6 allowed source", Packet::echo("2001:db8::5", "2001:db8::1"), V::Pass),
            ("v6 allowed destination", Packet::echo("2001:db8::1", "2001:db8::5"), V::Pass),
            ("v6 anyone else", Packet::echo("2001:db8::6", "2001:db8::1"), V::Drop),
            ("IPv4-mapped allowed", Packet::echo("::ffff:203.0.113.5", "2001:db8::1"), V::Pass),
            // ::/0 never matches an IPv4-mapped address; 0.0.0.0/0 does.
            ("IPv4-mapped both sides", Packet::echo("::ffff:203.0.113.6", "::ffff:192.0.2.1"), V::Drop),
        ],
    );
    for (p, want) in [
        (Packet::echo("192.0.2.1", "203.0.113.5"), V::Pass),
        (Packet::echo("192.0.2.1", "203.0.113.4"), V::Drop),
        (Packet::echo("203.0.113.5", "192.0.2.1"), V::Pass),
    ] {
        assert_eq!(tcx(&g, &p.bytes()), want, "egress {p:?}");
    }
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_type_list_drops_the_types_listed_and_never_pmtu_or_neighbour_discovery() {
    if !common::require_root() {
        return;
    }
    // icmp = ["timestamp-request"]
    let g = policy_filter(&["192.0.2.10"], &[], Settings { policy: types(&[13], &[]), ..Settings::default() });
    check(
        &g,
        &[
            ("timestamp request", Packet::icmp("192.0.2.10", "192.0.2.1", 13, 0), V::Drop),
            ("timestamp request to", Packet::icmp("192.0.2.1", "192.0.2.10", 13, 0), V::Drop),
            ("timestamp reply", Packet::icmp("192.0.2.10", "192.0.2.1", 14, 0), V::Pass),
            ("echo", Packet::echo("192.0.2.10", "192.0.2.1"), V::Pass),
            ("echo reply", Packet::echo_reply("192.0.2.10", "192.0.2.1"), V::Pass),
            ("timestamp request, not blocked", Packet::icmp("192.0.2.11", "192.0.2.1", 13, 0), V::Pass),
        ],
    );

    // icmp = ["destination-unreachable"]: ICMP 3 and ICMPv6 1.
    let g = policy_filter(
        &["192.0.2.10", "2001:db8::10"],
        &[],
        Settings { policy: types(&[3], &[1]), ..Settings::default() },
    );
    let mut cases = vec![
        ("v6 unreachable", Packet::icmp("2001:db8::10", "2001:db8::1", 1, 4), V::Drop),
        ("v6 echo", Packet::echo("2001:db8::10", "2001:db8::1"), V::Pass),
        ("v6 ICMP type 3 is time exceeded", Packet::icmp("2001:db8::10", "2001:db8::1", 3, 0), V::Pass),
        ("v4 type 1", Packet::icmp("192.0.2.10", "192.0.2.1", 1, 0), V::Pass),
        ("v4 echo", Packet::echo("192.0.2.10", "192.0.2.1"), V::Pass),
    ];
    for code in 0..=15u8 {
        let want = if code == 4 { V::Pass } else { V::Drop };
        cases.push((
            "v4 unreachable, code as given (4: frag-needed)",
            Packet::icmp("192.0.2.10", "192.0.2.1", 3, code),
            want,
        ));
    }
    check(&g, &cases);

    // The kernel's own guard: a bitmap with every bit set (what user space
    // never writes) still spares PMTU signals and neighbour discovery.
    let mut every = TypeSet::default();
    for t in 0..=255u8 {
        every.insert(Family::V4, t);
        every.insert(Family::V6, t);
    }
    let g = policy_filter(
        &["192.0.2.10", "2001:db8::10"],
        &[],
        Settings { policy: IcmpPolicy::Types(every), ..Settings::default() },
    );
    let mut cases = vec![
        ("packet-too-big", Packet::icmp("2001:db8::10", "2001:db8::1", 2, 0), V::Pass),
        ("packet-too-big, code 1", Packet::icmp("2001:db8::10", "2001:db8::1", 2, 1), V::Pass),
        ("frag-needed", Packet::icmp("192.0.2.10", "192.0.2.1", 3, 4), V::Pass),
        ("port unreachable", Packet::icmp("192.0.2.10", "192.0.2.1", 3, 3), V::Drop),
        ("v6 router renumbering (138)", Packet::icmp("2001:db8::10", "2001:db8::1", 138, 0), V::Drop),
        ("v6 132", Packet::icmp("2001:db8::10", "2001:db8::1", 132, 0), V::Drop),
        ("v6 type 0", Packet::icmp("2001:db8::10", "2001:db8::1", 0, 0), V::Drop),
        ("v6 type 255", Packet::icmp("2001:db8::10", "2001:db8::1", 255, 0), V::Drop),
    ];
    for t in 133..=137u8 {
        cases.push(("v6 neighbour discovery", Packet::icmp("2001:db8::10", "2001:db8::1", t, 0), V::Pass));
        cases.push(("v6 neighbour discovery, to", Packet::icmp("2001:db8::1", "2001:db8::10", t, 0), V::Pass));
        // IPv4 types 133-137 are nothing special.
        cases.push(("v4 133-137", Packet::icmp("192.0.2.10", "192.0.2.1", t, 0), V::Drop));
    }
    check(&g, &cases);
    for (p, want) in [
        (Packet::icmp("2001:db8::1", "2001:db8::10", 135, 0), V::Pass),
        (Packet::icmp("2001:db8::1", "2001:db8::10", 2, 0), V::Pass),
        (Packet::icmp("192.0.2.1", "192.0.2.10", 3, 4), V::Pass),
        (Packet::icmp("192.0.2.1", "192.0.2.10", 3, 1), V::Drop),
    ] {
        assert_eq!(tcx(&g, &p.bytes()), want, "egress {p:?}");
    }

    // Only the exempt bits, set by hand: nothing is dropped at all.
    let mut exempt = TypeSet::default();
    exempt.insert(Family::V6, 2);
    for t in 133..=137u8 {
        exempt.insert(Family::V6, t);
    }
    let g =
        policy_filter(&["2001:db8::10"], &[], Settings { policy: IcmpPolicy::Types(exempt), ..Settings::default() });
    let before = counters(&g, false);
    for t in [2u8, 133, 134, 135, 136, 137] {
        assert_eq!(xdp(&g, &Packet::icmp("2001:db8::10", "2001:db8::1", t, 0).bytes()), V::Pass, "ICMPv6 {t}");
    }
    assert_eq!(counters(&g, false).dropped, before.dropped);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_dry_run_passes_what_it_would_drop_and_counts_it() {
    if !common::require_root() {
        return;
    }
    let g = policy_filter(
        &["192.0.2.10", "2001:db8::10"],
        &["192.0.2.99"],
        Settings { dry_run: true, log: LogMode::Blocked, ..Settings::default() },
    );
    let events = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&events);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&g.maps.events, move |record: &[u8]| {
            sink.borrow_mut().push(record.to_vec());
            0
        })
        .unwrap();
    let ring = builder.build().unwrap();
    let take = || {
        ring.consume().unwrap();
        std::mem::take(&mut *events.borrow_mut())
            .iter()
            .map(|r| Event::decode(r).expect("an event"))
            .collect::<Vec<Event>>()
    };
    let id = g.rules()[&"192.0.2.10".parse::<Prefix>().unwrap()].id();

    let before = counters(&g, false);
    assert_eq!(xdp(&g, &Packet::echo("192.0.2.10", "192.0.2.1").bytes()), V::Pass);
    assert_eq!(xdp(&g, &Packet::echo("2001:db8::1", "2001:db8::10").bytes()), V::Pass);
    assert_eq!(xdp(&g, &Packet::echo("192.0.2.10", "192.0.2.99").bytes()), V::Pass, "allowed");
    assert_eq!(xdp(&g, &Packet::echo("192.0.2.11", "192.0.2.1").bytes()), V::Pass, "not blocked");
    let after = counters(&g, false);
    assert_eq!(after.dropped - before.dropped, 2, "what would have been dropped is counted");
    assert_eq!(after.allowed - before.allowed, 1);
    assert_eq!(g.maps.read_drops(id), 1, "and counted for its rule");
    let ev = take();
    // log = blocked: the would-drops are logged, the passes are not.
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| e.verdict == EventVerdict::WouldDrop && e.reason == Reason::Block), "{ev:?}");
    assert_eq!(ev[0].rule, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(ev[1].rule, Some("2001:db8::10".parse().unwrap()));

    // Egress too.
    let before = counters(&g, true);
    assert_eq!(tcx(&g, &Packet::echo("192.0.2.1", "192.0.2.10").bytes()), V::Pass);
    assert_eq!(counters(&g, true).dropped - before.dropped, 1);
    assert_eq!(g.maps.read_drops(id), 2);
    let ev = take();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].verdict, ev[0].direction), (EventVerdict::WouldDrop, Direction::Egress));

    // The rate limit in a dry run: counted as limited, passed.
    let mut g = g;
    g.set_settings(Settings { dry_run: true, limit: Limit { echo: 1, burst: 1 }, ..Settings::default() }).unwrap();
    let before = counters(&g, false);
    for _ in 0..3 {
        assert_eq!(xdp(&g, &Packet::echo("203.0.113.1", "192.0.2.1").bytes()), V::Pass);
    }
    assert_eq!(counters(&g, false).limited - before.limited, 2);
}

/// The echo rate limit as a test sees it: verdicts of back-to-back
/// requests (test runs of one packet each) and the limited counter.
fn pings(g: &Generation, src: &str, n: usize) -> Vec<V> {
    let dst = if src.contains(':') { "2001:db8::1" } else { "192.0.2.1" };
    let frame = Packet::echo(src, dst).bytes();
    (0..n).map(|_| xdp(g, &frame)).collect()
}

fn passes_then_drops(passes: usize, drops: usize) -> Vec<V> {
    let mut v = vec![V::Pass; passes];
    v.extend(vec![V::Drop; drops]);
    v
}

/// Runs `f(cpu)` on CPUs 0 and 1 at once, in a thread pinned to each,
/// started together (what the races below need).
fn on_two_cpus(f: impl Fn(usize) + Sync) {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "this test needs two CPUs to race; the machine has {cpus}");
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for cpu in 0..2 {
            let (f, start) = (&f, &start);
            s.spawn(move || {
                let mut set = CpuSet::new();
                set.set(cpu).expect("a CPU number");
                sched_setaffinity(Pid::from_raw(0), &set).expect("pinning the thread to its CPU");
                start.wait();
                f(cpu);
            });
        }
    });
}

/// Two CPUs flooding one source at once share its one bucket: between
/// them they get a burst, not a burst each (a per-CPU bucket would admit
/// twice as many), and racing never admits more than the bucket holds
/// and what it refilled while the floods ran (a second's worth each
/// second: under QEMU without KVM the floods take seconds).
///
/// Where the kernel has BPF atomics (5.12+: the programs for 5.18+ and
/// for 5.12-5.17) the floods begin on a source new to its set, so both
/// CPUs' first requests race to start its bucket (a compare-and-swap: the
/// loser charges the winner's bucket). Older kernels start a bucket with
/// a plain store, which a CPU delayed before it can make after another
/// has charged the bucket (icmpguard.toml(5) says so; once 41 of 1000
/// extra on 5.10 under QEMU without KVM, where a vCPU stalls): there the
/// source's first request comes before the floods, and this test proves
/// the shared bucket and its atomic charges, not that start.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn two_cpus_flooding_one_source_share_its_bucket() {
    if !common::require_root() {
        return;
    }
    const BURST: u64 = 1000;
    const RUNS: u32 = 200_000;
    // One a second: no refill worth counting while the two floods run.
    let g = policy_filter(&[], &[], Settings { limit: Limit { echo: 1, burst: BURST as u32 }, ..Settings::default() });
    let frame = Packet::echo("203.0.113.1", "192.0.2.1").bytes();
    let t0 = now_ns();
    let facilities = icmpguard::kernel::probe::facilities();
    let compare_and_swap = facilities.atomics;
    // The program this kernel gets (the kernel keeps 15 bytes of a name).
    let id = icmpguard::kernel::sys::prog_id(g.xdp_fd()).unwrap();
    let name = icmpguard::kernel::sys::prog_name_by_id(id).unwrap();
    let want = match facilities.xdp_variant() {
        icmpguard::kernel::probe::XdpVariant::Full => "icmpguard_xdp",
        icmpguard::kernel::probe::XdpVariant::Atomic => "icmpguard_xdp_a",
        icmpguard::kernel::probe::XdpVariant::Compat => "icmpguard_xdp_c",
    };
    assert_eq!(name, want, "the XDP program for {facilities:?}");
    let before = counters(&g, false);
    if !compare_and_swap {
        assert_eq!(xdp(&g, &frame), V::Pass, "the source's first request");
    }
    on_two_cpus(|_| {
        g.test_run_xdp(&frame, RUNS).expect("BPF_PROG_TEST_RUN");
    });
    // Whole seconds the floods could have refilled, rounded up.
    let refilled = (now_ns() - t0).div_ceil(1_000_000_000);
    let after = counters(&g, false);
    let seen = after.icmp_seen - before.icmp_seen;
    let admitted = seen - (after.limited - before.limited);
    let how = if compare_and_swap { "a new source" } else { "a source set up before" };
    let how = format!("{how}, {name}");
    eprintln!("two CPUs: {admitted} of {seen} admitted from a bucket of {BURST} in under {refilled} s ({how})");
    assert_eq!(seen, 2 * u64::from(RUNS) + u64::from(!compare_and_swap));
    assert!(refilled < BURST / 2, "the floods took {refilled} s: too slow to tell a shared bucket from one per CPU");
    assert!(
        admitted <= BURST + refilled,
        "{admitted} admitted by two CPUs from a bucket of {BURST} ({how}), refilled for at most {refilled} s"
    );
    assert!(admitted >= BURST / 2, "{admitted} admitted: racing CPUs refused far too many");
}

/// Each probe of the kernel's facilities answers as the kernel's version
/// says: BPF atomics from 5.12, bpf_xdp_load_bytes from 5.18, tcx from
/// 6.6. The choice of program and hook rests on them, and the older paths'
/// test runs (ICMPGUARD_TEST_KERNEL_LACKS) would pass on the wrong program
/// if a probe said no where it should say yes. The kernel tier runs this on
/// Debian's 5.10, 6.1 and 6.12.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn each_probe_answers_as_the_kernel_version_says() {
    if !common::require_root() {
        return;
    }
    use icmpguard::kernel::{probe, sys};
    let f = probe::facilities();
    let v = f.version().expect("the kernel's version");
    assert_eq!(sys::probe_atomics().unwrap(), v >= (5, 12), "BPF atomics on {}", f.release);
    assert_eq!(
        sys::probe_xdp_helper(libbpf_sys::BPF_FUNC_xdp_load_bytes).unwrap(),
        v >= (5, 18),
        "bpf_xdp_load_bytes on {}",
        f.release
    );
    assert_eq!(sys::probe_tcx().unwrap(), v >= (6, 6), "tcx on {}", f.release);
}

/// A filter blocking `rules`, its drop counters of `slots` slots a rule
/// (`None`: as many as the daemon would give them on this machine).
fn blocking_with_drop_slots(rules: &[Prefix], slots: Option<u32>) -> Generation {
    let sizes = icmpguard::kernel::Sizes { drop_slots: slots, ..icmpguard::kernel::Sizes::uniform(4096) };
    let mut g = Generation::create_sized(sizes).unwrap();
    g.set_settings(Settings::default()).unwrap();
    g.apply(&plan(blocks(rules), &Rules::default())).unwrap();
    g
}

/// Two CPUs dropping for one rule at once count every drop, whether each
/// has its own slot of the rule's counter (a short list) or they share
/// one (a long list on a machine of many CPUs, made here with a single
/// slot on two: an add that is not atomic loses counts under the race).
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn two_cpus_dropping_for_one_rule_count_every_drop_in_shared_or_own_slots() {
    if !common::require_root() {
        return;
    }
    const RUNS: u32 = 300_000;
    let possible = libbpf_rs::num_possible_cpus().unwrap() as u32;
    let rules: Vec<Prefix> = vec!["198.51.100.0/24".parse().unwrap()];
    for slots in [None, Some(1)] {
        let g = blocking_with_drop_slots(&rules, slots);
        let id = g.rules()[&rules[0]].id();
        let value = g.maps.raw_drops(id).expect("the rule's drop counter");
        assert_eq!(value.len() as u32, 8 * slots.unwrap_or(possible), "slots of the counter ({slots:?})");
        on_two_cpus(|cpu| {
            // Each CPU its own source in the /24: one rule, two flows.
            let frame = Packet::echo(&format!("198.51.100.{}", 10 + cpu), "192.0.2.1").bytes();
            let r = g.test_run_xdp(&frame, RUNS).expect("BPF_PROG_TEST_RUN");
            assert_eq!(r.retval, XDP_DROP);
        });
        let counted = g.maps.read_drops(id);
        eprintln!("two CPUs, {slots:?} slots: {counted} drops counted of {}", 2 * u64::from(RUNS));
        assert_eq!(counted, 2 * u64::from(RUNS), "drops counted with {slots:?} slots a rule");
        assert_eq!(counters(&g, false).dropped, 2 * u64::from(RUNS));
    }
}

/// A migration carries each rule's drops into the new maps when the two
/// count in different numbers of slots (the new maps are for a longer
/// list): the sum, not lost.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn drop_counts_survive_a_migration_between_shared_and_own_slots() {
    if !common::require_root() {
        return;
    }
    let rules: Vec<Prefix> = ["192.0.2.10", "198.51.100.0/24"].iter().map(|s| s.parse().unwrap()).collect();
    let make = |slots: Option<u32>| blocking_with_drop_slots(&rules, slots);
    let drops = |g: &Generation, p: &Prefix| g.maps.read_drops(g.rules()[p].id());
    for (from, to) in [(Some(1), None), (None, Some(1))] {
        let old = make(from);
        assert_eq!(old.test_run_xdp(&Packet::echo("192.0.2.10", "203.0.113.1").bytes(), 7).unwrap().retval, XDP_DROP);
        assert_eq!(old.test_run_xdp(&Packet::echo("198.51.100.7", "203.0.113.1").bytes(), 3).unwrap().retval, XDP_DROP);
        let mut new = make(to);
        new.carry_counters_from(&old.maps).unwrap();
        assert_eq!((drops(&new, &rules[0]), drops(&new, &rules[1])), (7, 3), "{from:?} slots to {to:?}");
        // And the new maps count on from there.
        assert_eq!(xdp(&new, &Packet::echo("198.51.100.8", "203.0.113.1").bytes()), V::Drop);
        assert_eq!(drops(&new, &rules[1]), 4);
    }
    // Programs loaded on pinned maps (a restart that adopts them) count in
    // the slots the maps have, not in as many as this machine would give
    // new ones.
    let pinned = make(Some(1));
    let meta = icmpguard::skel::types::ig_meta { abi_version: icmpguard::kernel::abi_version(), ..Default::default() };
    pinned.maps.write_meta(&meta).unwrap();
    let icmpguard::kernel::Reuse::Adopted(adopted) = Generation::adopt(&pinned.maps).unwrap() else {
        panic!("maps with one slot a rule are not adopted");
    };
    assert_eq!(adopted.test_run_xdp(&Packet::echo("192.0.2.10", "203.0.113.1").bytes(), 5).unwrap().retval, XDP_DROP);
    assert_eq!(pinned.maps.raw_drops(pinned.rules()[&rules[0]].id()).map(|v| v.len()), Some(8));
    assert_eq!(drops(&pinned, &rules[0]), 5);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn the_echo_limit_admits_a_burst_per_source_then_drops() {
    if !common::require_root() {
        return;
    }
    // One request a second, bursts of five: the rate is slow enough that
    // no request of a test refills a bucket.
    let g = policy_filter(
        &["192.0.2.10"],
        &["192.0.2.77", "2001:db8:a11::/64"],
        Settings { limit: Limit { echo: 1, burst: 5 }, ..Settings::default() },
    );
    let c0 = counters(&g, false);
    assert_eq!(pings(&g, "203.0.113.1", 6), passes_then_drops(5, 1));
    assert_eq!(counters(&g, false).limited - c0.limited, 1);
    // Another source has its own bucket.
    assert_eq!(pings(&g, "203.0.113.2", 7), passes_then_drops(5, 2));
    assert_eq!(counters(&g, false).limited - c0.limited, 3);
    // The IPv4-mapped form of a source is that source.
    assert_eq!(pings(&g, "::ffff:203.0.113.1", 1), [V::Drop]);
    assert_eq!(pings(&g, "::ffff:203.0.113.3", 6), passes_then_drops(5, 1));
    assert_eq!(pings(&g, "203.0.113.3", 1), [V::Drop]);

    // IPv6: one bucket per /64.
    assert_eq!(pings(&g, "2001:db8:1::1", 3), [V::Pass; 3]);
    assert_eq!(pings(&g, "2001:db8:1::2", 3), passes_then_drops(2, 1));
    assert_eq!(pings(&g, "2001:db8:1:0:ffff::9", 1), [V::Drop]);
    assert_eq!(pings(&g, "2001:db8:1:1::1", 6), passes_then_drops(5, 1), "another /64");

    // Echo replies and other types are never limited, nor is ICMP type 128
    // (an ICMPv6 echo request's number) in IPv4, nor ICMPv6 type 8.
    let before = counters(&g, false);
    for p in [
        Packet::echo_reply("203.0.113.1", "192.0.2.1"),
        Packet::icmp("203.0.113.1", "192.0.2.1", 13, 0),
        Packet::icmp("203.0.113.1", "192.0.2.1", 128, 0),
        Packet::icmp("203.0.113.1", "192.0.2.1", 3, 1),
        Packet::echo_reply("2001:db8:1::1", "2001:db8::1"),
        Packet::icmp("2001:db8:1::1", "2001:db8::1", 8, 0),
        Packet::icmp("2001:db8:1::1", "2001:db8::1", 1, 0),
    ] {
        for _ in 0..8 {
            assert_eq!(xdp(&g, &p.bytes()), V::Pass, "{p:?}");
        }
    }
    assert_eq!(counters(&g, false).limited, before.limited);

    // Egress is never limited.
    let before = counters(&g, true);
    for _ in 0..10 {
        assert_eq!(tcx(&g, &Packet::echo("203.0.113.1", "192.0.2.1").bytes()), V::Pass);
        assert_eq!(tcx(&g, &Packet::echo("192.0.2.1", "203.0.113.4").bytes()), V::Pass);
    }
    assert_eq!(counters(&g, true).limited, before.limited);

    // An allowed source or destination is never limited.
    let before = counters(&g, false);
    assert_eq!(pings(&g, "192.0.2.77", 10), [V::Pass; 10]);
    assert_eq!(pings(&g, "2001:db8:a11::1", 10), [V::Pass; 10]);
    let to_allowed = Packet::echo("203.0.113.9", "192.0.2.77").bytes();
    for _ in 0..10 {
        assert_eq!(xdp(&g, &to_allowed), V::Pass, "to an allowed destination");
    }
    let after = counters(&g, false);
    assert_eq!((after.limited - before.limited, after.allowed - before.allowed), (0, 30));

    // A blocked source is dropped for its block entry, not limited.
    let before = counters(&g, false);
    assert_eq!(pings(&g, "192.0.2.10", 7), [V::Drop; 7]);
    let after = counters(&g, false);
    assert_eq!((after.dropped - before.dropped, after.limited - before.limited), (7, 0));
    // ... and never charged: it has no bucket.
    assert_eq!(g.maps.limit_bucket(limit_key("192.0.2.10")).unwrap(), None);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn the_echo_limit_refills_with_time() {
    if !common::require_root() {
        return;
    }
    // Ten a second (an interval of 100 ms), no burst.
    const INTERVAL: u64 = 100_000_000;
    let g = policy_filter(&[], &[], Settings { limit: Limit { echo: 10, burst: 1 }, ..Settings::default() });
    let frame = Packet::echo("203.0.113.1", "192.0.2.1").bytes();
    assert_eq!(xdp(&g, &frame), V::Pass);
    // Two runs within one test run: the second comes within the interval
    // of the first, so it is dropped (the retval is the last run's). Under
    // QEMU without KVM a vCPU can stall for longer: such a try proves
    // nothing and is made again, after the bucket has refilled.
    let mut tries = 0;
    loop {
        let before = counters(&g, false);
        let t0 = now_ns();
        let retval = g.test_run_xdp(&frame, 2).unwrap().retval;
        if now_ns() - t0 < INTERVAL {
            assert_eq!(retval, XDP_DROP, "the second request within the interval");
            assert!(counters(&g, false).limited - before.limited >= 1);
            break;
        }
        tries += 1;
        assert!(tries < 5, "five test runs of two requests each took longer than the interval");
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    for _ in 0..3 {
        // The bucket refills in 100 ms: wait that long and more (the new
        // kernels' coarse clock moves a tick at a time: 4 ms at HZ=250,
        // 10 ms at HZ=100).
        std::thread::sleep(std::time::Duration::from_millis(125));
        assert_eq!(xdp(&g, &frame), V::Pass, "after 125 ms");
    }
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns, in ns.
fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// How far the rate limit's clock (`limit_clock` in the program: jiffies
/// times their length, which count from an offset of their own) is ahead
/// of CLOCK_MONOTONIC, learnt from the bucket a new source starts with
/// (its time then plus `interval`); to a tick or two.
fn limit_clock_offset(g: &Generation, interval: u64) -> u64 {
    const PROBE: &str = "198.51.100.250";
    let t0 = now_ns();
    assert_eq!(pings(g, PROBE, 1), [V::Pass], "a new source's first request");
    let t1 = now_ns();
    let started = read_bucket(g, PROBE).wrapping_sub(interval);
    started.wrapping_sub(t0 + (t1 - t0) / 2)
}

fn limit_key(src: &str) -> u64 {
    icmpguard::kernel::limit_key(src.parse().unwrap())
}

fn write_bucket(g: &Generation, src: &str, tat: u64) {
    let key = limit_key(src);
    // Where the source's bucket is, or a way of its set.
    g.maps.write_limit_bucket(key, 0, tat).expect("writing a bucket");
}

fn read_bucket(g: &Generation, src: &str) -> u64 {
    g.maps.limit_bucket(limit_key(src)).unwrap().expect("a bucket")
}

/// The set of the rate limiter a source's key falls in, as
/// bpf/icmpguard.h defines it: ((k * IG_HASH_MUL) >> 32) * sets >> 32.
fn limit_set_of(g: &Generation, key: u64) -> u64 {
    let mul = icmpguard::kernel::abi_constants().hash_mul;
    ((key.wrapping_mul(mul) >> 32) * u64::from(g.maps.limits.max_entries())) >> 32
}

/// Five sources share a set of four ways: the fifth takes the way of the
/// source least ahead, never that of a source over its limit, which stays
/// refused; the one forgotten starts over with a full bucket.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_full_set_forgets_the_source_least_ahead_never_one_over_its_limit() {
    if !common::require_root() {
        return;
    }
    // One a second, a burst of 5.
    let g = policy_filter(&[], &[], Settings { limit: Limit { echo: 1, burst: 5 }, ..Settings::default() });
    let ways = icmpguard::skel::types::ig_abi::IG_LIMIT_WAYS.0 as usize;
    // Five /64s of 2001:db8::/32 in one set.
    let mut by_set: std::collections::HashMap<u64, Vec<String>> = std::collections::HashMap::new();
    let same = (0u32..1 << 20)
        .find_map(|i| {
            let src = format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff);
            let v = by_set.entry(limit_set_of(&g, limit_key(&src))).or_default();
            v.push(src);
            (v.len() == ways + 1).then(|| v.clone())
        })
        .expect("five /64s in one set");
    let (over, others) = (&same[0], &same[1..]);
    // The first source takes its whole burst and is over its limit.
    assert_eq!(pings(&g, over, 6), passes_then_drops(5, 1));
    // Three more fill the set; each is admitted.
    for src in &others[..ways - 1] {
        assert_eq!(pings(&g, src, 1), [V::Pass], "{src}");
    }
    // The fifth takes the way of the first of those three (least ahead).
    assert_eq!(pings(&g, &others[ways - 1], 1), [V::Pass]);
    assert_eq!(g.maps.limit_bucket(limit_key(&others[0])).unwrap(), None, "the source least ahead is forgotten");
    for src in std::iter::once(over).chain(&others[1..]) {
        assert!(g.maps.limit_bucket(limit_key(src)).unwrap().is_some(), "{src} is still tracked");
    }
    assert_eq!(pings(&g, over, 1), [V::Drop], "the source over its limit stays refused");
    // The forgotten one starts over: a full burst.
    assert_eq!(pings(&g, &others[0], 5), [V::Pass; 5]);
}

/// A bucket left by something else (a wrapped or stale time, one from
/// before a change of the limit, one idle for long) never locks a source
/// out: the limiter starts it over, and from there it counts as usual.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn stale_or_wrapped_buckets_start_over() {
    if !common::require_root() {
        return;
    }
    const SECOND: u64 = 1_000_000_000;
    const TICKS: u64 = 50_000_000;
    let g = policy_filter(&[], &[], Settings { limit: Limit { echo: 1, burst: 5 }, ..Settings::default() });
    let (interval, tolerance) = (SECOND, 4 * SECOND);
    let cpus = libbpf_rs::num_possible_cpus().unwrap() as u64;
    let stale = tolerance + interval * (cpus + 1);
    // The program's clock, to a tick or two (TICKS below is the margin).
    let offset = limit_clock_offset(&g, interval);
    let now_ns = || now_ns().wrapping_add(offset);

    let starts_over = |src: &str, tat: u64, what: &str| {
        write_bucket(&g, src, tat);
        let t0 = now_ns();
        assert_eq!(pings(&g, src, 1), [V::Pass], "{what}: admitted");
        let tat = read_bucket(&g, src);
        let t1 = now_ns();
        assert!(
            tat + TICKS > t0 + interval && tat <= t1 + interval + TICKS,
            "{what}: the bucket starts over (tat {tat}, now {t0}..{t1})"
        );
        assert_eq!(pings(&g, src, 5), passes_then_drops(4, 1), "{what}: then the usual burst");
    };
    starts_over("203.0.113.1", u64::MAX - 10, "wrapped (u64::MAX - 10)");
    starts_over("203.0.113.2", 1, "far past (1)");
    starts_over("203.0.113.3", 0, "zero");
    starts_over("203.0.113.4", now_ns() + 1000 * SECOND, "1000 s ahead");
    starts_over("203.0.113.5", now_ns() + stale + SECOND, "just past the stale bound");
    starts_over("203.0.113.6", now_ns() + (1 << 63), "half the clock ahead");

    // Within the bounds, a bucket is believed. At the tolerance (less a
    // margin: the clock moves a tick at a time): one more request.
    write_bucket(&g, "203.0.113.7", now_ns() + tolerance - TICKS);
    assert_eq!(pings(&g, "203.0.113.7", 2), [V::Pass, V::Drop], "at the tolerance");
    // Past the tolerance but within the stale bound: refused, and left as
    // it is (a refused request does not move the time).
    let tat = now_ns() + tolerance + interval + interval / 2;
    write_bucket(&g, "203.0.113.8", tat);
    assert_eq!(pings(&g, "203.0.113.8", 3), [V::Drop; 3], "over the tolerance");
    assert_eq!(read_bucket(&g, "203.0.113.8"), tat);
    // Just idle (the time passed a moment ago): a full bucket again.
    write_bucket(&g, "203.0.113.9", now_ns() - TICKS);
    assert_eq!(pings(&g, "203.0.113.9", 6), passes_then_drops(5, 1), "idle");
}
