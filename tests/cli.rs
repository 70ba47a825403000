//! Black-box tests of the `icmpguard` command line: they run the built
//! binary, need no privileges (a few extra checks run only as root) and never
//! touch the kernel.
//!
//! Expected lines and columns are computed by hand from the file texts
//! below and hard-coded; nothing here reuses the code under test.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_icmpguard");

/// No command here should take long; a hang is a failure, not a stuck suite.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` with no stdin, killing it if it outlives [`TIMEOUT`].
fn run_cmd(mut cmd: Command) -> Run {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn icmpguard");
    // Drain the pipes on threads so that a chatty child cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for icmpguard") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("icmpguard {cmd:?} did not exit within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run { code: status.code(), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn icmpguard(args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_cmd(cmd)
}

fn check(path: &Path) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("-c").arg(path);
    run_cmd(cmd)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The few tests that need root fail without it (a test that returns early
/// proves nothing); ICMPGUARD_SKIP_PRIVILEGED marks them ignored instead.
fn require_root() {
    assert!(is_root(), "this test needs root: run the suite as root, or set ICMPGUARD_SKIP_PRIVILEGED=1 to skip it");
}

/// A private directory holding one configuration file named like the
/// temporary copies Ansible's `validate` checks (no `.toml`).
struct Conf {
    tmp: TempDir,
    path: PathBuf,
}

impl Conf {
    fn new(text: &str) -> Conf {
        Conf::named("tmpab12cd", text.as_bytes())
    }

    fn named(name: &str, bytes: &[u8]) -> Conf {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        fs::write(&path, bytes).expect("write config");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        Conf { tmp: dir, path }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn p(&self) -> String {
        self.path.display().to_string()
    }
}

/// One expected diagnostic: where, how the message starts, the source line
/// and the caret line as printed after their four-space indent.
struct Expect<'a> {
    line: usize,
    col: usize,
    message: &'a str,
    source: &'a str,
    caret: &'a str,
}

/// Asserts that `check` rejected the file with exit 1, nothing on stdout,
/// and exactly the `expected` diagnostics on stderr, in that order.
fn assert_rejected(conf: &Conf, expected: &[Expect<'_>]) {
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    let text = r.stderr.as_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 * expected.len(), "want {} diagnostic(s) of 3 lines each: {r:?}", expected.len());
    for (i, (got, want)) in lines.chunks(3).zip(expected).enumerate() {
        let headline = format!("{}:{}:{}: {}", conf.p(), want.line, want.col, want.message);
        assert!(
            got[0].starts_with(&headline),
            "diagnostic {i}: headline\n  {:?}\ndoes not start with\n  {headline:?}\n{r:?}",
            got[0]
        );
        assert_eq!(got[1], format!("    {}", want.source), "diagnostic {i}: {r:?}");
        assert_eq!(got[2], format!("    {}", want.caret), "diagnostic {i}: {r:?}");
    }
}

const VALID: &str = r#"# Interfaces to guard.
interfaces = ["eth0"]

block = [
  "192.0.2.10",
  "198.51.100.0/24",
  "2001:db8:dead::/48",
]
"#;

// ---------------------------------------------------------------- check: valid

#[test]
fn check_accepts_a_valid_file_without_toml_extension_and_exits_0() {
    let conf = Conf::new(VALID);
    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with(&format!("{}: valid", conf.p())), "{r:?}");
    assert!(r.stdout.contains(" 3 entries "), "{r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "{r:?}");
    assert!(!r.stderr.contains("error"), "{r:?}");
}

#[test]
fn check_accepts_the_long_config_flag() {
    let conf = Conf::new(VALID);
    let r = icmpguard(&["check", "--config", &conf.p()]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(": valid"), "{r:?}");
}

#[test]
fn check_accepts_every_optional_key_with_a_valid_value() {
    let conf = Conf::new(
        r#"interfaces = ["eth0", "eth1"]
block = []
icmp = "all"
mode = "native"
pin_dir = "/sys/fs/bpf/other"

[events]
log = "blocked"
rate_limit = 0

[syslog]
facility = "local3"
socket = "/run/test.sock"
"#,
    );
    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(" 0 entries "), "{r:?}");
}

#[test]
fn ipv4_mapped_addresses_and_prefixes_collapse_into_their_ipv4_form() {
    let conf = Conf::new(
        r#"interfaces = ["eth0"]
block = [
  "192.0.2.10",
  "::ffff:192.0.2.10",
  "198.51.100.0/24",
  "::ffff:198.51.100.0/120",
]
"#,
    );
    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(" 2 entries (2 IPv4, 0 IPv6"), "{r:?}");
}

#[test]
fn duplicate_entries_and_interfaces_are_allowed_and_collapse() {
    let conf = Conf::new(
        r#"interfaces = ["eth0", "eth0"]
block = [
  "192.0.2.10",
  "192.0.2.10",
  "2001:db8::/32",
  "2001:DB8:0::/32",
]
"#,
    );
    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(" 1 interface(s), "), "{r:?}");
    assert!(r.stdout.contains(" 2 entries (1 IPv4, 1 IPv6"), "{r:?}");
}

// ------------------------------------------------------- check: error format

#[test]
fn check_errors_start_with_file_line_col_and_nothing_before() {
    // SPEC: "`check` prints errors as `FILE:LINE:COL: message`". Editors and
    // CI annotators parse the first field as the file name.
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\nblok = [\"192.0.2.1\"]\n");
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    let want = format!("{}:3:1: ", conf.p());
    assert!(r.stderr.starts_with(&want), "stderr should start with {want:?}: {r:?}");
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    // SPEC: "one error per problem found": an unknown key does not hide a
    // wrong type or a bad address further down.
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblok = [\"192.0.2.1\"]\nblock = [\"192.0.2.1/24\"]\nicmp = \"ping\"\n[events]\nrate = 5\n",
    );
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 2,
                col: 1,
                message: "unknown field `blok`, expected one of `interfaces`, `block`",
                source: "blok = [\"192.0.2.1\"]",
                caret: "^~~~",
            },
            Expect {
                line: 3,
                col: 10,
                message: "\"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?",
                source: "block = [\"192.0.2.1/24\"]",
                caret: &format!("{}^{}", " ".repeat(9), "~".repeat(13)),
            },
            Expect {
                line: 4,
                col: 8,
                message: "unknown variant `ping`, expected `echo` or `all`",
                source: "icmp = \"ping\"",
                caret: &format!("{}^{}", " ".repeat(7), "~".repeat(5)),
            },
            Expect {
                line: 6,
                col: 1,
                message: "unknown field `rate`, expected `log` or `rate_limit`",
                source: "rate = 5",
                caret: "^~~~",
            },
        ],
    );
}

#[test]
fn unknown_top_level_key_is_an_error_at_its_line_and_column() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\nblok = [\"192.0.2.1\"]\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 1,
            message: "unknown field `blok`, expected one of `interfaces`, `block`",
            source: "blok = [\"192.0.2.1\"]",
            caret: "^~~~",
        }],
    );
}

#[test]
fn unknown_key_inside_events_is_an_error_at_its_line_and_column() {
    let conf = Conf::new(
        r#"interfaces = ["eth0"]
block = []

[events]
log = "all"
rate = 5
"#,
    );
    assert_rejected(
        &conf,
        &[Expect {
            line: 6,
            col: 1,
            message: "unknown field `rate`, expected `log` or `rate_limit`",
            source: "rate = 5",
            caret: "^~~~",
        }],
    );
}

