//! The classifier, proven on crafted frames through BPF_PROG_TEST_RUN:
//! header variants, fragments, policies, and truncation at every length.
//! Needs root (it loads the real programs into the kernel).

mod common;

use common::packet::{Ext, Packet};
use icmpguard::addr::Prefix;
use icmpguard::kernel::Generation;
use icmpguard::plan::{blocks, plan, IcmpPolicy, Rules, Settings};

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

/// The tables hold the two longest prefix lengths of each family; a change
/// that brings a new length puts it in a free table slot when it is longer
/// than every trie length, in the trie when it is shorter than every table
/// length, and asks for a rebuild otherwise. Whichever way, every rule
/// matches, and the most specific one counts the drop.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn prefix_lengths_move_between_table_and_trie_and_the_most_specific_rule_counts() {
    if !common::require_root() {
        return;
    }
    use icmpguard::kernel::Outcome;
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
    const NO: u32 = icmpguard::skel::types::ig_abi::IG_NO_LEN.0;
    let drops = |g: &Generation, p: &str| g.maps.read_drops(g.rules()[&p.parse::<Prefix>().unwrap()]);
    let echo = |src: &str| Packet::echo(src, "192.0.2.1").bytes();

    // BLOCK's one IPv4 prefix length (/24) is in the table, the trie empty.
    assert_eq!(lens(&g), ([24, NO], 0));

    // /16 is shorter than /24 and a slot is free: into the table.
    let step = set(&["192.0.2.10", "198.51.100.0/24", "198.51.0.0/16", "2001:db8::10", "2001:db8:dead::/48"]);
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([24, 16], 0));
    assert_eq!(xdp(&g, &echo("198.51.100.7")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.51.7.7")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.52.0.1")), V::Pass);
    assert_eq!((drops(&g, "198.51.100.0/24"), drops(&g, "198.51.0.0/16")), (1, 1));

    // /8 is shorter than both table lengths: into the trie.
    let step =
        set(&["192.0.2.10", "198.51.100.0/24", "198.51.0.0/16", "198.0.0.0/8", "2001:db8::10", "2001:db8:dead::/48"]);
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([24, 16], 1));
    assert_eq!(xdp(&g, &echo("198.7.7.7")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.51.100.8")), V::Drop);
    assert_eq!(drops(&g, "198.0.0.0/8"), 1);
    assert_eq!(drops(&g, "198.51.100.0/24"), 2, "the /24 inside the /8 and /16 counts its drops");

    // /28 is longer than every table length and no slot is free: a rebuild,
    // and the generation is left as it was.
    let with_28 = {
        let mut v = step.clone();
        v.push("198.51.100.16/28".parse().unwrap());
        v.sort_unstable();
        v
    };
    assert_eq!(g.apply(&plan(blocks(&with_28), g.rules())).unwrap(), Outcome::Rebuild);
    assert_eq!(lens(&g), ([24, 16], 1));
    assert_eq!(xdp(&g, &echo("198.51.100.20")), V::Drop);

    // A change that drops /24 and brings /20 at once needs a rebuild too:
    // the additions go in before the deletions, while /24 holds its slot.
    let step = set(&["192.0.2.10", "198.51.0.0/16", "198.0.0.0/8", "203.0.112.0/20", "2001:db8::10"]);
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Rebuild);
    // Without its /24 the slot frees; then /20 fits between /16 and the trie.
    let without_24 = set(&["192.0.2.10", "198.51.0.0/16", "198.0.0.0/8", "2001:db8::10"]);
    assert_eq!(g.apply(&plan(blocks(&without_24), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([NO, 16], 1));
    assert_eq!(g.apply(&plan(blocks(&step), g.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&g), ([20, 16], 1));
    assert_eq!(xdp(&g, &echo("203.0.113.9")), V::Drop);
    assert_eq!(xdp(&g, &echo("198.51.100.9")), V::Drop);
    assert_eq!(xdp(&g, &echo("203.0.128.1")), V::Pass);
    assert_eq!(drops(&g, "198.51.0.0/16"), 2);

    // A fresh generation sized for the new blocklist takes the /28 too.
    let mut fresh = Generation::create_sized(icmpguard::kernel::Sizes::for_entries(blocks(&with_28), 1024)).unwrap();
    fresh.set_settings(Settings::default()).unwrap();
    assert_eq!(fresh.apply(&plan(blocks(&with_28), fresh.rules())).unwrap(), Outcome::Applied);
    assert_eq!(lens(&fresh), ([28, 24], 2));
    for (src, want) in [
        ("198.51.100.20", V::Drop),
        ("198.51.100.40", V::Drop),
        ("198.51.1.1", V::Drop),
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
