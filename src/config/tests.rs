//! `Config::parse` on whole files: the schema, the walk and the fast path
//! together, each problem with the position the file has it at.

use super::*;

fn parse(text: &str) -> Result<Config, Vec<Diagnostic>> {
    Config::parse(Path::new("t.toml"), text)
}

fn errors(text: &str) -> Vec<String> {
    parse(text).expect_err("accepted").iter().map(Diagnostic::headline).collect()
}

#[test]
fn minimal_file_gets_the_documented_defaults() {
    let c = parse("interfaces = [\"eth0\"]\nblock = [\"192.0.2.10\"]\n").unwrap();
    assert_eq!(c.interfaces, vec![Interface::parse("eth0").unwrap()]);
    assert_eq!(c.block, vec!["192.0.2.10".parse().unwrap()]);
    assert_eq!(c.icmp, IcmpPolicy::Echo);
    assert_eq!(c.mode, AttachMode::Auto);
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/icmpguard"));
    assert_eq!(c.events, Events { log: LogMode::All, rate_limit: 100 });
    assert_eq!(c.syslog, Syslog { facility: Facility::Daemon, socket: PathBuf::from("/dev/log") });
}

#[test]
fn every_key_is_read() {
    let c = parse(
        r#"
interfaces = ["eth0", "eth1", "eth0"]
block = ["192.0.2.10", "::ffff:192.0.2.10", "2001:db8::/32"]
icmp = "all"
mode = "generic"
pin_dir = "/sys/fs/bpf/other"
[events]
log = "blocked"
rate_limit = 0
[syslog]
facility = "local3"
socket = "/run/test.sock"
"#,
    )
    .unwrap();
    assert_eq!(c.interfaces.len(), 2, "duplicates collapse");
    assert_eq!(c.block.len(), 2, "v4-mapped duplicates collapse");
    assert_eq!(c.icmp, IcmpPolicy::All);
    assert_eq!(c.mode, AttachMode::Generic);
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/other"));
    assert_eq!(c.events, Events { log: LogMode::Blocked, rate_limit: 0 });
    assert_eq!(c.syslog.facility.code(), 19);
    assert_eq!(c.syslog.socket, PathBuf::from("/run/test.sock"));
}