#[test]
fn invalid_address_is_an_error_with_a_caret_under_the_string() {
    let conf = Conf::new(
        r#"interfaces = ["eth0"]
block = [
  "192.0.2.10",
  "192.0.2.300",
]
"#,
    );
    assert_rejected(
        &conf,
        &[Expect {
            line: 4,
            col: 3,
            message: "\"192.0.2.300\" is not an IPv4 or IPv6 address",
            source: "  \"192.0.2.300\",",
            caret: "  ^~~~~~~~~~~~~",
        }],
    );
}

#[test]
fn prefix_with_host_bits_set_is_an_error_that_suggests_the_network() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\"198.51.100.7\", \"192.0.2.1/24\"]\n");
    // `block = [` is 9 characters, `"198.51.100.7"` 14, then `, `: the
    // second string starts at column 26 and is 14 characters wide.
    assert_rejected(
        &conf,
        &[Expect {
            line: 2,
            col: 26,
            message: "\"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?",
            source: "block = [\"198.51.100.7\", \"192.0.2.1/24\"]",
            caret: "                         ^~~~~~~~~~~~~~",
        }],
    );
}

#[test]
fn ipv6_prefix_with_host_bits_set_suggests_the_ipv6_network() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\"2001:db8::1/32\"]\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 2,
            col: 10,
            message: "\"2001:db8::1/32\" has host bits set; did you mean \"2001:db8::/32\"?",
            source: "block = [\"2001:db8::1/32\"]",
            caret: "         ^~~~~~~~~~~~~~~~",
        }],
    );
}

#[test]
fn interfaces_as_a_string_instead_of_an_array_is_a_type_error() {
    let conf = Conf::new("interfaces = \"eth0\"\nblock = []\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 1,
            col: 14,
            message: "invalid type: string \"eth0\"",
            source: "interfaces = \"eth0\"",
            caret: "             ^~~~~~",
        }],
    );
}

#[test]
fn a_number_in_block_is_a_type_error() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [1]\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 2,
            col: 10,
            message: "expected an address or prefix in quotes, such as \"192.0.2.10\", found the integer 1",
            source: "block = [1]",
            caret: "         ^",
        }],
    );
}

#[test]
fn a_wrong_type_in_block_does_not_hide_the_other_bad_entries() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\"192.0.2.300\", true, \"192.0.2.1/24\"]\n");
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 2,
                col: 10,
                message: "\"192.0.2.300\" is not an IPv4 or IPv6 address",
                source: "block = [\"192.0.2.300\", true, \"192.0.2.1/24\"]",
                caret: "         ^~~~~~~~~~~~~",
            },
            Expect {
                line: 2,
                col: 25,
                message: "expected an address or prefix in quotes, such as \"192.0.2.10\", found the boolean true",
                source: "block = [\"192.0.2.300\", true, \"192.0.2.1/24\"]",
                caret: "                        ^~~~",
            },
            Expect {
                line: 2,
                col: 31,
                message: "\"192.0.2.1/24\" has host bits set",
                source: "block = [\"192.0.2.300\", true, \"192.0.2.1/24\"]",
                caret: "                              ^~~~~~~~~~~~~~",
            },
        ],
    );
}

#[test]
fn a_string_rate_limit_in_events_is_a_type_error() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\n[events]\nrate_limit = \"fast\"\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 4,
            col: 14,
            message: "invalid type: string \"fast\"",
            source: "rate_limit = \"fast\"",
            caret: "             ^~~~~~",
        }],
    );
}

#[test]
fn an_unknown_enum_value_is_an_error_at_the_value() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\nicmp = \"ping\"\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 8,
            message: "unknown variant `ping`, expected `echo` or `all`",
            source: "icmp = \"ping\"",
            caret: "       ^~~~~~",
        }],
    );
}

#[test]
fn toml_syntax_error_unclosed_array_is_reported_with_a_position() {
    // A file cut off inside `block`: the third line is 15 characters long
    // and the array is still open at its end.
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\n  \"192.0.2.10\",\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 16,
            message: "unclosed array",
            source: "  \"192.0.2.10\",",
            caret: "               ^",
        }],
    );
}

#[test]
fn toml_syntax_error_missing_equals_is_reported_at_the_fault() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock [\"192.0.2.1\"]\n");
    assert_rejected(
        &conf,
        &[Expect { line: 2, col: 7, message: "", source: "block [\"192.0.2.1\"]", caret: "      ^" }],
    );
}

#[test]
fn every_bad_address_gets_its_own_error_in_file_order() {
    let conf = Conf::new(
        r#"interfaces = ["eth0"]
block = [
  "192.0.2.300",
  "192.0.2.10",
  "2001:db8::/32",
  "198.51.100.1/24",
  "not-an-address",
  "2001:db8::1/32",
]
"#,
    );
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 3,
                col: 3,
                message: "\"192.0.2.300\" is not an IPv4 or IPv6 address",
                source: "  \"192.0.2.300\",",
                caret: "  ^~~~~~~~~~~~~",
            },
            Expect {
                line: 6,
                col: 3,
                message: "\"198.51.100.1/24\" has host bits set; did you mean \"198.51.100.0/24\"?",
                source: "  \"198.51.100.1/24\",",
                caret: "  ^~~~~~~~~~~~~~~~~",
            },
            Expect {
                line: 7,
                col: 3,
                message: "\"not-an-address\" is not an IPv4 or IPv6 address",
                source: "  \"not-an-address\",",
                caret: "  ^~~~~~~~~~~~~~~~",
            },
            Expect {
                line: 8,
                col: 3,
                message: "\"2001:db8::1/32\" has host bits set; did you mean \"2001:db8::/32\"?",
                source: "  \"2001:db8::1/32\",",
                caret: "  ^~~~~~~~~~~~~~~~",
            },
        ],
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    // "é" is two bytes but one column: the second string starts at column
    // 15 (`block = [` 9, `"é"` 3, `, ` 2).
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\"é\", \"192.0.2.300\"]\n");
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 2,
                col: 10,
                message: "\"é\" is not an IPv4 or IPv6 address",
                source: "block = [\"é\", \"192.0.2.300\"]",
                caret: "         ^~~",
            },
            Expect {
                line: 2,
                col: 15,
                message: "\"192.0.2.300\" is not an IPv4 or IPv6 address",
                source: "block = [\"é\", \"192.0.2.300\"]",
                caret: "              ^~~~~~~~~~~~~",
            },
        ],
    );
}

#[test]
fn crlf_line_ends_and_tabs_keep_positions_and_caret_aligned() {
    let conf = Conf::new("interfaces = [\"eth0\"]\r\nblock = [\r\n\t\"192.0.2.300\",\r\n]\r\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 2,
            message: "\"192.0.2.300\" is not an IPv4 or IPv6 address",
            source: "\t\"192.0.2.300\",",
            caret: "\t^~~~~~~~~~~~~",
        }],
    );
}

#[test]
fn invalid_utf8_is_an_error_at_the_first_bad_byte() {
    let conf = Conf::named("tmpab12cd", b"interfaces = [\"eth0\"]\nblock = [\"\xff\"]\n");
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains(&format!("{}:2:11: invalid UTF-8", conf.p())), "{r:?}");
}

