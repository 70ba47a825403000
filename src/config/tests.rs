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
        vec!["t.toml:3:1: unknown field `blok`, expected one of `interfaces`, `block`, `allow`, `icmp`, `dry_run`, `mode`, `pin_dir`, `events`, `syslog`, `limit`"]
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