#[test]
fn unknown_keys_are_errors_with_position() {
    assert_eq!(
        errors("interfaces = []\nblock = []\nblok = [\"192.0.2.1\"]\n"),
        vec!["t.toml:3:1: unknown field `blok`, expected one of `interfaces`, `block`, `allow`, `icmp`, `dry_run`, `mode`, `pin_dir`, `events`, `syslog`, `limit`, `metrics`"]
    );
    assert_eq!(
        errors("interfaces = []\nblock = []\n[events]\nrate = 5\n"),
        vec!["t.toml:4:1: unknown field `rate`, expected `log` or `rate_limit`"]
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let e = errors(
        "interfaces = 5\nblock = [\"192.0.2.1/24\"]\nicmp = \"ping\"\n[foo]\na = 1\n[events]\nrate = 5\nlog = \"x\"\n",
    );
    let at: Vec<&str> = e.iter().map(|h| h.split(": ").next().unwrap_or_default()).collect();
    assert_eq!(at, ["t.toml:1:14", "t.toml:2:10", "t.toml:3:8", "t.toml:4:2", "t.toml:7:1", "t.toml:8:7"], "{e:#?}");
    assert!(e[3].contains("unknown field `foo`"), "{e:#?}");
    // A key whose value is refused is not also missing; one that is
    // absent is.
    let e = errors("interfaces = 5\nblock = 5\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    let e = errors("interfaces = []\nblok = []\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[1].contains("missing key `block`"), "{e:#?}");
    let d = parse("interfaces = []\nblock = []\nicmp = 1\nmode = 2\n").unwrap_err();
    assert_eq!((d[0].excerpt.as_str(), d[1].excerpt.as_str()), ("icmp = 1", "mode = 2"));
    let e = errors("interfaces = []\nblock = []\nevents = { log = \"\u{e9}\u{e9}\", rate_limit = \"x\" }\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[1].starts_with("t.toml:3:37: "), "{e:#?}");
}

#[test]
fn there_is_no_cap_on_the_problems_reported() {
    let text: String = (0..100).map(|i| format!("k{i} = {i}\n")).collect();
    let e = errors(&format!("interfaces = []\nblock = []\n{text}"));
    assert_eq!(e.len(), 100, "{e:#?}");
    assert!(e[99].starts_with("t.toml:102:1: unknown field `k99`"), "{e:#?}");
}

#[test]
fn a_problem_past_a_fast_block_list_is_where_the_file_has_it() {
    // The fast scanner takes the list's content out before toml reads
    // the rest: positions past it are moved back.
    let text =
        "interfaces = []\nblock = [\n  \"192.0.2.1\",\n  \"192.0.2.300\",\n]\nicmp = \"x\"\nmode = \"native\" \"x\"\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "a syntax error is the one diagnostic: {e:#?}");
    assert!(e[0].starts_with("t.toml:7:17: "), "{e:#?}");
    let e = errors("interfaces = []\nblock = [\"192.0.2.1\", \"192.0.2.300\"] # x\n[events]\nlog = 1\nbogus = 2\n");
    let at: Vec<&str> = e.iter().map(|h| h.split(": ").next().unwrap_or_default()).collect();
    assert_eq!(at, ["t.toml:2:23", "t.toml:4:7", "t.toml:5:1"], "{e:#?}");
}

#[test]
fn a_value_of_the_wrong_type_says_what_the_key_takes() {
    for (text, want) in [
        ("icmp = 5", "t.toml:3:8: invalid type: integer `5`, expected `\"echo\"`, `\"all\"` or a list of ICMP types"),
        ("mode = true", "t.toml:3:8: invalid type: boolean `true`, expected one of `auto`, `native`, `generic`"),
        ("pin_dir = [\"/x\"]", "t.toml:3:11: invalid type: array, expected an absolute path in quotes"),
        ("events = \"all\"", "t.toml:3:10: invalid type: string \"all\", expected a table"),
        ("events.log = { x = 1 }", "t.toml:3:14: invalid type: table, expected one of `all`, `blocked`, `none`"),
        ("syslog.socket = 0x10", "t.toml:3:17: invalid type: integer `16`, expected an absolute path in quotes"),
        ("events.rate_limit = 1.5", "t.toml:3:21: invalid type: floating point `1.5`, expected a whole number"),
        ("events.rate_limit = 2024-01-01", "t.toml:3:21: invalid type: date-time `2024-01-01`, expected a whole"),
        ("events.rate_limit = 4294967296", "t.toml:3:21: invalid value: integer `4294967296`, expected a whole"),
    ] {
        let e = errors(&format!("interfaces = []\nblock = []\n{text}\n"));
        assert_eq!(e.len(), 1, "{text}: {e:#?}");
        assert!(e[0].starts_with(want), "{text}: {e:#?}");
    }
    let e = errors("interfaces = [\"a:b\", 1, {}]\nblock = []\n");
    let at: Vec<&str> = e.iter().map(|h| h.split(": ").next().unwrap_or_default()).collect();
    assert_eq!(at, ["t.toml:1:15", "t.toml:1:22", "t.toml:1:25"], "{e:#?}");
    assert!(e[1].ends_with("expected an interface name in quotes, such as \"eth0\""), "{e:#?}");
}

#[test]
fn the_names_of_values_are_the_files() {
    assert_eq!(IcmpPolicy::All.to_string(), "all");
    assert_eq!(AttachMode::Generic.to_string(), "generic");
    let c = parse("interfaces = []\nblock = []\n[syslog]\nfacility = \"local7\"\n").unwrap();
    assert_eq!(c.syslog.facility, Facility::Local7);
}

#[test]
fn every_bad_address_is_reported() {
    let e = errors("interfaces = []\nblock = [\n  \"192.0.2.300\",\n  \"192.0.2.1\",\n  \"192.0.2.1/24\",\n]\n");
    assert_eq!(e.len(), 2);
    assert!(e[0].starts_with("t.toml:3:3: \"192.0.2.300\" is not an IPv4 or IPv6 address"), "{e:?}");
    assert!(e[1].starts_with("t.toml:5:3: \"192.0.2.1/24\" has host bits set"), "{e:?}");
}

#[test]
fn wrong_types_and_values_are_errors() {
    assert_eq!(errors("interfaces = \"eth0\"\nblock = []\n").len(), 1);
    let e = errors("interfaces = []\nblock = [1]\n");
    assert!(e[0].starts_with("t.toml:2:10: expected an address or prefix in quotes"), "{e:?}");
    let e = errors("interfaces = []\nblock = []\nicmp = \"ping\"\n");
    assert_eq!(e, vec!["t.toml:3:8: unknown variant `ping`, expected `echo` or `all`"]);
    let e = errors("interfaces = []\nblock = []\n[events]\nrate_limit = -1\n");
    assert!(e[0].starts_with("t.toml:4:14: "), "{e:?}");
}

#[test]
fn missing_block_is_never_an_empty_blocklist() {
    let e = errors("interfaces = [\"eth0\"]\n");
    assert!(e[0].contains("missing key `block`"), "{e:?}");
    let e = errors("");
    assert!(e[0].contains("missing key `interfaces`"), "{e:?}");
}

#[test]
fn bad_interfaces_paths_and_sockets_are_errors() {
    let e = errors(
        "interfaces = [\"eth0:1\", \"averyveryverylongname\"]\nblock = []\npin_dir = \"/sys/fs/bpf/a.b\"\n[syslog]\nsocket = \"dev/log\"\n",
    );
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].starts_with("t.toml:1:15: "), "{e:?}");
    assert!(e[1].starts_with("t.toml:1:25: "), "{e:?}");
    assert!(e[2].starts_with("t.toml:3:11: "), "{e:?}");
    assert!(e[3].starts_with("t.toml:5:10: "), "{e:?}");
}

#[test]
fn syntax_errors_have_a_position() {
    let e = errors("interfaces = [\"eth0\"\nblock = []\n");
    assert!(e[0].starts_with("t.toml:"), "{e:?}");
}

// ------------------------------------------------ allow, icmp, dry_run, [limit]

use crate::addr::Family;
use crate::icmp::TypeSet;

fn parse_warned(text: &str) -> (Config, Vec<String>) {
    let (c, w) = Config::parse_with_warnings(Path::new("t.toml"), text).expect("refused");
    (c, w.iter().map(Diagnostic::headline).collect())
}

fn warnings(text: &str) -> Vec<String> {
    parse_warned(text).1
}

fn prefixes(list: &[&str]) -> Vec<crate::addr::Prefix> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn types(list: &[(Family, u8)]) -> IcmpPolicy {
    let mut s = TypeSet::default();
    for (f, t) in list {
        s.insert(*f, *t);
    }
    IcmpPolicy::Types(s)
}

#[test]
fn the_new_keys_have_their_documented_defaults() {
    let (c, w) = parse_warned("interfaces = []\nblock = [\"192.0.2.10\"]\n");
    assert!(w.is_empty(), "{w:?}");
    assert!(c.allow.is_empty());
    assert!(!c.dry_run);
    assert_eq!(c.icmp, IcmpPolicy::Echo);
    assert_eq!(c.limit, LimitConfig { echo: 0, burst: 1, sources: 65536 });
}

#[test]
fn allow_takes_addresses_and_prefixes_of_both_families_sorted_without_duplicates() {
    let (c, w) = parse_warned(
        "interfaces = []\nblock = []\nallow = [\n  \"2001:db8::/32\",\n  \"198.51.100.0/24\",\n  \"192.0.2.10\",\n  \"::ffff:192.0.2.10\",\n  \"2001:db8:1::5\",\n  '203.0.113.0/24',\n  \"192.0.2.10\",\n]\n",
    );
    assert!(w.is_empty(), "{w:?}");
    let mut want = prefixes(&["192.0.2.10", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "2001:db8:1::5"]);
    want.sort();
    assert_eq!(c.allow, want);
    // An empty list is an empty list.
    assert!(parse("interfaces = []\nblock = []\nallow = []\n").unwrap().allow.is_empty());
}

#[test]
fn bad_allow_entries_are_errors_where_the_file_has_them() {
    let e = errors(
        "interfaces = []\nblock = []\nallow = [\"192.0.2.300\", \"192.0.2.1/24\", 5, \"2001:db8::1/32\", \"\", [\"x\"]]\n",
    );
    assert_eq!(
        e,
        [
            "t.toml:3:10: \"192.0.2.300\" is not an IPv4 or IPv6 address or prefix (examples: \"192.0.2.10\", \"198.51.100.0/24\", \"2001:db8::/32\")",
            "t.toml:3:25: \"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?",
            "t.toml:3:41: expected an address or prefix in quotes, such as \"192.0.2.10\", found the integer 5",
            "t.toml:3:44: \"2001:db8::1/32\" has host bits set; did you mean \"2001:db8::/32\"?",
            "t.toml:3:62: empty address; remove the entry or write an address",
            "t.toml:3:66: expected an address or prefix in quotes, such as \"192.0.2.10\", found an array",
        ],
        "{e:#?}"
    );
    let d = parse("interfaces = []\nblock = []\nallow = [\"192.0.2.300\"]\n").unwrap_err();
    assert_eq!((d[0].excerpt.as_str(), d[0].caret_at, d[0].width), ("allow = [\"192.0.2.300\"]", 9, 13));
}

#[test]
fn allow_of_the_wrong_type_says_what_it_takes() {
    assert_eq!(
        errors("interfaces = []\nblock = []\nallow = \"192.0.2.1\"\n"),
        ["t.toml:3:9: invalid type: string \"192.0.2.1\", expected an array of addresses and prefixes, such as [\"192.0.2.10\", \"198.51.100.0/24\"]"]
    );
    let e = errors("interfaces = []\nblock = []\n[allow]\na = 1\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].starts_with("t.toml:3:1: invalid type: table, expected an array"), "{e:#?}");
}

/// The block list before and after the allow list: the fast scanner cuts
/// the block array out of the text in one order and not the other, and
/// the positions must be the file's either way.
#[test]
fn allow_positions_are_exact_whichever_list_comes_first() {
    let allow = "allow = [\n  \"203.0.113.5\",\n  \"192.0.2.1/24\",\n  true,\n]\n";
    let block = "block = [\n  \"192.0.2.10\", # é, a comment of two-byte characters\n  \"198.51.100.7\",\n  \"192.0.2.11\",\n]\n";
    for text in [format!("interfaces = []\n{block}{allow}"), format!("interfaces = []\n{allow}{block}")] {
        assert!(super::block::scan(&text).is_some(), "the fast scanner must take the block list: {text}");
    }
    let before = errors(&format!("interfaces = []\n{block}{allow}"));
    assert_eq!(
        before,
        [
            "t.toml:9:3: \"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?",
            "t.toml:10:3: expected an address or prefix in quotes, such as \"192.0.2.10\", found the boolean true",
        ],
        "{before:#?}"
    );
    let after = errors(&format!("interfaces = []\n{allow}{block}"));
    assert_eq!(
        after,
        [
            "t.toml:4:3: \"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?",
            "t.toml:5:3: expected an address or prefix in quotes, such as \"192.0.2.10\", found the boolean true",
        ],
        "{after:#?}"
    );
    // Both lists bad, the block one first: each error at its own place.
    let e = errors("interfaces = []\nblock = [\n  \"192.0.2.300\",\n]\nallow = [\n  \"192.0.2.301\",\n]\n");
    let at: Vec<&str> = e.iter().map(|h| h.split(": ").next().unwrap_or_default()).collect();
    assert_eq!(at, ["t.toml:3:3", "t.toml:6:3"], "{e:#?}");
}

#[test]
fn an_allow_entry_that_covers_block_entries_is_a_warning_at_the_allow_entry() {
    let allow =
        "allow = [\n  \"192.0.2.10\",\n  \"198.51.100.0/24\",\n  \"2001:db8::/32\",\n  \"203.0.113.0/24\",\n]\n";
    let block = "block = [\n  \"192.0.2.10\",\n  \"198.51.100.7\",\n  \"2001:db8::1\",\n  \"2001:db8:1::/48\",\n  \"2001:db8:2::/48\",\n  \"192.0.2.11\",\n]\n";
    let same = "\"192.0.2.10\" is both allowed and blocked: allow wins, the block entry has no effect";
    let one = "allowed \"198.51.100.0/24\" covers blocked \"198.51.100.7\": allow wins, the block entry has no effect";
    let many =
        "allowed \"2001:db8::/32\" covers 3 block entries (\"2001:db8::1\" first): allow wins, they have no effect";
    // The allow list first (the block list is cut out after it) ...
    let (c, w) = parse_warned(&format!("interfaces = []\n{allow}{block}"));
    assert_eq!(w, [format!("t.toml:3:3: {same}"), format!("t.toml:4:3: {one}"), format!("t.toml:5:3: {many}")]);
    assert_eq!(c.block.len(), 6, "the covered block entries stay in the file's list");
    assert_eq!(c.allow.len(), 4);
    // ... and after it: the same warnings, at the allow entries' places.
    let w = warnings(&format!("interfaces = []\n{block}{allow}"));
    assert_eq!(w, [format!("t.toml:11:3: {same}"), format!("t.toml:12:3: {one}"), format!("t.toml:13:3: {many}")]);
    // Config::parse is the same parse without the warnings (the block
    // list lies elsewhere in that file).
    let mut other = parse(&format!("interfaces = []\n{block}{allow}")).unwrap();
    assert_eq!(other.block_span, Some(25..135));
    other.block_span = c.block_span.clone();
    assert_eq!(other, c);
}

#[test]
fn cover_warnings_on_one_line_and_with_mapped_or_partial_overlaps() {
    // An IPv4-mapped allow entry is its IPv4 address; the warning is at
    // the entry as the file writes it.
    let w = warnings("interfaces = []\nblock = [\"192.0.2.10\"]\nallow = [\"203.0.113.1\", \"::ffff:192.0.2.10\"]\n");
    assert_eq!(
        w,
        ["t.toml:3:25: \"192.0.2.10\" is both allowed and blocked: allow wins, the block entry has no effect"]
    );
    // An allow prefix inside a block prefix does not cover it: the block
    // entry still drops for the rest. Other families never cover.
    let w = warnings("interfaces = []\nblock = [\"192.0.2.0/24\", \"2001:db8::/32\"]\nallow = [\"192.0.2.0/25\", \"192.0.2.128\", \"0.0.0.0/1\"]\n");
    assert!(w.is_empty(), "{w:#?}");
    // /0 covers every block entry of its family.
    let w = warnings(
        "interfaces = []\nblock = [\"192.0.2.0/24\", \"203.0.113.9\", \"2001:db8::/32\"]\nallow = [\"0.0.0.0/0\"]\n",
    );
    assert_eq!(
        w,
        ["t.toml:3:10: allowed \"0.0.0.0/0\" covers 2 block entries (\"192.0.2.0/24\" first): allow wins, they have no effect"]
    );
    // A duplicated allow entry warns once, at its first place.
    let w = warnings("interfaces = []\nblock = [\"192.0.2.10\"]\nallow = [\"192.0.2.10\", \"192.0.2.10\"]\n");
    assert_eq!(
        w,
        ["t.toml:3:10: \"192.0.2.10\" is both allowed and blocked: allow wins, the block entry has no effect"]
    );
}

#[test]
fn a_block_entry_covered_by_several_allow_entries_is_named_once_by_the_most_specific() {
    // An address both allowed and blocked is said so, even under a broader allow prefix.
    let w = warnings(
        "interfaces = []\nallow = [\"192.0.2.10\", \"192.0.2.0/24\", \"192.0.2.0/25\"]\nblock = [\"192.0.2.10\", \"198.51.100.0/24\"]\n",
    );
    assert_eq!(
        w,
        ["t.toml:2:10: \"192.0.2.10\" is both allowed and blocked: allow wins, the block entry has no effect"]
    );
}

#[test]
fn cover_warnings_are_capped_with_a_count_of_the_rest() {
    let list: String = (10..32).map(|i| format!("  \"192.0.2.{i}\",\n")).collect();
    let w = warnings(&format!("interfaces = []\nallow = [\n{list}]\nblock = [\n{list}]\n"));
    assert_eq!(w.len(), 21, "{w:#?}");
    // Twenty warnings, the first twenty allow entries in address order, and
    // one for the rest at the first allow entry in address order.
    assert_eq!(
        w[0],
        "t.toml:3:3: \"192.0.2.10\" is both allowed and blocked: allow wins, the block entry has no effect"
    );
    assert_eq!(w[1], "t.toml:3:3: 2 more allow entries cover block entries");
    assert!(w[20].starts_with("t.toml:22:3: \"192.0.2.29\" is both allowed and blocked"), "{w:#?}");
    assert!(!w.iter().any(|h| h.contains("192.0.2.30") || h.contains("192.0.2.31")), "{w:#?}");
}

#[test]
fn icmp_lists_select_the_named_types() {
    use Family::{V4, V6};
    let c = parse(
        "interfaces = []\nblock = []\nicmp = [\"echo-request\", \"icmp:3\", \"icmpv6:200\", \"timestamp-request\", \"destination-unreachable\", 'time-exceeded', \"ping\", \"icmp:0\", \"icmpv6:255\", \"mld-listener-query\"]\n",
    )
    .unwrap();
    assert_eq!(
        c.icmp,
        types(&[
            (V4, 8),
            (V6, 128),
            (V4, 3),
            (V6, 200),
            (V4, 13),
            (V6, 1),
            (V4, 11),
            (V6, 3),
            (V4, 0),
            (V6, 255),
            (V6, 130),
        ])
    );
    assert_eq!(parse("interfaces = []\nblock = []\nicmp = [\"icmp:5\"]\n").unwrap().icmp, types(&[(V4, 5)]));
    assert_eq!(
        parse("interfaces = []\nblock = []\nicmp = \"all\"\n").unwrap().icmp,
        IcmpPolicy::All,
        "the strings stay the strings"
    );
    assert_eq!(parse("interfaces = []\nblock = []\nicmp = \"echo\"\n").unwrap().icmp, IcmpPolicy::Echo);
    assert_eq!(
        parse("interfaces = []\nblock = []\nicmp = [\"timestamp-request\", \"echo-request\"]\n")
            .unwrap()
            .icmp
            .to_string(),
        "[\"echo-request\", \"timestamp-request\"]"
    );
}

#[test]
fn icmp_names_that_can_never_be_dropped_or_are_no_type_are_errors_that_say_why() {
    let pmtu6 = "packet-too-big (ICMPv6 2) carries path-MTU discovery; dropping it black-holes connections (RFC 8201), so it is never dropped";
    let nd = "ICMPv6 133-137 are neighbour discovery (RFC 4861), how IPv6 resolves addresses on the link; they are never dropped";
    let e = errors(
        "interfaces = []\nblock = []\nicmp = [\n  \"packet-too-big\",\n  \"icmpv6:2\",\n  \"fragmentation-needed\",\n  \"neighbour-solicitation\",\n  \"icmpv6:135\",\n  \"port-unreachable\",\n  \"bogus\",\n  \"icmp:256\",\n  7,\n  \"echo-request\",\n  \"neighbor-advertisement\",\n  \"icmpv6:133\",\n  \"icmpv6:137\",\n  \"icmp:x\",\n  \"udp:3\",\n  \"host-redirect\",\n]\n",
    );
    assert_eq!(
        e,
        [
            format!("t.toml:4:3: \"packet-too-big\" cannot be listed: {pmtu6}"),
            format!("t.toml:5:3: \"icmpv6:2\" cannot be listed: {pmtu6}"),
            "t.toml:6:3: \"fragmentation-needed\" cannot be listed: it carries path-MTU discovery, and dropping it black-holes connections (RFC 1191); it is never dropped (list \"destination-unreachable\" for the other codes)".to_string(),
            format!("t.toml:7:3: \"neighbour-solicitation\" cannot be listed: {nd}"),
            format!("t.toml:8:3: \"icmpv6:135\" cannot be listed: {nd}"),
            "t.toml:9:3: \"port-unreachable\" names a code, and icmpguard selects whole types: write \"destination-unreachable\"".to_string(),
            "t.toml:10:3: unknown ICMP type \"bogus\"; write a name as iptables --icmp-type or ip6tables --icmpv6-type spells it (such as \"echo-request\", \"timestamp-request\", \"destination-unreachable\"), or \"icmp:N\" / \"icmpv6:N\"".to_string(),
            "t.toml:11:3: \"icmp:256\": the type after `icmp:` must be a number from 0 to 255".to_string(),
            "t.toml:12:3: expected an ICMP type name in quotes, such as \"echo-request\", found the integer 7".to_string(),
            format!("t.toml:14:3: \"neighbor-advertisement\" cannot be listed: {nd}"),
            format!("t.toml:15:3: \"icmpv6:133\" cannot be listed: {nd}"),
            format!("t.toml:16:3: \"icmpv6:137\" cannot be listed: {nd}"),
            "t.toml:17:3: \"icmp:x\": the type after `icmp:` must be a number from 0 to 255".to_string(),
            "t.toml:18:3: unknown ICMP type \"udp:3\"; write a name as iptables --icmp-type or ip6tables --icmpv6-type spells it (such as \"echo-request\", \"timestamp-request\", \"destination-unreachable\"), or \"icmp:N\" / \"icmpv6:N\"".to_string(),
            "t.toml:19:3: \"host-redirect\" names a code, and icmpguard selects whole types: write \"redirect\"".to_string(),
        ],
        "{e:#?}"
    );
    let d = parse("interfaces = []\nblock = []\nicmp = [\"echo-request\", \"icmpv6:2\"]\n").unwrap_err();
    assert_eq!((d[0].line, d[0].col, d[0].caret_at, d[0].width), (3, 25, 24, 10));
}

#[test]
fn an_empty_icmp_list_and_wrong_types_are_errors() {
    assert_eq!(
        errors("interfaces = []\nblock = []\nicmp = []\n"),
        ["t.toml:3:8: an empty `icmp` list drops nothing for a blocked address; write \"echo\" (ping), \"all\", or the types to drop"]
    );
    let e = errors("interfaces = []\nblock = []\nicmp = [[\"echo-request\"], true]\n");
    assert_eq!(
        e,
        [
            "t.toml:3:9: expected an ICMP type name in quotes, such as \"echo-request\", found an array",
            "t.toml:3:27: expected an ICMP type name in quotes, such as \"echo-request\", found the boolean true",
        ],
        "{e:#?}"
    );
    assert_eq!(
        errors("interfaces = []\nblock = []\nicmp = { echo = true }\n"),
        ["t.toml:3:8: invalid type: table, expected `\"echo\"`, `\"all\"` or a list of ICMP types, such as [\"echo-request\", \"timestamp-request\"]"]
    );
}

#[test]
fn names_whose_icmpv6_namesake_is_neighbour_discovery_select_ipv4_with_a_warning() {
    let (c, w) = parse_warned(
        "interfaces = []\nblock = [\n  \"192.0.2.1\",\n]\nicmp = [\"echo-request\", \"redirect\",\n  \"router-solicitation\", \"router-advertisement\"]\n",
    );
    assert_eq!(
        w,
        [
            "t.toml:5:25: \"redirect\" selects the IPv4 message only: its ICMPv6 namesake (type 137) is neighbour discovery, which is never dropped",
            "t.toml:6:3: \"router-solicitation\" selects the IPv4 message only: its ICMPv6 namesake (type 133) is neighbour discovery, which is never dropped",
            "t.toml:6:26: \"router-advertisement\" selects the IPv4 message only: its ICMPv6 namesake (type 134) is neighbour discovery, which is never dropped",
        ]
    );
    assert_eq!(
        c.icmp,
        types(&[(Family::V4, 8), (Family::V6, 128), (Family::V4, 5), (Family::V4, 10), (Family::V4, 9)])
    );
}

#[test]
fn dry_run_is_a_boolean() {
    assert!(parse("interfaces = []\nblock = []\ndry_run = true\n").unwrap().dry_run);
    assert!(!parse("interfaces = []\nblock = []\ndry_run = false\n").unwrap().dry_run);
    for (value, found) in [("\"yes\"", "string \"yes\""), ("1", "integer `1`"), ("[true]", "array")] {
        assert_eq!(
            errors(&format!("interfaces = []\nblock = []\ndry_run = {value}\n")),
            [format!("t.toml:3:11: invalid type: {found}, expected `true` or `false`")]
        );
    }
}

#[test]
fn limit_values_and_their_defaults() {
    let limit = |text: &str| parse(&format!("interfaces = []\nblock = []\n{text}\n")).unwrap().limit;
    assert_eq!(limit("[limit]\necho = 10"), LimitConfig { echo: 10, burst: 20, sources: 65536 });
    assert_eq!(limit("[limit]\necho = 10\nburst = 3\nsources = 1"), LimitConfig { echo: 10, burst: 3, sources: 1 });
    assert_eq!(limit("[limit]\necho = 0\nsources = 4194304"), LimitConfig { echo: 0, burst: 1, sources: 4194304 });
    assert_eq!(limit("[limit]"), LimitConfig { echo: 0, burst: 1, sources: 65536 });
    assert_eq!(
        limit("limit = { echo = 1000000000, burst = 4294967295 }"),
        LimitConfig { echo: 1_000_000_000, burst: u32::MAX, sources: 65536 }
    );
    assert_eq!(
        limit("limit.echo = 1000000000"),
        LimitConfig { echo: 1_000_000_000, burst: 2_000_000_000, sources: 65536 }
    );
}

#[test]
fn limit_values_out_of_range_are_errors_at_the_value() {
    let e = errors("interfaces = []\nblock = []\n[limit]\necho = 10\nburst = 0\nsources = 0\n");
    assert_eq!(
        e,
        [
            "t.toml:5:9: `burst` must be at least 1 (a bucket that holds no request admits none); leave it out for 2 x echo",
            "t.toml:6:11: `sources` must be from 1 to 4194304",
        ]
    );
    assert_eq!(
        errors("interfaces = []\nblock = []\n[limit]\nsources = 4194305\n"),
        ["t.toml:4:11: `sources` must be from 1 to 4194304"]
    );
    assert_eq!(
        errors("interfaces = []\nblock = []\n[limit]\necho = 1000000001\n"),
        ["t.toml:4:8: `echo` is at most 1000000000 requests per second (one per nanosecond)"]
    );
    // burst = 0 is an error even without echo (not the warning).
    assert_eq!(
        errors("interfaces = []\nblock = []\nlimit = { burst = 0 }\n"),
        ["t.toml:3:19: `burst` must be at least 1 (a bucket that holds no request admits none); leave it out for 2 x echo"]
    );
}

#[test]
fn limit_wrong_types_and_unknown_keys_are_errors() {
    let e = errors(
        "interfaces = []\nblock = []\n[limit]\necho = \"10\"\nburst = -1\nsources = 1.5\nrate = 3\nbursts = 2\n",
    );
    assert_eq!(
        e,
        [
            "t.toml:4:8: invalid type: string \"10\", expected a whole number from 0 to 4294967295",
            "t.toml:5:9: invalid value: integer `-1`, expected a whole number from 0 to 4294967295",
            "t.toml:6:11: invalid type: floating point `1.5`, expected a whole number from 0 to 4294967295",
            "t.toml:7:1: unknown field `rate`, expected one of `echo`, `burst`, `sources`",
            "t.toml:8:1: unknown field `bursts`, expected one of `echo`, `burst`, `sources`",
        ],
        "{e:#?}"
    );
    assert_eq!(
        errors("interfaces = []\nblock = []\nlimit = 5\n"),
        ["t.toml:3:9: invalid type: integer `5`, expected a table"]
    );
    assert_eq!(
        errors("interfaces = []\nblock = []\n[limit]\necho = 4294967296\n"),
        ["t.toml:4:8: invalid value: integer `4294967296`, expected a whole number from 0 to 4294967295"]
    );
}

#[test]
fn burst_without_echo_is_a_warning_at_the_burst() {
    let (c, w) = parse_warned("interfaces = []\nblock = []\n[limit]\nburst = 5\n");
    assert_eq!(w, ["t.toml:4:9: `burst = 5` has no effect without `echo` (no rate limit)"]);
    assert_eq!(c.limit, LimitConfig { echo: 0, burst: 5, sources: 65536 });
    let w = warnings("interfaces = []\nblock = []\n[limit]\necho = 0\nburst = 7\n");
    assert_eq!(w, ["t.toml:5:9: `burst = 7` has no effect without `echo` (no rate limit)"]);
    assert!(warnings("interfaces = []\nblock = []\n[limit]\necho = 1\nburst = 7\n").is_empty());
}

#[test]
fn warnings_are_not_returned_with_errors_and_come_in_file_order() {
    // A file with an error gives the error alone.
    let e = errors(
        "interfaces = []\nblock = [\"192.0.2.10\"]\nallow = [\"192.0.2.10\"]\n[limit]\nburst = 5\nsources = 0\n",
    );
    assert_eq!(e, ["t.toml:6:11: `sources` must be from 1 to 4194304"]);
    // Warnings of different kinds (found while walking the tree and after
    // it) are sorted by position.
    let w = warnings(
        "interfaces = []\nblock = [\"192.0.2.10\"]\nallow = [\"192.0.2.10\"]\nicmp = [\"redirect\"]\n[limit]\nburst = 5\n",
    );
    let at: Vec<&str> = w.iter().map(|h| h.split(": ").next().unwrap_or_default()).collect();
    assert_eq!(at, ["t.toml:3:10", "t.toml:4:9", "t.toml:6:9"], "{w:#?}");
}

#[test]
fn a_file_with_every_new_key_is_read() {
    use Family::{V4, V6};
    let (c, w) = parse_warned(
        r#"interfaces = ["eth0"]
block = [
  "192.0.2.0/24",
  "2001:db8:dead::/48",
]
allow = ["192.0.2.7", "2001:db8:beef::1"]
icmp = ["echo-request", "echo-reply", "timestamp-request"]
dry_run = true
mode = "generic"

[limit]
echo = 5
burst = 12
sources = 2048

[events]
log = "blocked"
"#,
    );
    assert!(w.is_empty(), "{w:#?}");
    assert_eq!(c.block, prefixes(&["192.0.2.0/24", "2001:db8:dead::/48"]));
    assert_eq!(c.allow, prefixes(&["192.0.2.7", "2001:db8:beef::1"]));
    assert_eq!(c.icmp, types(&[(V4, 8), (V6, 128), (V4, 0), (V6, 129), (V4, 13)]));
    assert!(c.dry_run);
    assert_eq!(c.limit, LimitConfig { echo: 5, burst: 12, sources: 2048 });
    assert_eq!(c.events.log, LogMode::Blocked);
}

// ------------------------------------------- entry tables (until, note)

use std::os::unix::fs::PermissionsExt;

/// The moment an offset date-time names.
fn moment(s: &str) -> SystemTime {
    crate::when::from_toml(&s.parse().unwrap()).unwrap()
}

fn prefix(s: &str) -> crate::addr::Prefix {
    s.parse().unwrap()
}

fn meta(until: Option<&str>, note: Option<&str>) -> EntryMeta {
    EntryMeta { until: until.map(moment), note: note.map(str::to_string) }
}

/// Where each problem is, `t.toml:LINE:COL`, in order.
fn positions(e: &[String]) -> Vec<&str> {
    e.iter().map(|h| h.split(": ").next().unwrap_or_default()).collect()
}

#[test]
fn entry_tables_mix_with_strings_in_block_and_allow() {
    let (c, w) = parse_warned(
        r#"interfaces = []
block = [
  "192.0.2.10",
  { addr = "203.0.113.7", until = 2099-12-24T00:00:00Z, note = "scanner, ticket 4711" },
  { addr = "2001:db8::/32", note = "lab" },
  { addr = "198.51.100.0/24", until = 2099-01-01T01:00:00+01:00 },
  { addr = "::ffff:192.0.2.11" },
]
allow = ["192.0.2.99", { addr = "2001:db8:1::5", note = "monitoring" }]
"#,
    );
    assert!(w.is_empty(), "{w:?}");
    let mut want = prefixes(&["192.0.2.10", "192.0.2.11", "198.51.100.0/24", "203.0.113.7", "2001:db8::/32"]);
    want.sort();
    assert_eq!(c.block, want);
    assert_eq!(c.allow, prefixes(&["192.0.2.99", "2001:db8:1::5"]));
    let mut want = Metas::new();
    want.insert((List::Block, prefix("203.0.113.7")), meta(Some("2099-12-24T00:00:00Z"), Some("scanner, ticket 4711")));
    want.insert((List::Block, prefix("2001:db8::/32")), meta(None, Some("lab")));
    want.insert((List::Block, prefix("198.51.100.0/24")), meta(Some("2099-01-01T00:00:00Z"), None));
    want.insert((List::Allow, prefix("2001:db8:1::5")), meta(None, Some("monitoring")));
    // A table with `addr` alone adds nothing to keep.
    assert_eq!(c.metas, want);
    assert_eq!(c.note(List::Block, &prefix("203.0.113.7")), Some("scanner, ticket 4711"));
    assert_eq!(c.note(List::Allow, &prefix("2001:db8:1::5")), Some("monitoring"));
    assert_eq!(c.note(List::Block, &prefix("192.0.2.10")), None);
    assert_eq!(c.next_expiry(moment("2026-01-01T00:00:00Z")), Some(moment("2099-01-01T00:00:00Z")));
    // Enforced until the moment, not at it.
    let d = c.desired_at(moment("2099-01-01T00:00:00Z"));
    assert!(!d.block.contains(&prefix("198.51.100.0/24")), "{:?}", d.block);
    assert_eq!(d.block.len(), 4);
    assert_eq!(c.desired_at(moment("2098-12-31T23:59:59Z")).block.len(), 5);
    let gone = c.expired_at(moment("2100-01-01T00:00:00Z"));
    let gone: Vec<_> = gone.iter().map(|(l, p, _)| (*l, p.to_string())).collect();
    assert_eq!(gone, [(List::Block, "198.51.100.0/24".to_string()), (List::Block, "203.0.113.7".to_string())]);
}

/// The block list before and after the other keys, and an entry table in
/// it (which sends the list to the general path): every problem is where
/// the file has it.
#[test]
fn entry_table_errors_are_where_the_file_has_them_whichever_key_comes_first() {
    let block = "block = [\n  \"192.0.2.1\", # é\n  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },\n  \"192.0.2.300\",\n]\n";
    let allow = "allow = [{ addr = \"198.51.100.1\", nute = \"x\" }]\n";
    let before = errors(&format!("interfaces = []\n{block}{allow}icmp = \"x\"\n"));
    assert_eq!(positions(&before), ["t.toml:4:33", "t.toml:5:3", "t.toml:7:35", "t.toml:8:8"], "{before:#?}");
    let after = errors(&format!("interfaces = []\nicmp = \"x\"\n{allow}{block}"));
    assert_eq!(positions(&after), ["t.toml:2:8", "t.toml:3:35", "t.toml:6:33", "t.toml:7:3"], "{after:#?}");
    assert!(after[1].ends_with("unknown field `nute`, expected one of `addr`, `until`, `note`"), "{after:#?}");
    // Only the table is on the general path's side: a file without one
    // still has its block list read by the fast scanner.
    assert!(super::block::scan(&format!("interfaces = []\n{block}")).is_none(), "a table in the list");
    // The caret spans the value.
    let d = parse(&format!("interfaces = []\n{block}")).unwrap_err();
    assert_eq!(
        (d[0].excerpt.as_str(), d[0].caret_at, d[0].width),
        ("  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },", 32, 19)
    );
}

#[test]
fn until_must_be_an_offset_date_time() {
    let e = errors(
        "interfaces = []\nblock = [\n  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },\n  { addr = \"192.0.2.3\", until = 2026-12-24 },\n  { addr = \"192.0.2.4\", until = 07:32:00 },\n  { addr = \"192.0.2.5\", until = \"2026-12-24T00:00:00Z\" },\n  { addr = \"192.0.2.6\", until = 1969-12-31T23:00:00Z },\n]\n",
    );
    assert_eq!(
        e,
        [
            "t.toml:3:33: until: `2026-12-24T00:00:00` is a local date-time, whose moment depends on the machine's time zone; add the offset, such as 2026-12-24T00:00:00Z (UTC) or 2026-12-24T00:00:00+01:00",
            "t.toml:4:33: until: `2026-12-24` is not a date-time; write a date, a time and an offset, such as 2026-12-24T00:00:00Z",
            "t.toml:5:33: until: `07:32:00` is not a date-time; write a date, a time and an offset, such as 2026-12-24T00:00:00Z",
            "t.toml:6:33: invalid type: string \"2026-12-24T00:00:00Z\", expected an offset date-time, such as 2026-12-24T00:00:00Z (no quotes)",
            "t.toml:7:33: until: `1969-12-31T23:00:00Z` is before 1970",
        ],
        "{e:#?}"
    );
    // In allow too, and any offset.
    let e = errors("interfaces = []\nblock = []\nallow = [{ addr = \"192.0.2.2\", until = 2026-12-24 }]\n");
    assert_eq!(positions(&e), ["t.toml:3:40"], "{e:#?}");
    let c = parse("interfaces = []\nblock = [{ addr = \"192.0.2.2\", until = 2099-12-24T00:00:00-05:30 }]\n").unwrap();
    assert_eq!(c.metas[&(List::Block, prefix("192.0.2.2"))].until, Some(moment("2099-12-24T05:30:00Z")));
}

#[test]
fn a_note_has_at_most_200_characters_counted_as_characters() {
    let with = |note: &str| format!("interfaces = []\nblock = [{{ addr = \"192.0.2.2\", note = \"{note}\" }}]\n");
    let c = parse(&with(&"n".repeat(200))).unwrap();
    assert_eq!(c.note(List::Block, &prefix("192.0.2.2")).map(|n| n.chars().count()), Some(200));
    // 200 characters of two, three and four bytes: 200 characters still.
    for ch in ['é', '€', '🦀'] {
        let note = ch.to_string().repeat(200);
        let c = parse(&with(&note)).unwrap_or_else(|e| panic!("{ch}: {e:#?}"));
        assert_eq!(c.note(List::Block, &prefix("192.0.2.2")), Some(note.as_str()));
    }
    assert_eq!(
        errors(&with(&"n".repeat(201))),
        ["t.toml:2:39: the note has 201 characters; at most 200 are kept in status and event lines"]
    );
    assert_eq!(
        errors(&with(&"é".repeat(201))),
        ["t.toml:2:39: the note has 201 characters; at most 200 are kept in status and event lines"]
    );
    // An escape is one character.
    let c = parse(&with(&format!("{}\\\"", "n".repeat(199)))).unwrap();
    assert_eq!(c.note(List::Block, &prefix("192.0.2.2")).map(|n| n.chars().count()), Some(200));
}

#[test]
fn a_note_is_one_line_without_control_characters() {
    let e = errors(
        "interfaces = []\nblock = [\n  { addr = \"192.0.2.2\", note = \"a\\u0007b\" },\n  { addr = \"192.0.2.3\", note = \"a\\tb\" },\n  { addr = \"192.0.2.4\", note = \"a\\nb\" },\n  { addr = \"192.0.2.5\", note = \"\"\"a\nb\"\"\" },\n  { addr = \"192.0.2.6\", note = \"\\u007f\" },\n]\n",
    );
    let tail = "; a note is one line of text, shown in status and syslog";
    assert_eq!(
        e,
        [
            format!("t.toml:3:32: the note holds the control character '\\u{{7}}'{tail}"),
            format!("t.toml:4:32: the note holds the control character '\\t'{tail}"),
            format!("t.toml:5:32: the note holds the control character '\\n'{tail}"),
            format!("t.toml:6:32: the note holds the control character '\\n'{tail}"),
            format!("t.toml:8:32: the note holds the control character '\\u{{7f}}'{tail}"),
        ],
        "{e:#?}"
    );
    // Quotes, backslashes and non-ASCII text are fine.
    let c = parse("interfaces = []\nblock = [{ addr = \"192.0.2.2\", note = 'C:\\x \"q\" ünï' }]\n").unwrap();
    assert_eq!(c.note(List::Block, &prefix("192.0.2.2")), Some("C:\\x \"q\" ünï"));
}

#[test]
fn entry_table_keys_of_the_wrong_type_unknown_or_missing_are_errors() {
    let e = errors(
        "interfaces = []\nblock = [\n  { addr = \"192.0.2.2\", note = 5 },\n  { addr = \"192.0.2.3\", note = [\"x\"] },\n  { addr = \"192.0.2.4\", x = 1 },\n  { until = 2099-01-01T00:00:00Z, note = \"no addr\" },\n  { addr = \"192.0.2.300\" },\n  { addr = 7 },\n  { addr = \"192.0.2.0/8\", note = \"x\" },\n  {},\n]\n",
    );
    assert_eq!(
        e,
        [
            "t.toml:3:32: invalid type: integer `5`, expected a note in quotes, such as \"scanner, ticket 4711\"",
            "t.toml:4:32: invalid type: array, expected a note in quotes, such as \"scanner, ticket 4711\"",
            "t.toml:5:25: unknown field `x`, expected one of `addr`, `until`, `note`",
            "t.toml:6:3: an entry table needs `addr`, such as { addr = \"203.0.113.7\", until = 2026-12-24T00:00:00Z, note = \"scanner\" }",
            "t.toml:7:12: \"192.0.2.300\" is not an IPv4 or IPv6 address or prefix (examples: \"192.0.2.10\", \"198.51.100.0/24\", \"2001:db8::/32\")",
            "t.toml:8:12: expected an address or prefix in quotes, such as \"192.0.2.10\", found the integer 7",
            "t.toml:9:12: \"192.0.2.0/8\" has host bits set; did you mean \"192.0.0.0/8\"?",
            "t.toml:10:3: an entry table needs `addr`, such as { addr = \"203.0.113.7\", until = 2026-12-24T00:00:00Z, note = \"scanner\" }",
        ],
        "{e:#?}"
    );
    // The missing addr is at the whole table.
    let d = parse("interfaces = []\nblock = [{ note = \"x\" }]\n").unwrap_err();
    assert_eq!((d[0].caret_at, d[0].width), (9, 14), "{d:?}");
    // A key twice is TOML's error.
    let e = errors("interfaces = []\nblock = [{ addr = \"192.0.2.2\", addr = \"192.0.2.3\" }]\n");
    assert_eq!(e, ["t.toml:2:32: duplicate key"]);
}

#[test]
fn an_expired_entry_is_a_warning_at_its_table_and_is_not_enforced() {
    let text = "interfaces = []\nblock = [\n  \"192.0.2.1\",\n  { addr = \"192.0.2.2\", until = 2020-01-01T00:00:00Z, note = \"old\" },\n]\nallow = [{ addr = \"198.51.100.1\", until = 2020-01-01T01:00:00+01:00 }]\n";
    let (c, w) = parse_warned(text);
    assert_eq!(
        w,
        [
            "t.toml:4:3: \"192.0.2.2\" expired at 2020-01-01T00:00:00Z: it is not enforced; remove the entry",
            "t.toml:6:10: \"198.51.100.1\" expired at 2020-01-01T00:00:00Z: it is not enforced; remove the entry",
        ]
    );
    // Still in the file's lists, with its note, but not enforced now.
    assert_eq!(c.block, prefixes(&["192.0.2.1", "192.0.2.2"]));
    let d = c.desired();
    assert_eq!(d.block.as_ref(), prefixes(&["192.0.2.1"]).as_slice());
    assert!(d.allow.is_empty());
    let gone: Vec<_> = c.expired_at(SystemTime::now()).iter().map(|(l, p, m)| (*l, *p, m.note.clone())).collect();
    assert_eq!(
        gone,
        [(List::Block, prefix("192.0.2.2"), Some("old".to_string())), (List::Allow, prefix("198.51.100.1"), None)]
    );
    // A warning does not make the file invalid: `parse` accepts it.
    assert!(parse(text).is_ok());
}

#[test]
fn duplicates_in_one_file_collapse() {
    let c = parse(
        r#"interfaces = []
block = [
  { addr = "192.0.2.1", until = 2099-01-01T00:00:00Z, note = "first" },
  "192.0.2.1",
  { addr = "192.0.2.2", until = 2099-01-01T00:00:00Z },
  { addr = "192.0.2.2", until = 2099-06-01T00:00:00Z, note = "second" },
  { addr = "::ffff:192.0.2.2", until = 2099-03-01T00:00:00Z, note = "third" },
  { addr = "192.0.2.3", note = "no expiry" },
  { addr = "192.0.2.3", until = 2099-01-01T00:00:00Z, note = "later" },
]
"#,
    )
    .unwrap();
    assert_eq!(c.block, prefixes(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
    let mut want = Metas::new();
    // Listed without until too: it never expires; the note stays.
    want.insert((List::Block, prefix("192.0.2.1")), meta(None, Some("first")));
    // The latest until, the first note (of the tables that have one).
    want.insert((List::Block, prefix("192.0.2.2")), meta(Some("2099-06-01T00:00:00Z"), Some("second")));
    want.insert((List::Block, prefix("192.0.2.3")), meta(None, Some("no expiry")));
    assert_eq!(c.metas, want);
    // The same address in both lists keeps each list's own metadata.
    let (c, _) = parse_warned(
        "interfaces = []\nblock = [{ addr = \"192.0.2.9\", note = \"b\" }]\nallow = [{ addr = \"192.0.2.9\", until = 2099-01-01T00:00:00Z }]\n",
    );
    assert_eq!(c.note(List::Block, &prefix("192.0.2.9")), Some("b"));
    assert_eq!(c.metas[&(List::Allow, prefix("192.0.2.9"))], meta(Some("2099-01-01T00:00:00Z"), None));
}

// ------------------------------------------------------------- fragments

fn fragment(text: &str) -> Result<(Fragment, Vec<String>), Vec<String>> {
    let headlines = |d: Vec<Diagnostic>| d.iter().map(Diagnostic::headline).collect::<Vec<_>>();
    Config::parse_fragment(Path::new("f.toml"), text).map(|(f, w)| (f, headlines(w))).map_err(headlines)
}

#[test]
fn a_fragment_holds_block_and_allow_with_entry_tables_or_nothing() {
    let (f, w) = fragment(
        "# from the threat feed\nblock = [\"192.0.2.10\", { addr = \"203.0.113.7\", until = 2099-12-24T00:00:00Z, note = \"feed\" }, \"192.0.2.10\"]\nallow = [\"198.51.100.0/24\"]\n",
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(f.path, PathBuf::from("f.toml"));
    assert_eq!(f.block, prefixes(&["192.0.2.10", "203.0.113.7"]));
    assert_eq!(f.allow, prefixes(&["198.51.100.0/24"]));
    assert_eq!(f.metas.len(), 1);
    assert_eq!(f.metas[&(List::Block, prefix("203.0.113.7"))], meta(Some("2099-12-24T00:00:00Z"), Some("feed")));
    // Neither list is required: an empty fragment is valid, and so is one
    // with allow only.
    let (f, _) = fragment("").unwrap();
    assert!(f.block.is_empty() && f.allow.is_empty() && f.metas.is_empty());
    let (f, _) = fragment("allow = [\"192.0.2.1\"]\n").unwrap();
    assert_eq!(f.allow, prefixes(&["192.0.2.1"]));
    // Its warnings are the main file's.
    let (_, w) = fragment(
        "block = [\"192.0.2.10\", { addr = \"192.0.2.11\", until = 2020-01-01T00:00:00Z }]\nallow = [\"192.0.2.10\"]\n",
    )
    .unwrap();
    assert_eq!(
        w,
        [
            "f.toml:1:24: \"192.0.2.11\" expired at 2020-01-01T00:00:00Z: it is not enforced; remove the entry",
            "f.toml:2:10: \"192.0.2.10\" is both allowed and blocked: allow wins, the block entry has no effect",
        ]
    );
}

#[test]
fn a_fragment_refuses_the_main_files_keys_and_bad_entries_at_their_place() {
    let e = fragment(
        "interfaces = [\"eth0\"]\nblock = [{ addr = \"192.0.2.300\" }, { addr = \"192.0.2.1\", until = 2026-12-24 }]\nicmp = \"all\"\nblok = []\n[syslog]\nfacility = \"daemon\"\n[limit]\necho = 1\n",
    )
    .unwrap_err();
    let main_only =
        |k: &str| format!("`{k}` belongs in the main configuration file: a fragment holds only `block` and `allow`");
    assert_eq!(
        e,
        [
            format!("f.toml:1:1: {}", main_only("interfaces")),
            "f.toml:2:19: \"192.0.2.300\" is not an IPv4 or IPv6 address or prefix (examples: \"192.0.2.10\", \"198.51.100.0/24\", \"2001:db8::/32\")".to_string(),
            "f.toml:2:66: until: `2026-12-24` is not a date-time; write a date, a time and an offset, such as 2026-12-24T00:00:00Z".to_string(),
            format!("f.toml:3:1: {}", main_only("icmp")),
            "f.toml:4:1: unknown field `blok`, expected `block` or `allow`".to_string(),
            format!("f.toml:5:2: {}", main_only("syslog")),
            format!("f.toml:7:2: {}", main_only("limit")),
        ],
        "{e:#?}"
    );
    // A fragment with a fast-path block list, errors in it and after it.
    let e = fragment("block = [\n  \"192.0.2.1\",\n  \"192.0.2.300\",\n]\ndry_run = true\n").unwrap_err();
    assert_eq!(positions(&e), ["f.toml:3:3", "f.toml:5:1"], "{e:#?}");
}

/// A root-owned directory with the main file and, beside it, `icmpguard.d`
/// with the given fragments (name, text), modes 0644 and 0755.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(main: &str, fragments: &[(&str, &str)]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = Tree { dir };
        t.write("icmpguard.toml", main);
        if !fragments.is_empty() {
            std::fs::create_dir(t.frag_dir()).unwrap();
            std::fs::set_permissions(t.frag_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for (name, text) in fragments {
            t.write(&format!("{FRAGMENT_DIR}/{name}"), text);
        }
        t
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn main(&self) -> PathBuf {
        self.dir.path().join("icmpguard.toml")
    }

    fn frag_dir(&self) -> PathBuf {
        self.dir.path().join(FRAGMENT_DIR)
    }

    fn frag(&self, name: &str) -> PathBuf {
        self.frag_dir().join(name)
    }

    fn load(&self, strictness: Strictness) -> Result<Loaded, Error> {
        Config::load(&self.main(), strictness)
    }
}

const MAIN: &str = "interfaces = [\"eth0\"]\nblock = [\"192.0.2.1\", { addr = \"192.0.2.2\", note = \"main\" }]\n";

fn config_errors(e: Error) -> Vec<String> {
    match e {
        Error::Config { diagnostics } => diagnostics.iter().map(Diagnostic::headline).collect(),
        other => panic!("not a configuration error: {other}"),
    }
}

#[test]
fn fragments_join_the_main_file_in_name_order_and_duplicates_collapse() {
    let t = Tree::new(
        MAIN,
        &[
            ("20-feed.toml", "block = [\n  { addr = \"192.0.2.1\", until = 2099-01-01T00:00:00Z, note = \"feed\" },\n  { addr = \"192.0.2.2\", note = \"feed\" },\n  { addr = \"203.0.113.7\", until = 2099-01-01T00:00:00Z, note = \"feed\" },\n  { addr = \"2001:db8::/32\", until = 2099-01-01T00:00:00Z },\n]\nallow = [\"198.51.100.7\"]\n"),
            ("10-incident.toml", "block = [\n  { addr = \"203.0.113.7\", until = 2099-06-01T00:00:00Z },\n  { addr = \"2001:db8::/32\", until = 2098-01-01T00:00:00Z, note = \"incident\" },\n]\n"),
            ("30-allow.toml", "allow = [{ addr = \"192.0.2.2\", until = 2099-01-01T00:00:00Z, note = \"allowed\" }]\n"),
        ],
    );
    let l = t.load(Strictness::Enforce).unwrap();
    assert_eq!(l.warnings, Vec::<String>::new());
    let c = &l.config;
    assert_eq!(c.fragments, [t.frag("10-incident.toml"), t.frag("20-feed.toml"), t.frag("30-allow.toml")]);
    let mut want = prefixes(&["192.0.2.1", "192.0.2.2", "203.0.113.7", "2001:db8::/32"]);
    want.sort();
    assert_eq!(c.block, want);
    assert_eq!(c.allow, prefixes(&["192.0.2.2", "198.51.100.7"]));
    let mut want = Metas::new();
    // Plain in the main file: never expires, though the feed has an until;
    // the feed's note is the first.
    want.insert((List::Block, prefix("192.0.2.1")), meta(None, Some("feed")));
    // The main file's note comes first.
    want.insert((List::Block, prefix("192.0.2.2")), meta(None, Some("main")));
    // Two untils: the latest; the first note in name order (10- before 20-).
    want.insert((List::Block, prefix("203.0.113.7")), meta(Some("2099-06-01T00:00:00Z"), Some("feed")));
    want.insert((List::Block, prefix("2001:db8::/32")), meta(Some("2099-01-01T00:00:00Z"), Some("incident")));
    want.insert((List::Allow, prefix("192.0.2.2")), meta(Some("2099-01-01T00:00:00Z"), Some("allowed")));
    assert_eq!(c.metas, want);
    // Allow wins across files: the main file's block entry is not enforced
    // while the fragment allows it, and is once the allow entry expired.
    let now = c.desired_at(moment("2098-06-01T00:00:00Z"));
    let plan: Vec<_> = crate::plan::entries(&now.block, &now.allow).collect();
    assert!(plan.iter().all(|e| e.prefix != prefix("192.0.2.2") || e.allow), "{plan:?}");
    let later = c.desired_at(moment("2099-03-01T00:00:00Z"));
    assert!(later.allow.iter().all(|p| *p != prefix("192.0.2.2")), "{:?}", later.allow);
    assert!(later.block.contains(&prefix("192.0.2.2")));
    assert!(!later.block.contains(&prefix("2001:db8::/32")));
}

#[test]
fn only_visible_toml_files_are_fragments_and_a_missing_directory_means_none() {
    let bad = "this is = not [ a fragment";
    let t = Tree::new(
        MAIN,
        &[
            ("a.toml", "block = [\"192.0.2.10\"]\n"),
            (".hidden.toml", bad),
            (".a.toml.swp", bad),
            ("a.toml~", bad),
            ("b.toml.dpkg-new", bad),
            ("b.toml.dpkg-old", bad),
            ("notes.txt", bad),
            ("README", bad),
            (".toml", bad),
        ],
    );
    let l = t.load(Strictness::Enforce).unwrap();
    assert_eq!(l.config.fragments, [t.frag("a.toml")]);
    assert_eq!(l.config.block, prefixes(&["192.0.2.1", "192.0.2.2", "192.0.2.10"]));
    for name in ["a.toml", "x.toml", "10-feed.toml"] {
        assert!(is_fragment_name(std::ffi::OsStr::new(name)), "{name}");
    }
    for name in [".hidden.toml", "a.toml~", "a.toml.dpkg-new", "a.toml.dpkg-old", "a.toml.swp", ".toml", "a.TOML", "a"]
    {
        assert!(!is_fragment_name(std::ffi::OsStr::new(name)), "{name}");
    }
    // No directory: the main file alone.
    let t = Tree::new(MAIN, &[]);
    let l = t.load(Strictness::Enforce).unwrap();
    assert!(l.config.fragments.is_empty());
    assert_eq!(l.config, Config::parse(&t.main(), MAIN).unwrap());
    // An empty directory: the same.
    std::fs::create_dir(t.frag_dir()).unwrap();
    assert!(t.load(Strictness::Enforce).unwrap().config.fragments.is_empty());
}

#[test]
fn an_invalid_fragment_refuses_the_load_at_its_own_position() {
    let t = Tree::new(
        MAIN,
        &[
            ("a.toml", "block = [\"192.0.2.10\"]\n"),
            ("b.toml", "block = [\n  { addr = \"192.0.2.11\", note = \"x\", until = 2026-12-24T00:00:00 },\n]\n"),
            ("c.toml", "interfaces = [\"eth1\"]\n"),
        ],
    );
    let e = config_errors(t.load(Strictness::Warn).unwrap_err());
    let b = t.frag("b.toml").display().to_string();
    let c = t.frag("c.toml").display().to_string();
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with(&format!("{b}:2:46: until: `2026-12-24T00:00:00` is a local date-time")), "{e:#?}");
    assert_eq!(
        e[1],
        format!(
            "{c}:1:1: `interfaces` belongs in the main configuration file: a fragment holds only `block` and `allow`"
        )
    );
    // load_fragment reads one alone.
    let e = config_errors(Config::load_fragment(&t.frag("b.toml"), Strictness::Warn).unwrap_err());
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].starts_with(&format!("{b}:2:46: ")), "{e:#?}");
    let (f, w) = Config::load_fragment(&t.frag("a.toml"), Strictness::Enforce).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(f.block, prefixes(&["192.0.2.10"]));
    // An invalid main file is reported as before, fragments or not.
    t.write("icmpguard.toml", "interfaces = []\nblock = [\"192.0.2.300\"]\n");
    let e = config_errors(t.load(Strictness::Warn).unwrap_err());
    assert!(e[0].starts_with(&format!("{}:2:10: ", t.main().display())), "{e:#?}");
}

#[test]
fn an_expired_entry_of_a_fragment_is_a_warning_naming_the_fragment() {
    let t = Tree::new(
        MAIN,
        &[("feed.toml", "block = [\n  { addr = \"203.0.113.7\", until = 2020-01-01T00:00:00Z, note = \"old\" },\n]\n")],
    );
    let l = t.load(Strictness::Enforce).unwrap();
    let f = t.frag("feed.toml").display().to_string();
    assert_eq!(
        l.warnings,
        [format!("{f}:2:3: \"203.0.113.7\" expired at 2020-01-01T00:00:00Z: it is not enforced; remove the entry")]
    );
    assert!(!l.config.desired().block.contains(&prefix("203.0.113.7")));
    assert_eq!(l.config.expired_at(SystemTime::now()).len(), 1);
}

#[test]
fn a_group_writable_fragment_or_directory_warns_with_warn_and_refuses_with_enforce() {
    let t = Tree::new(MAIN, &[("a.toml", "block = [\"192.0.2.10\"]\n")]);
    std::fs::set_permissions(t.frag("a.toml"), std::fs::Permissions::from_mode(0o664)).unwrap();
    let l = t.load(Strictness::Warn).unwrap();
    let a = t.frag("a.toml").display().to_string();
    assert_eq!(
        l.warnings,
        [format!(
            "{a}: is group- or world-writable (mode 0664); run `chmod go-w` on it; `icmpguard run` would refuse it"
        )]
    );
    assert_eq!(l.config.fragments, [t.frag("a.toml")], "check reads it all the same");
    match t.load(Strictness::Enforce) {
        Err(Error::Unsafe { path, .. }) => assert_eq!(path, t.frag("a.toml")),
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(t.frag("a.toml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(t.frag_dir(), std::fs::Permissions::from_mode(0o775)).unwrap();
    let l = t.load(Strictness::Warn).unwrap();
    assert!(!l.warnings.is_empty(), "{:?}", l.warnings);
    let d = t.frag_dir().display().to_string();
    assert!(
        l.warnings.iter().all(|w| w.starts_with(&format!("{d}: is group- or world-writable (mode 0775)"))),
        "{:?}",
        l.warnings
    );
    match t.load(Strictness::Enforce) {
        Err(Error::Unsafe { path, .. }) => assert_eq!(path, t.frag_dir()),
        other => panic!("{other:?}"),
    }
    // A fragment owned by someone else.
    std::fs::set_permissions(t.frag_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&t.frag("a.toml"), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let l = t.load(Strictness::Warn).unwrap();
    assert_eq!(
        l.warnings,
        [format!("{a}: is owned by uid 65534, not root; run `chown root:root` on it; `icmpguard run` would refuse it")]
    );
    assert!(matches!(t.load(Strictness::Enforce), Err(Error::Unsafe { .. })));
}

#[test]
fn an_expired_entry_listed_again_without_expiry_is_not_called_expired() {
    let w =
        warnings("interfaces = []\nblock = [\"192.0.2.5\", { addr = \"192.0.2.5\", until = 2020-01-01T00:00:00Z }]\n");
    assert!(w.is_empty(), "{w:#?}");
    let w = warnings(
        "interfaces = []\nblock = [{ addr = \"192.0.2.5\", until = 2020-01-01T00:00:00Z }, { addr = \"192.0.2.5\", until = 2999-01-01T00:00:00Z }]\n",
    );
    assert!(w.is_empty(), "{w:#?}");
    let w = warnings("interfaces = []\nblock = [{ addr = \"192.0.2.5\", until = 2020-01-01T00:00:00Z }]\n");
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].starts_with("t.toml:2:10: \"192.0.2.5\" expired at 2020-01-01T00:00:00Z"), "{w:#?}");
}

#[test]
fn empty_notes_and_invisible_characters_are_refused() {
    let e = errors("interfaces = []\nblock = [{ addr = \"192.0.2.5\", note = \"\" }]\n");
    assert!(e[0].contains("the note is empty"), "{e:#?}");
    for c in ["\\u2028", "\\u202e", "\\u2066"] {
        let e = errors(&format!("interfaces = []\nblock = [{{ addr = \"192.0.2.5\", note = \"a{c}b\" }}]\n"));
        assert!(e[0].contains("the note holds"), "{c}: {e:#?}");
    }
}

/// A block list long enough to be read in two halves on two threads, with
/// duplicates within each half and across them (and an address written as
/// a /32 and as IPv4-mapped), gives the list the general path gives: the
/// fast path's sorted list without duplicates is not checked again.
#[test]
fn a_long_list_read_in_two_halves_is_the_list_the_general_path_reads() {
    let mut lines = String::new();
    for i in 0..120_000u32 {
        // Every address twice, the second time 60000 lines later (in the
        // other half), some of them in other spellings.
        let n = i % 60_000;
        let addr = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 0xff, n & 0xff);
        let entry = match i % 7 {
            3 if i >= 60_000 => format!("{addr}/32"),
            5 if i >= 60_000 => format!("::ffff:{addr}"),
            _ => addr,
        };
        lines.push_str(&format!("  \"{entry}\",\n"));
    }
    lines.push_str("  \"198.51.100.0/24\",\n  \"2001:db8::/48\",\n  \"198.51.100.0/24\",\n");
    let fast_text = format!("interfaces = []\nblock = [\n{lines}]\n");
    // An entry written as a table makes the scanner step aside.
    let general_text = format!("interfaces = []\nblock = [\n{lines}  {{ addr = \"10.0.0.1\", note = \"n\" }},\n]\n");
    assert!(fast_text.len() > 2 << 20, "long enough for two halves: {} bytes", fast_text.len());
    assert!(super::block::scan(&fast_text).is_some());
    assert!(super::block::scan(&general_text).is_none());
    let (fast, general) = (parse(&fast_text).unwrap(), parse(&general_text).unwrap());
    assert_eq!(fast.block.len(), 60_002);
    assert_eq!(fast.block, general.block);
}

#[test]
fn the_file_read_around_its_block_list_is_the_file_but_for_that_list() {
    let main = "interfaces = [\"eth0\"]\nblock = [\n  \"192.0.2.1\",\n  \"198.51.100.0/24\",\n]\nallow = [\"203.0.113.9\"]\ndry_run = true\npin_dir = \"/sys/fs/bpf/x\"\n[limit]\necho = 5\n";
    let t = Tree::new(main, &[("feed.toml", "block = [\"2001:db8::1\"]\nallow = [\"2001:db8::53\"]\n")]);
    let whole = t.load(Strictness::Enforce).unwrap().config;
    let cut = whole.block_span.clone().expect("the fast scanner read the list");
    assert_eq!(&main[cut.start - 1..cut.end + 1], "[\n  \"192.0.2.1\",\n  \"198.51.100.0/24\",\n]");
    let around = Config::load_around(&t.main(), cut.clone()).unwrap().expect("read around the list");
    // Everything but the main file's block entries; the fragments read.
    let mut expected = whole.clone();
    expected.block.retain(|p| p.to_string() == "2001:db8::1");
    assert_eq!(around, expected);
    // A cut that is not between brackets, or past the end: not read.
    for wrong in [cut.start + 1..cut.end, cut.start..cut.end - 1, 0..3, cut.start..main.len() + 5] {
        assert!(Config::load_around(&t.main(), wrong.clone()).unwrap().is_none(), "{wrong:?}");
    }
    // The file's own rules hold: group-writable, it is refused.
    std::fs::set_permissions(t.main(), std::fs::Permissions::from_mode(0o664)).unwrap();
    assert!(matches!(Config::load_around(&t.main(), cut), Err(Error::Unsafe { .. })));
}