// ------------------------------------- check: missing or truncated content

#[test]
fn missing_block_key_is_an_error_never_an_empty_blocklist() {
    let conf = Conf::new("interfaces = [\"eth0\"]\n");
    // The key is missing, so the position is the end of the file: line 2,
    // which is empty.
    assert_rejected(&conf, &[Expect { line: 2, col: 1, message: "missing key `block`", source: "", caret: "^" }]);
}

#[test]
fn empty_file_is_an_error_never_an_empty_blocklist() {
    let conf = Conf::new("");
    assert_rejected(&conf, &[Expect { line: 1, col: 1, message: "missing key `interfaces`", source: "", caret: "^" }]);
}

#[test]
fn file_of_only_comments_is_an_error_never_an_empty_blocklist() {
    let conf = Conf::new("# block = [\"192.0.2.10\"]\n");
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(r.stderr.contains("missing key"), "{r:?}");
}

#[test]
fn file_truncated_inside_a_string_is_an_error() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\n  \"192.0.2.10\",\n  \"198.51");
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(r.stderr.contains(&format!("{}:4:", conf.p())), "error should be on the last line: {r:?}");
}

#[test]
fn check_on_a_missing_file_exits_1_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tmpmissing");
    let r = check(&path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert!(r.stderr.contains(&path.display().to_string()), "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
}

#[test]
fn check_on_a_directory_exits_1_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let r = check(dir.path());
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains(&dir.path().display().to_string()), "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    assert!(r.stderr.contains("is a directory"), "{r:?}");
}

#[test]
fn check_on_a_fifo_exits_1_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("tmpfifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let r = check(&fifo);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("not a regular file"), "{r:?}");
}

#[test]
fn check_without_config_flag_reads_etc_icmpguard_toml() {
    if Path::new("/etc/icmpguard.toml").exists() {
        eprintln!("skipped: /etc/icmpguard.toml exists");
        return;
    }
    let r = icmpguard(&["check"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("/etc/icmpguard.toml"), "{r:?}");
}

// ------------------------------------------------------------ command line

const SUBCOMMANDS: [&str; 4] = ["run", "check", "status", "unload"];

#[test]
fn help_exits_0_for_the_top_level_and_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["-h"],
        vec!["help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["status", "--help"],
        vec!["unload", "--help"],
        vec!["check", "-h"],
    ] {
        let r = icmpguard(&args);
        assert_eq!(r.code, Some(0), "icmpguard {args:?}: {r:?}");
        assert!(r.stdout.contains("Usage: icmpguard"), "icmpguard {args:?}: {r:?}");
    }
    let r = icmpguard(&["--help"]);
    for sub in SUBCOMMANDS {
        assert!(r.stdout.contains(sub), "top-level help lacks {sub}: {r:?}");
    }
}

#[test]
fn version_exits_0_and_prints_the_version_at_the_top_level() {
    let want = format!("icmpguard {}\n", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V"] {
        let r = icmpguard(&[flag]);
        assert_eq!(r.code, Some(0), "{flag}: {r:?}");
        assert_eq!(r.stdout, want, "{flag}: {r:?}");
    }
}

