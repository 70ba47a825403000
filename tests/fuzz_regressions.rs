//! What the fuzz targets (fuzz/) were seeded with and what they found,
//! replayed through the same checks (fuzz/src/checks.rs) on every
//! `cargo test`: stable toolchain, no libFuzzer, no root.
//!
//! A crash found by `fuzz/run.sh` goes into fuzz/regressions/TARGET/ (the
//! file libFuzzer wrote to fuzz/artifacts/TARGET/) and, when it shows a
//! promise broken, into a named test below.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use icmpguard::config::Config;
use icmpguard::diagnostic::Diagnostic;

/// Every file under fuzz/DIR/TARGET.
fn inputs(dir: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir).join(target);
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let path = e.expect("reading a fuzz input directory").path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((path, bytes));
    }
    out.sort();
    out
}

/// The check of each fuzz target (fuzz/fuzz_targets/).
fn check_of(target: &str) -> fn(&[u8]) {
    match target {
        "config_parse" => checks::config,
        "event_decode" => checks::event,
        other => panic!("fuzz/*/{other}: no such fuzz target; add its check here"),
    }
}

fn replay(dir: &str, target: &str) {
    let inputs = inputs(dir, target);
    assert!(!inputs.is_empty(), "fuzz/{dir}/{target} is empty");
    let check = check_of(target);
    let failed: Vec<String> = inputs
        .into_iter()
        .filter(|(_, bytes)| std::panic::catch_unwind(|| check(bytes)).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "failing the {target} checks: {failed:#?}");
}

/// The targets that have a directory under fuzz/DIR.
fn targets(dir: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("reading fuzz/").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_seeds_pass_the_fuzz_checks() {
    assert_eq!(targets("seeds"), ["config_parse", "event_decode"], "a fuzz target without seeds, or seeds of none");
    for target in targets("seeds") {
        replay("seeds", &target);
    }
}

/// Every crash found, as libFuzzer wrote it (renamed after what it shows).
/// A target gets its directory with its first crash (none for event_decode
/// so far); whatever directory is there is replayed.
#[test]
fn the_crashes_found_stay_fixed() {
    let found = targets("regressions");
    assert!(found.iter().any(|t| t == "config_parse"), "the config_parse crashes went missing: {found:?}");
    for target in found {
        replay("regressions", &target);
    }
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    Config::parse(Path::new("fuzz.toml"), text).expect_err("accepted")
}

/// Found by config_parse in its first seconds: a message that quotes the
/// file's text (an address, an interface name, pin_dir, the syslog socket,
/// a TOML value serde refused) quoted it raw, so a `\n` or `\r` escape in
/// a TOML string split the `FILE:LINE:COL: message` headline over lines
/// (and a `\u001b` put a terminal escape in `check`'s output and in the
/// syslog line of a refused reload). Fixed by quoting with `{:?}` and by
/// escaping control characters in toml's messages (issue 5 report: the
/// diff to src/addr.rs and src/config/).
#[test]
fn config_errors_quoting_the_file_stay_on_one_line() {
    let crash = "interfaces = [\"\u{e9}\"]\nblock = [\"\u{e9}\", \"\\u0031\\u0039\\u0032.0.2.1\"]\nmode = 'native'\npin_dir = \"\"\"]\nbl/fs/bpf/x\"\"\"\n";
    checks::config(crash.as_bytes());
    for text in [
        "interfaces = [\"eth0\\n\"]\nblock = []\n",
        "interfaces = []\nblock = [\"\\u001b[2J\"]\n",
        "interfaces = []\nblock = [\"192.0.2.1\\nicmpguard: forged line\"]\n",
        "interfaces = []\nblock = [\"192.0.2.1/24\\r\"]\n",
        "interfaces = []\nblock = []\npin_dir = \"relative\\npath\"\n",
        "interfaces = []\nblock = []\n[syslog]\nsocket = \"dev\\rlog\"\n",
        "interfaces = []\nblock = []\nmode = \"gen\\ric\"\n",
    ] {
        for d in diagnostics(text) {
            let headline = d.headline();
            assert!(!headline.contains(['\n', '\r', '\u{1b}']), "{text:?} gives {headline:?}");
        }
        checks::config(text.as_bytes());
    }
}

/// Found by reading src/config/block.rs, and made a property of the
/// config_parse target ("a file accepted is valid TOML"): the fast path for `block` took the lexer's token
/// of an unterminated string for a string and cut its last character as
/// if it were the quote. `block = ["192.0.2.10` + newline + `]` was
/// accepted, blocking 192.0.2.1 instead of refusing the file; a control
/// character inside the quotes was accepted the same way. Fixed by sending
/// anything but a closed string of visible characters to the decoder. The
/// same fast path skipped comments and line ends between the brackets
/// without the checks serde would have made: a control character in a
/// comment or a lone carriage return there (found by config_parse) were
/// accepted, though no TOML parser would. Fixed by leaving those to the
/// general path (issue 5 report: the diff to src/config/block.rs).
#[test]
fn what_toml_forbids_in_the_block_list_is_refused() {
    for text in [
        "interfaces = []\nblock = [\"192.0.2.10\n]\n",
        "interfaces = []\nblock = [ # a comment with a bell \u{7}\n\"192.0.2.1\"]\n",
        "interfaces = []\nblock = [\r\"192.0.2.1\"]\n",
        "interfaces = []\nblock = ['192.0.2.10\n]\n",
        "interfaces = []\nblock = [\n  \"2001:db8::1\n]\n",
        "interfaces = []\nblock = [\"192.0.2.1\u{7}\"]\n",
        "interfaces = []\nblock = ['198.51.100.0/24\u{7f}']\n",
    ] {
        // Refused, with what TOML says (not an address read from it).
        let d = diagnostics(text);
        assert!(!d[0].message.contains("address"), "{text:?}: {}", d[0].headline());
        checks::config(text.as_bytes());
    }
}

/// The quoting keeps ordinary messages as they were.
#[test]
fn config_errors_quote_plain_text_as_before() {
    let d = diagnostics("interfaces = []\nblock = [\"192.0.2.1/24\"]\n");
    assert_eq!(d[0].headline(), "fuzz.toml:2:10: \"192.0.2.1/24\" has host bits set; did you mean \"192.0.2.0/24\"?");
    let d = diagnostics("interfaces = [\"eth0:1\"]\nblock = []\n");
    assert!(d[0].headline().starts_with("fuzz.toml:1:15: \"eth0:1\" is not a valid interface name"), "{d:?}");
}
