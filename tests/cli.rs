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