#[test]
fn version_exits_0_for_every_subcommand() {
    // SPEC: "`--help` and `--version` work everywhere."
    let mut failures = Vec::new();
    for sub in SUBCOMMANDS {
        let r = icmpguard(&[sub, "--version"]);
        if r.code != Some(0) || !r.stdout.contains(env!("CARGO_PKG_VERSION")) {
            failures.push(format!("icmpguard {sub} --version: {r:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_subcommand_exits_2() {
    let r = icmpguard(&["bogus"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("bogus"), "{r:?}");
}

#[test]
fn unknown_flag_exits_2_at_the_top_level_and_in_every_subcommand() {
    let r = icmpguard(&["--bogus"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    for sub in SUBCOMMANDS {
        let r = icmpguard(&[sub, "--bogus"]);
        assert_eq!(r.code, Some(2), "icmpguard {sub} --bogus: {r:?}");
        assert!(r.stderr.contains("--bogus"), "{r:?}");
    }
}

#[test]
fn no_subcommand_is_a_usage_error_exit_2() {
    let r = icmpguard(&[]);
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[test]
fn config_flag_without_a_value_exits_2() {
    let r = icmpguard(&["check", "-c"]);
    assert_eq!(r.code, Some(2), "{r:?}");
}

// ------------------------------------------- ownership and mode (root only)

/// The config for the root-only `run` tests: even if `run` wrongly accepted
/// the file it would stop at the pin directory (not on a bpffs) before
/// loading anything, and it would log to a socket that does not exist.
fn harmless_run_config(dir: &Path) -> String {
    format!(
        "interfaces = [\"icmpgtest0\"]\nblock = [\"192.0.2.10\"]\npin_dir = \"{}/pins\"\n[syslog]\nsocket = \"{}/nolog\"\n",
        dir.display(),
        dir.display()
    )
}

fn run_daemon(path: &Path) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("-c").arg(path);
    run_cmd(cmd)
}

/// A root-owned 0700 temp dir holding a harmless, valid config at 0644.
fn root_conf() -> Conf {
    let dir = tempfile::tempdir().unwrap();
    let text = harmless_run_config(dir.path());
    let path = dir.path().join("tmpab12cd");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    Conf { tmp: dir, path }
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn check_only_warns_about_a_world_writable_file_but_run_refuses_it() {
    require_root();
    let conf = root_conf();
    fs::set_permissions(&conf.path, fs::Permissions::from_mode(0o666)).unwrap();

    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(": valid"), "{r:?}");
    assert!(r.stderr.contains("warning"), "{r:?}");
    assert!(r.stderr.contains("chmod"), "{r:?}");
    assert!(r.stderr.contains(&conf.p()), "{r:?}");

    let r = run_daemon(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("refusing"), "{r:?}");
    assert!(r.stderr.contains(&conf.p()), "{r:?}");
    assert!(!conf.dir().join("pins").exists(), "run went on: {r:?}");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn check_only_warns_about_a_file_owned_by_another_user_but_run_refuses_it() {
    require_root();
    let conf = root_conf();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&conf.path, Some(nobody), None).unwrap();

    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("warning"), "{r:?}");
    assert!(r.stderr.contains("65534"), "{r:?}");
    assert!(r.stderr.contains("chown"), "{r:?}");

    let r = run_daemon(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("refusing"), "{r:?}");
    assert!(!conf.dir().join("pins").exists(), "run went on: {r:?}");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn check_only_warns_about_a_group_writable_directory_but_run_refuses_it() {
    require_root();
    let conf = root_conf();
    fs::set_permissions(conf.dir(), fs::Permissions::from_mode(0o775)).unwrap();

    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("warning"), "{r:?}");
    assert!(r.stderr.contains(&conf.dir().display().to_string()), "{r:?}");

    let r = run_daemon(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("refusing"), "{r:?}");
    assert!(!conf.dir().join("pins").exists(), "run went on: {r:?}");
}

#[test]
fn check_needs_no_privileges() {
    let conf = Conf::new(VALID);
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("-c").arg(&conf.path);
    if is_root() {
        // Drop to nobody for the child; it must be able to reach the file.
        fs::set_permissions(conf.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(65534).gid(65534);
    }
    let r = run_cmd(cmd);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(": valid"), "{r:?}");
}

#[test]
fn a_fault_in_a_huge_line_is_quoted_as_a_short_window() {
    // 4 MB on one line, the bad address in the middle.
    let before = "\"192.0.2.1\", ".repeat(200_000);
    let after = "\"192.0.2.2\", ".repeat(100_000);
    let text = format!("interfaces = [\"eth0\"]\nblock = [{before}\"192.0.2.300\", {after}]\n");
    let conf = Conf::new(&text);
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.len() < 1000, "{} bytes of diagnostics for one bad address", r.stderr.len());
    let col = "block = [".len() + before.len() + 1;
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{r:?}");
    assert!(lines[0].starts_with(&format!("{}:2:{col}: \"192.0.2.300\" is not", conf.p())), "{r:?}");
    assert!(lines[1].starts_with("    …") && lines[1].ends_with('…'), "{r:?}");
    let caret = lines[2].find('^').unwrap();
    assert_eq!(lines[1].chars().skip(caret).take(13).collect::<String>(), "\"192.0.2.300\"", "{r:?}");
}

#[test]
fn deeply_nested_brackets_give_one_short_diagnostic() {
    let text = format!("interfaces = [\"eth0\"]\nblock = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let conf = Conf::new(&text);
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.len() < 1000, "{} bytes of diagnostics", r.stderr.len());
    assert!(r.stderr.starts_with(&format!("{}:2:", conf.p())), "{r:?}");
}

#[test]
fn control_bytes_in_the_file_are_shown_escaped_never_raw() {
    let conf = Conf::named("tmpab12cd", b"interfaces = [\"eth0\"]\nblock = [\"192.0.2.1\", \"1\x00\x1b[2J\"]\n");
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(!r.stderr.contains(['\0', '\x1b']), "raw control bytes in {:?}", r.stderr);
    assert!(r.stderr.contains("\"1\\u{0}\\u{1b}[2J\"]"), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 3, "{r:?}");
}

// ------------------------------------- check: allow, icmp, dry_run, [limit]

/// Asserts that `check` accepted the file with exit 0 and printed exactly
/// the `expected` warnings on stderr, each `icmpguard: warning:
/// FILE:LINE:COL: message` on one line, in that order.
fn assert_warned(conf: &Conf, expected: &[(usize, usize, &str)]) -> Run {
    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with(&format!("{}: valid", conf.p())), "{r:?}");
    let want: Vec<String> = expected
        .iter()
        .map(|(line, col, message)| format!("icmpguard: warning: {}:{line}:{col}: {message}", conf.p()))
        .collect();
    let got: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(got, want, "{r:?}");
    r
}

/// How `check` starts the message for the entry "192.0.2.300".
const NOT_AN_ADDRESS: &str = "\"192.0.2.300\" is not an IPv4 or IPv6 address or prefix";
const BOTH: &str = "\"192.0.2.10\" is both allowed and blocked: allow wins, the block entry has no effect";
const COVERS_ONE: &str =
    "allowed \"198.51.100.0/24\" covers blocked \"198.51.100.7\": allow wins, the block entry has no effect";
const COVERS_THREE: &str =
    "allowed \"2001:db8::/32\" covers 3 block entries (\"2001:db8::1\" first): allow wins, they have no effect";

const ALLOW_LIST: &str = r#"allow = [
  "192.0.2.10",
  "198.51.100.0/24",
  "2001:db8::/32",
  "203.0.113.0/24",
]
"#;

const BLOCK_LIST: &str = r#"block = [
  "192.0.2.10",
  "198.51.100.7",
  "2001:db8::1", # an address
  "2001:db8:1::/48", # ünïcödé in a comment
  "2001:db8:2::/48",
]
"#;

#[test]
fn allow_accepts_addresses_and_prefixes_of_both_families() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = [\"203.0.113.9\"]\nallow = [\n  \"192.0.2.10\",\n  \"198.51.100.0/24\",\n  \"2001:db8::1\",\n  \"2001:db8:beef::/48\",\n  \"::ffff:192.0.2.10\",\n]\n",
    );
    let r = assert_warned(&conf, &[]);
    assert!(r.stdout.contains(" 1 entries "), "allow entries are not block entries: {r:?}");
}

#[test]
fn bad_allow_entries_are_errors_at_their_place() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = []\nallow = [\"192.0.2.300\", \"192.0.2.1/24\", 5, \"2001:db8::1/32\"]\n",
    );
    let source = "allow = [\"192.0.2.300\", \"192.0.2.1/24\", 5, \"2001:db8::1/32\"]";
    assert_rejected(
        &conf,
        &[
            Expect { line: 3, col: 10, message: NOT_AN_ADDRESS, source, caret: "         ^~~~~~~~~~~~~" },
            Expect {
                line: 3,
                col: 25,
                message: "\"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?",
                source,
                caret: "                        ^~~~~~~~~~~~~~",
            },
            Expect {
                line: 3,
                col: 41,
                message: "expected an address or prefix in quotes, such as \"192.0.2.10\", found the integer 5",
                source,
                caret: "                                        ^",
            },
            Expect {
                line: 3,
                col: 44,
                message: "\"2001:db8::1/32\" has host bits set; did you mean \"2001:db8::/32\"?",
                source,
                caret: "                                           ^~~~~~~~~~~~~~~~",
            },
        ],
    );
}

#[test]
fn allow_of_the_wrong_type_is_an_error() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\nallow = \"192.0.2.1\"\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 9,
            message: "invalid type: string \"192.0.2.1\", expected an array of addresses and prefixes",
            source: "allow = \"192.0.2.1\"",
            caret: "        ^~~~~~~~~~~",
        }],
    );
}

/// The fast scanner cuts the block array out of the text when the block
/// list comes first: the allow entries after it must keep the file's
/// positions (lines 10 to 12 here).
#[test]
fn bad_allow_entries_after_a_multiline_block_list_are_at_the_files_positions() {
    let conf = Conf::new(&format!(
        "interfaces = [\"eth0\"]\n{BLOCK_LIST}allow = [\n  \"192.0.2.300\",\n  \"203.0.113.0/24\",\n  \"192.0.2.1/24\",\n]\n"
    ));
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 10,
                col: 3,
                message: NOT_AN_ADDRESS,
                source: "  \"192.0.2.300\",",
                caret: "  ^~~~~~~~~~~~~",
            },
            Expect {
                line: 12,
                col: 3,
                message: "\"192.0.2.1/24\" has host bits set",
                source: "  \"192.0.2.1/24\",",
                caret: "  ^~~~~~~~~~~~~~",
            },
        ],
    );
}

#[test]
fn bad_entries_in_both_lists_are_each_at_their_place_in_either_order() {
    let block = "block = [\n  \"192.0.2.300\",\n]\n";
    let allow = "allow = [\n  \"198.51.100.1/24\",\n]\n";
    let bad_block =
        |line| Expect { line, col: 3, message: NOT_AN_ADDRESS, source: "  \"192.0.2.300\",", caret: "  ^~~~~~~~~~~~~" };
    let bad_allow = |line| Expect {
        line,
        col: 3,
        message: "\"198.51.100.1/24\" has host bits set; did you mean \"198.51.100.0/24\"?",
        source: "  \"198.51.100.1/24\",",
        caret: "  ^~~~~~~~~~~~~~~~~",
    };
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{block}{allow}"));
    assert_rejected(&conf, &[bad_block(3), bad_allow(6)]);
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{allow}{block}"));
    assert_rejected(&conf, &[bad_allow(3), bad_block(6)]);
}

#[test]
fn allow_entries_covering_block_entries_are_warnings_with_the_block_list_after_them() {
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{ALLOW_LIST}{BLOCK_LIST}"));
    let r = assert_warned(&conf, &[(3, 3, BOTH), (4, 3, COVERS_ONE), (5, 3, COVERS_THREE)]);
    assert!(r.stdout.contains(" 5 entries "), "{r:?}");
}

#[test]
fn allow_entries_covering_block_entries_are_warnings_with_the_block_list_before_them() {
    // Lines 2 to 8 are the block list, cut out by the fast scanner.
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{BLOCK_LIST}{ALLOW_LIST}"));
    assert_warned(&conf, &[(10, 3, BOTH), (11, 3, COVERS_ONE), (12, 3, COVERS_THREE)]);
}

#[test]
fn a_cover_warning_on_one_line_is_at_the_columns_of_the_allow_entry() {
    // `allow = [` 9, `"203.0.113.1"` 13, `, ` 2: the second entry at 25.
    let conf =
        Conf::new("interfaces = [\"eth0\"]\nblock = [\"192.0.2.10\"]\nallow = [\"203.0.113.1\", \"192.0.2.10\"]\n");
    assert_warned(&conf, &[(3, 25, BOTH)]);
    // An allow prefix inside a block prefix leaves the rest blocked: no
    // warning.
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\"192.0.2.0/24\"]\nallow = [\"192.0.2.0/25\"]\n");
    assert_warned(&conf, &[]);
}

#[test]
fn a_file_with_errors_prints_no_warnings() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = [\"192.0.2.10\"]\nallow = [\"192.0.2.10\"]\nicmp = [\"redirect\", \"bogus\"]\n",
    );
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(!r.stderr.contains("warning"), "{r:?}");
    assert!(r.stderr.starts_with(&format!("{}:4:21: unknown ICMP type \"bogus\"", conf.p())), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 3, "{r:?}");
}

#[test]
fn icmp_lists_of_names_and_numbers_are_valid() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = [\"192.0.2.10\"]\nicmp = [\"echo-request\", \"echo-reply\", \"timestamp-request\", \"destination-unreachable\", \"time-exceeded\", \"icmp:42\", \"icmpv6:200\"]\n",
    );
    assert_warned(&conf, &[]);
}

#[test]
fn icmp_names_that_are_never_dropped_or_no_type_are_errors_that_say_why() {
    let conf = Conf::new(
        r#"interfaces = ["eth0"]
block = []
icmp = [
  "packet-too-big",
  "icmpv6:2",
  "fragmentation-needed",
  "neighbour-solicitation",
  "icmpv6:135",
  "port-unreachable",
  "echo-request",
  "bogus",
  "icmp:256",
  7,
]
"#,
    );
    let pmtu = "cannot be listed: packet-too-big (ICMPv6 2) carries path-MTU discovery; dropping it black-holes connections (RFC 8201), so it is never dropped";
    let nd = "cannot be listed: ICMPv6 133-137 are neighbour discovery (RFC 4861), how IPv6 resolves addresses on the link; they are never dropped";
    let m_ptb = format!("\"packet-too-big\" {pmtu}");
    let m_2 = format!("\"icmpv6:2\" {pmtu}");
    let m_ns = format!("\"neighbour-solicitation\" {nd}");
    let m_135 = format!("\"icmpv6:135\" {nd}");
    assert_rejected(
        &conf,
        &[
            Expect { line: 4, col: 3, message: &m_ptb, source: "  \"packet-too-big\",", caret: "  ^~~~~~~~~~~~~~~~" },
            Expect { line: 5, col: 3, message: &m_2, source: "  \"icmpv6:2\",", caret: "  ^~~~~~~~~~" },
            Expect {
                line: 6,
                col: 3,
                message: "\"fragmentation-needed\" cannot be listed: it carries path-MTU discovery, and dropping it black-holes connections (RFC 1191); it is never dropped (list \"destination-unreachable\" for the other codes)",
                source: "  \"fragmentation-needed\",",
                caret: "  ^~~~~~~~~~~~~~~~~~~~~~",
            },
            Expect {
                line: 7,
                col: 3,
                message: &m_ns,
                source: "  \"neighbour-solicitation\",",
                caret: "  ^~~~~~~~~~~~~~~~~~~~~~~~",
            },
            Expect { line: 8, col: 3, message: &m_135, source: "  \"icmpv6:135\",", caret: "  ^~~~~~~~~~~~" },
            Expect {
                line: 9,
                col: 3,
                message: "\"port-unreachable\" names a code, and icmpguard selects whole types: write \"destination-unreachable\"",
                source: "  \"port-unreachable\",",
                caret: "  ^~~~~~~~~~~~~~~~~~",
            },
            Expect {
                line: 11,
                col: 3,
                message: "unknown ICMP type \"bogus\"; write a name as iptables --icmp-type or ip6tables --icmpv6-type spells it (such as \"echo-request\"",
                source: "  \"bogus\",",
                caret: "  ^~~~~~~",
            },
            Expect {
                line: 12,
                col: 3,
                message: "\"icmp:256\": the type after `icmp:` must be a number from 0 to 255",
                source: "  \"icmp:256\",",
                caret: "  ^~~~~~~~~~",
            },
            Expect {
                line: 13,
                col: 3,
                message: "expected an ICMP type name in quotes, such as \"echo-request\", found the integer 7",
                source: "  7,",
                caret: "  ^",
            },
        ],
    );
}

#[test]
fn icmp_errors_after_a_multiline_block_list_are_at_the_files_positions() {
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{BLOCK_LIST}icmp = [\"echo-request\", \"icmpv6:2\"]\n"));
    let message = "\"icmpv6:2\" cannot be listed: packet-too-big (ICMPv6 2) carries path-MTU discovery";
    assert_rejected(
        &conf,
        &[Expect {
            line: 9,
            col: 25,
            message,
            source: "icmp = [\"echo-request\", \"icmpv6:2\"]",
            caret: "                        ^~~~~~~~~~",
        }],
    );
}

#[test]
fn an_empty_icmp_list_is_an_error_that_says_what_to_write() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\nicmp = []\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 8,
            message: "an empty `icmp` list drops nothing for a blocked address; write \"echo\" (ping), \"all\", or the types to drop",
            source: "icmp = []",
            caret: "       ^~",
        }],
    );
}

#[test]
fn redirect_and_router_messages_warn_that_they_select_ipv4_only() {
    // After a cut-out block list: the warnings are at the file's places.
    let conf = Conf::new(&format!(
        "interfaces = [\"eth0\"]\n{BLOCK_LIST}icmp = [\"echo-request\", \"redirect\",\n  \"router-advertisement\"]\n"
    ));
    assert_warned(
        &conf,
        &[
            (9, 25, "\"redirect\" selects the IPv4 message only: its ICMPv6 namesake (type 137) is neighbour discovery, which is never dropped"),
            (10, 3, "\"router-advertisement\" selects the IPv4 message only: its ICMPv6 namesake (type 134) is neighbour discovery, which is never dropped"),
        ],
    );
}

#[test]
fn dry_run_true_is_valid_and_check_says_nothing_is_dropped() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\"192.0.2.10\"]\ndry_run = true\n");
    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with(&format!("{}: valid", conf.p())), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "icmpguard: warning: {}: dry_run = true: nothing is dropped; what would be is only counted and logged\n",
            conf.p()
        ),
        "{r:?}"
    );
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = [\"192.0.2.10\"]\ndry_run = false\n");
    assert_warned(&conf, &[]);
}

#[test]
fn dry_run_of_the_wrong_type_is_an_error() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\ndry_run = \"yes\"\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 11,
            message: "invalid type: string \"yes\", expected `true` or `false`",
            source: "dry_run = \"yes\"",
            caret: "          ^~~~~",
        }],
    );
}

#[test]
fn limit_values_in_range_are_valid() {
    for limit in [
        "[limit]\necho = 10\n",
        "[limit]\necho = 10\nburst = 1\nsources = 1\n",
        "[limit]\necho = 1000000000\nburst = 4294967295\nsources = 4194304\n",
        "[limit]\necho = 0\n",
        "limit = { echo = 5, sources = 100 }\n",
    ] {
        let conf = Conf::new(&format!("interfaces = [\"eth0\"]\nblock = []\n{limit}"));
        assert_warned(&conf, &[]);
    }
}

#[test]
fn limit_values_out_of_range_are_errors_at_the_value() {
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\n[limit]\necho = 10\nburst = 0\nsources = 0\n");
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 5,
                col: 9,
                message:
                    "`burst` must be at least 1 (a bucket that holds no request admits none); leave it out for 2 x echo",
                source: "burst = 0",
                caret: "        ^",
            },
            Expect {
                line: 6,
                col: 11,
                message: "`sources` must be from 1 to 4194304",
                source: "sources = 0",
                caret: "          ^",
            },
        ],
    );
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\n[limit]\necho = 1000000001\nsources = 4194305\n");
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 4,
                col: 8,
                message: "`echo` is at most 1000000000 requests per second (one per nanosecond)",
                source: "echo = 1000000001",
                caret: "       ^~~~~~~~~~",
            },
            Expect {
                line: 5,
                col: 11,
                message: "`sources` must be from 1 to 4194304",
                source: "sources = 4194305",
                caret: "          ^~~~~~~",
            },
        ],
    );
}

#[test]
fn limit_wrong_types_and_unknown_keys_are_errors() {
    let conf =
        Conf::new("interfaces = [\"eth0\"]\nblock = []\n[limit]\necho = \"10\"\nburst = -1\nsources = 1.5\nrate = 3\n");
    let number = "expected a whole number from 0 to 4294967295";
    let m_echo = format!("invalid type: string \"10\", {number}");
    let m_burst = format!("invalid value: integer `-1`, {number}");
    let m_sources = format!("invalid type: floating point `1.5`, {number}");
    assert_rejected(
        &conf,
        &[
            Expect { line: 4, col: 8, message: &m_echo, source: "echo = \"10\"", caret: "       ^~~~" },
            Expect { line: 5, col: 9, message: &m_burst, source: "burst = -1", caret: "        ^~" },
            Expect { line: 6, col: 11, message: &m_sources, source: "sources = 1.5", caret: "          ^~~" },
            Expect {
                line: 7,
                col: 1,
                message: "unknown field `rate`, expected one of `echo`, `burst`, `sources`",
                source: "rate = 3",
                caret: "^~~~",
            },
        ],
    );
    let conf = Conf::new("interfaces = [\"eth0\"]\nblock = []\nlimit = 5\n");
    assert_rejected(
        &conf,
        &[Expect {
            line: 3,
            col: 9,
            message: "invalid type: integer `5`, expected a table",
            source: "limit = 5",
            caret: "        ^",
        }],
    );
}

#[test]
fn burst_without_echo_is_a_warning_at_the_burst_and_exit_0() {
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{BLOCK_LIST}[limit]\nburst = 5\n"));
    assert_warned(&conf, &[(10, 9, "`burst = 5` has no effect without `echo` (no rate limit)")]);
}

#[test]
fn check_accepts_a_file_with_every_key_and_prints_each_warning() {
    let conf = Conf::new(
        r#"interfaces = ["eth0", "eth1"]
block = [
  "192.0.2.0/24",
  "198.51.100.7",
  "2001:db8:dead::/48",
]
allow = [
  "192.0.2.7",
  "198.51.100.7",
  "2001:db8:beef::/48",
]
icmp = ["echo-request", "echo-reply", "timestamp-request", "redirect", "icmp:42", "icmpv6:200"]
dry_run = true
mode = "native"
pin_dir = "/sys/fs/bpf/other"

[limit]
echo = 10
burst = 30
sources = 1024

[events]
log = "blocked"
rate_limit = 0

[syslog]
facility = "local3"
socket = "/run/test.sock"
"#,
    );
    let r = check(&conf.path);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with(&format!("{}: valid: 2 interface(s), 3 entries ", conf.p())), "{r:?}");
    let p = conf.p();
    let want = [
        format!("icmpguard: warning: {p}:9:3: \"198.51.100.7\" is both allowed and blocked: allow wins, the block entry has no effect"),
        format!("icmpguard: warning: {p}:12:60: \"redirect\" selects the IPv4 message only: its ICMPv6 namesake (type 137) is neighbour discovery, which is never dropped"),
        format!("icmpguard: warning: {p}: dry_run = true: nothing is dropped; what would be is only counted and logged"),
    ];
    assert_eq!(r.stderr.lines().collect::<Vec<_>>(), want, "{r:?}");
}

// ------------------------------------------- check: entry tables, fragments

const ENTRY_TABLES: &str = r#"interfaces = ["eth0"]
block = [
  "192.0.2.10",
  { addr = "203.0.113.7", until = 2099-12-24T00:00:00Z, note = "scanner, ticket 4711" },
  { addr = "2001:db8::/32", note = "lab" },
]
allow = [{ addr = "198.51.100.7", until = 2099-01-01T00:00:00+01:00 }, "198.51.100.8"]
"#;

#[test]
fn entry_tables_mixed_with_strings_are_valid_in_block_and_allow() {
    let conf = Conf::new(ENTRY_TABLES);
    let r = assert_warned(&conf, &[]);
    assert!(r.stdout.contains(" 3 entries (2 IPv4, 1 IPv6; 1 prefixes), 2 allowed"), "{r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "no fragments line without icmpguard.d: {r:?}");
}

const LOCAL: &str = "until: `2026-12-24T00:00:00` is a local date-time, whose moment depends on the machine's time zone; add the offset, such as 2026-12-24T00:00:00Z (UTC) or 2026-12-24T00:00:00+01:00";
const NOT_A_DATE_TIME: &str = "is not a date-time; write a date, a time and an offset, such as 2026-12-24T00:00:00Z";
const CONTROL: &str = "; a note is one line of text, shown in status and syslog";

#[test]
fn until_must_be_an_offset_date_time_without_quotes() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = [\n  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },\n  { addr = \"192.0.2.3\", until = 2026-12-24 },\n  { addr = \"192.0.2.4\", until = 07:32:00 },\n  { addr = \"192.0.2.5\", until = \"2026-12-24T00:00:00Z\" },\n]\n",
    );
    let date = format!("until: `2026-12-24` {NOT_A_DATE_TIME}");
    let time = format!("until: `07:32:00` {NOT_A_DATE_TIME}");
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 3,
                col: 33,
                message: LOCAL,
                source: "  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },",
                caret: "                                ^~~~~~~~~~~~~~~~~~~",
            },
            Expect {
                line: 4,
                col: 33,
                message: &date,
                source: "  { addr = \"192.0.2.3\", until = 2026-12-24 },",
                caret: "                                ^~~~~~~~~~",
            },
            Expect {
                line: 5,
                col: 33,
                message: &time,
                source: "  { addr = \"192.0.2.4\", until = 07:32:00 },",
                caret: "                                ^~~~~~~~",
            },
            Expect {
                line: 6,
                col: 33,
                message: "invalid type: string \"2026-12-24T00:00:00Z\", expected an offset date-time, such as 2026-12-24T00:00:00Z (no quotes)",
                source: "  { addr = \"192.0.2.5\", until = \"2026-12-24T00:00:00Z\" },",
                caret: "                                ^~~~~~~~~~~~~~~~~~~~~~",
            },
        ],
    );
}

#[test]
fn a_note_of_201_characters_is_an_error_and_200_are_fine_counted_as_characters() {
    let text =
        |note: &str| format!("interfaces = [\"eth0\"]\nblock = [{{ addr = \"192.0.2.2\", note = \"{note}\" }}]\n");
    for note in ["n".repeat(200), "é".repeat(200), "🦀".repeat(200)] {
        assert_warned(&Conf::new(&text(&note)), &[]);
    }
    for note in ["n".repeat(201), "é".repeat(201)] {
        let conf = Conf::new(&text(&note));
        let source = format!("block = [{{ addr = \"192.0.2.2\", note = \"{note}\" }}]");
        let r = check(&conf.path);
        assert_eq!(r.code, Some(1), "{r:?}");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 3, "{r:?}");
        assert_eq!(
            lines[0],
            format!("{}:2:39: the note has 201 characters; at most 200 are kept in status and event lines", conf.p())
        );
        // A long line is quoted as a window, the caret under the note.
        assert!(source.chars().count() > 120 && lines[1].ends_with('…'), "{r:?}");
        let caret = lines[2].find('^').unwrap();
        assert_eq!(lines[1].chars().nth(caret), Some('"'), "{r:?}");
    }
}

#[test]
fn a_note_with_a_control_character_is_an_error_at_the_note() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = [\n  { addr = \"192.0.2.2\", note = \"a\\u0007b\" },\n  { addr = \"192.0.2.3\", note = \"a\\tb\" },\n]\nallow = [{ addr = \"198.51.100.1\", note = \"a\\nb\" }]\n",
    );
    let bell = format!("the note holds the control character '\\u{{7}}'{CONTROL}");
    let tab = format!("the note holds the control character '\\t'{CONTROL}");
    let newline = format!("the note holds the control character '\\n'{CONTROL}");
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 3,
                col: 32,
                message: &bell,
                source: "  { addr = \"192.0.2.2\", note = \"a\\u0007b\" },",
                caret: "                               ^~~~~~~~~~",
            },
            Expect {
                line: 4,
                col: 32,
                message: &tab,
                source: "  { addr = \"192.0.2.3\", note = \"a\\tb\" },",
                caret: "                               ^~~~~~",
            },
            Expect {
                line: 6,
                col: 42,
                message: &newline,
                source: "allow = [{ addr = \"198.51.100.1\", note = \"a\\nb\" }]",
                caret: "                                         ^~~~~~",
            },
        ],
    );
}

#[test]
fn entry_tables_with_a_wrong_type_an_unknown_key_or_no_addr_are_errors() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = [\n  { addr = \"192.0.2.2\", note = 5 },\n  { addr = \"192.0.2.3\", x = 1 },\n  { until = 2099-01-01T00:00:00Z },\n  { addr = \"192.0.2.300\" },\n]\n",
    );
    // The whole table: 32 characters.
    let table_caret = format!("  ^{}", "~".repeat(31));
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 3,
                col: 32,
                message: "invalid type: integer `5`, expected a note in quotes, such as \"scanner, ticket 4711\"",
                source: "  { addr = \"192.0.2.2\", note = 5 },",
                caret: "                               ^",
            },
            Expect {
                line: 4,
                col: 25,
                message: "unknown field `x`, expected one of `addr`, `until`, `note`",
                source: "  { addr = \"192.0.2.3\", x = 1 },",
                caret: "                        ^",
            },
            Expect {
                line: 5,
                col: 3,
                message: "an entry table needs `addr`, such as { addr = \"203.0.113.7\", until = 2026-12-24T00:00:00Z, note = \"scanner\" }",
                source: "  { until = 2099-01-01T00:00:00Z },",
                caret: &table_caret,
            },
            Expect {
                line: 6,
                col: 12,
                message: NOT_AN_ADDRESS,
                source: "  { addr = \"192.0.2.300\" },",
                caret: "           ^~~~~~~~~~~~~",
            },
        ],
    );
}

/// The block list with a table before and after the other keys: the
/// positions are the file's either way.
#[test]
fn entry_table_errors_are_at_the_files_positions_with_the_block_list_before_or_after() {
    let block = "block = [\n  \"192.0.2.1\", # ünïcödé\n  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },\n]\n";
    let table = "  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },";
    let caret = "                                ^~~~~~~~~~~~~~~~~~~";
    let icmp = "icmp = [\"echo-request\", \"icmpv6:2\"]\n";
    let pmtu = "\"icmpv6:2\" cannot be listed: packet-too-big (ICMPv6 2) carries path-MTU discovery";
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{block}{icmp}"));
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_rejected(
        &conf,
        &[
            Expect { line: 4, col: 33, message: LOCAL, source: table, caret },
            Expect {
                line: 6,
                col: 25,
                message: pmtu,
                source: "icmp = [\"echo-request\", \"icmpv6:2\"]",
                caret: "                        ^~~~~~~~~~",
            },
        ],
    );
    let conf = Conf::new(&format!("interfaces = [\"eth0\"]\n{icmp}{block}"));
    assert_rejected(
        &conf,
        &[
            Expect {
                line: 2,
                col: 25,
                message: pmtu,
                source: "icmp = [\"echo-request\", \"icmpv6:2\"]",
                caret: "                        ^~~~~~~~~~",
            },
            Expect { line: 5, col: 33, message: LOCAL, source: table, caret },
        ],
    );
}

#[test]
fn an_expired_entry_is_a_warning_and_check_exits_0() {
    let conf = Conf::new(
        "interfaces = [\"eth0\"]\nblock = [\n  \"192.0.2.1\",\n  { addr = \"192.0.2.2\", until = 2020-01-01T00:00:00Z, note = \"old\" },\n]\nallow = [{ addr = \"198.51.100.1\", until = 2020-01-01T01:00:00+01:00 }]\n",
    );
    let r = assert_warned(
        &conf,
        &[
            (4, 3, "\"192.0.2.2\" expired at 2020-01-01T00:00:00Z: it is not enforced; remove the entry"),
            (6, 10, "\"198.51.100.1\" expired at 2020-01-01T00:00:00Z: it is not enforced; remove the entry"),
        ],
    );
    assert!(r.stdout.contains(" 2 entries "), "the file's entries, expired or not: {r:?}");
}

/// A fragment file in `icmpguard.d` beside the configuration, 0644.
fn add_fragment(conf: &Conf, name: &str, text: &str) -> PathBuf {
    let dir = conf.dir().join("icmpguard.d");
    if !dir.exists() {
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn check_fragment(path: &Path) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("--fragment").arg(path);
    run_cmd(cmd)
}

const FEED: &str = "# the threat feed\nblock = [\n  \"192.0.2.20\",\n  { addr = \"203.0.113.7\", until = 2099-12-24T00:00:00Z, note = \"feed\" },\n  { addr = \"2001:db8::/32\", note = \"feed\" },\n]\nallow = [\"198.51.100.0/24\"]\n";

#[test]
fn check_lists_the_fragments_it_read_in_name_order_and_ignores_other_files() {
    let conf = Conf::new(VALID);
    let b = add_fragment(&conf, "20-feed.toml", FEED);
    let a = add_fragment(&conf, "10-incident.toml", "block = [{ addr = \"192.0.2.10\", note = \"dup\" }]\n");
    // Not fragments, and not valid either: never read.
    for name in [
        ".hidden.toml",
        ".20-feed.toml.swp",
        "20-feed.toml~",
        "20-feed.toml.dpkg-new",
        "20-feed.toml.dpkg-old",
        "notes.txt",
        "README",
    ] {
        add_fragment(&conf, name, "interfaces = \"not a fragment\n");
    }
    let r = assert_warned(&conf, &[]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{}: valid: 1 interface(s), 6 entries (4 IPv4, 2 IPv6; 3 prefixes), 1 allowed",
            conf.p()
        )),
        "{r:?}"
    );
    assert_eq!(lines[1], format!("{}: fragments: {}, {}", conf.p(), a.display(), b.display()), "{r:?}");
}

#[test]
fn an_invalid_fragment_fails_check_at_the_fragments_own_position() {
    let conf = Conf::new(VALID);
    add_fragment(&conf, "a.toml", FEED);
    let bad = add_fragment(
        &conf,
        "b.toml",
        "interfaces = [\"eth1\"]\nblock = [{ addr = \"192.0.2.300\", note = \"x\" }]\n[syslog]\nfacility = \"daemon\"\n",
    );
    let r = check(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    let b = bad.display();
    let main_only =
        |k: &str| format!("`{k}` belongs in the main configuration file: a fragment holds only `block` and `allow`");
    let want = [
        format!("{b}:1:1: {}", main_only("interfaces")),
        "    interfaces = [\"eth1\"]".to_string(),
        "    ^~~~~~~~~~".to_string(),
        format!("{b}:2:19: {NOT_AN_ADDRESS} (examples: \"192.0.2.10\", \"198.51.100.0/24\", \"2001:db8::/32\")"),
        "    block = [{ addr = \"192.0.2.300\", note = \"x\" }]".to_string(),
        "                      ^~~~~~~~~~~~~".to_string(),
        format!("{b}:3:2: {}", main_only("syslog")),
        "    [syslog]".to_string(),
        "     ^~~~~~".to_string(),
    ];
    assert_eq!(r.stderr.lines().collect::<Vec<_>>(), want, "{r:?}");
}

#[test]
fn check_fragment_validates_one_fragment_alone() {
    let conf = Conf::new(VALID);
    let good = add_fragment(&conf, "feed.toml", FEED);
    let r = check_fragment(&good);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
    assert_eq!(
        r.stdout,
        format!("{}: valid fragment: 3 blocked, 1 allowed (1 with an expiry, 2 with a note)\n", good.display())
    );
    // Any name: Ansible's `validate` checks a temporary copy.
    let copy = conf.dir().join("tmpfeed99");
    fs::copy(&good, &copy).unwrap();
    let r = check_fragment(&copy);
    assert_eq!(r.code, Some(0), "{r:?}");
    // An expired entry: a warning, exit 0.
    let old =
        add_fragment(&conf, "old.toml", "block = [\n  { addr = \"192.0.2.2\", until = 2020-01-01T00:00:00Z },\n]\n");
    let r = check_fragment(&old);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "icmpguard: warning: {}:2:3: \"192.0.2.2\" expired at 2020-01-01T00:00:00Z: it is not enforced; remove the entry\n",
            old.display()
        )
    );
    assert!(r.stdout.ends_with("valid fragment: 1 blocked, 0 allowed (1 with an expiry, 0 with a note)\n"), "{r:?}");
    // Invalid: exit 1, its own positions; the main file is not read.
    let bad = add_fragment(
        &conf,
        "bad.toml",
        "block = [\n  \"192.0.2.1\",\n  { addr = \"192.0.2.2\", until = 2026-12-24T00:00:00 },\n]\nicmp = \"all\"\n",
    );
    fs::write(&conf.path, "not = [ toml").unwrap();
    let r = check_fragment(&bad);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 6, "{r:?}");
    assert_eq!(lines[0], format!("{}:3:33: {LOCAL}", bad.display()), "{r:?}");
    assert_eq!(
        lines[3],
        format!(
            "{}:5:1: `icmp` belongs in the main configuration file: a fragment holds only `block` and `allow`",
            bad.display()
        ),
        "{r:?}"
    );
    // A main configuration file is not a fragment.
    let r = check_fragment(&conf.path);
    assert_eq!(r.code, Some(1), "{r:?}");
    let r = check_fragment(&conf.dir().join("missing.toml"));
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("missing.toml"), "{r:?}");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn check_only_warns_about_a_group_writable_fragment_or_fragment_directory_but_run_refuses_them() {
    require_root();
    let conf = root_conf();
    let frag = add_fragment(&conf, "feed.toml", FEED);
    let dir = conf.dir().join("icmpguard.d");
    for (path, mode) in [(&frag, 0o664), (&dir, 0o775)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        let r = check(&conf.path);
        assert_eq!(r.code, Some(0), "{r:?}");
        let want = format!(
            "icmpguard: warning: {}: is group- or world-writable (mode {mode:04o}); run `chmod go-w` on it; `icmpguard run` would refuse it",
            path.display()
        );
        // The directory's warning comes once from listing it and again
        // from reading each fragment in it (a repeat, not another problem).
        assert!(!r.stderr.is_empty() && r.stderr.lines().all(|l| l == want), "{r:?}");
        assert!(r.stdout.contains(&format!("fragments: {}", frag.display())), "{r:?}");
        let r = check_fragment(&frag);
        assert_eq!(r.code, Some(0), "{r:?}");
        assert!(r.stderr.contains("chmod go-w"), "{r:?}");
        let r = run_daemon(&conf.path);
        assert_eq!(r.code, Some(1), "{r:?}");
        assert!(r.stderr.contains("refusing"), "{r:?}");
        assert!(r.stderr.contains(&path.display().to_string()), "{r:?}");
        assert!(!conf.dir().join("pins").exists(), "run went on: {r:?}");
        fs::set_permissions(path, fs::Permissions::from_mode(if path == &dir { 0o755 } else { 0o644 })).unwrap();
    }
}
