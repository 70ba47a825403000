//! What the fuzz targets check, shared with tests/fuzz_regressions.rs
//! (which replays the seeds and every crash found through the same code on
//! the stable toolchain, without libFuzzer).
//!
//! Beyond "no panic, no hang": every property below is something a user or
//! the daemon relies on.
#![allow(dead_code)] // each target uses one half

use std::net::IpAddr;
use std::path::Path;

use icmpguard::addr::Prefix;
use icmpguard::config::{Config, Fragment, Interface, List, Metas, NOTE_MAX};
use icmpguard::diagnostic::Diagnostic;
use icmpguard::events::{Event, Reason, Verdict};

const PATH: &str = "fuzz.toml";

/// `Config::parse` on any text; on bytes that are not UTF-8, the diagnostic
/// `Config::load` makes of them.
///
/// - A valid file: the blocklist and the interfaces are sorted without
///   duplicates, every entry prints in a form that parses back to itself,
///   and every interface name is valid.
/// - An invalid file: at least one diagnostic, each pointing into the text
///   (its line is the file's line, its column inside it), rendered as
///   `fuzz.toml:LINE:COL: message` on one line, the line, and a caret.
/// - A file accepted is valid TOML (the `toml` crate's own parser agrees).
/// - The fast path for `block` (src/config/block.rs, which reads the list
///   from the lexer) reads a file exactly as the general path does: the
///   same file with the key written `"block"` (which the fast path leaves
///   to the general walk) gives the same configuration or the same diagnostics.
/// - Entry tables: every entry with an expiry or a note is in its list,
///   and every note kept is at most NOTE_MAX characters without a control
///   character (what status and the event lines show).
/// - The same text as a fragment (`Config::parse_fragment`, see
///   [`fragment`]).
pub fn config(data: &[u8]) {
    let text = match std::str::from_utf8(data) {
        Ok(t) => t,
        Err(e) => {
            // As src/config/ does for a file that is not UTF-8.
            let lossy = String::from_utf8_lossy(data);
            let at = e.valid_up_to();
            let d = Diagnostic::at(Path::new(PATH), &lossy, at..at + 1, "invalid UTF-8");
            diagnostic_points_into(&d, &lossy);
            return;
        }
    };
    fragment(text);
    let parsed = Config::parse(Path::new(PATH), text);
    if parsed.is_ok() {
        if let Err(e) = text.parse::<toml::Table>() {
            panic!("accepted a file that is not TOML: {}", e.message());
        }
    }
    same_as_the_general_path(text, &parsed);
    match parsed {
        Ok(c) => {
            assert!(c.block.windows(2).all(|w| w[0] < w[1]), "block not sorted or has duplicates: {:?}", c.block);
            for p in &c.block {
                let shown = p.to_string();
                let again: Prefix = shown.parse().unwrap_or_else(|e| panic!("{p:?} prints as {shown:?}: {e}"));
                assert_eq!(again, *p, "{shown:?} does not parse back to itself");
                assert!(p.contains(p.addr()), "{p} does not contain its own address");
            }
            assert!(c.interfaces.windows(2).all(|w| w[0] < w[1]), "interfaces not sorted: {:?}", c.interfaces);
            for i in &c.interfaces {
                assert_eq!(Interface::parse(i.name()).as_ref(), Ok(i), "interface {i} does not parse back");
            }
            assert!(c.pin_dir.is_absolute() && c.syslog.socket.is_absolute());
            metas_are_of_listed_entries(&c.metas, &c.block, &c.allow);
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "refused without a diagnostic");
            for d in &diagnostics {
                diagnostic_points_into(d, text);
            }
        }
    }
}

/// `Config::parse_fragment` on the same text.
///
/// - A valid fragment: both lists sorted without duplicates, its entry
///   tables' metadata as in [`config`], valid TOML; and it reads as the
///   main file reads the same lists: with `interfaces = []` put before it,
///   the main file has the same entries and metadata (or, when the fragment
///   has no `block`, is refused for that alone).
/// - An invalid fragment: diagnostics that point into the text, as the
///   main file's do.
pub fn fragment(text: &str) {
    match Config::parse_fragment(Path::new(PATH), text) {
        Ok((f, warnings)) => {
            if let Err(e) = text.parse::<toml::Table>() {
                panic!("accepted a fragment that is not TOML: {}", e.message());
            }
            for d in &warnings {
                diagnostic_points_into(d, text);
            }
            assert_eq!(f.path, Path::new(PATH));
            assert!(f.block.windows(2).all(|w| w[0] < w[1]), "block not sorted or has duplicates: {:?}", f.block);
            assert!(f.allow.windows(2).all(|w| w[0] < w[1]), "allow not sorted or has duplicates: {:?}", f.allow);
            metas_are_of_listed_entries(&f.metas, &f.block, &f.allow);
            read_as_the_main_file(text, &f);
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "fragment refused without a diagnostic");
            for d in &diagnostics {
                diagnostic_points_into(d, text);
            }
        }
    }
}

/// A fragment's lists read by the main file's schema.
fn read_as_the_main_file(text: &str, f: &Fragment) {
    // A byte order mark is allowed at the start of a file only.
    if text.starts_with('\u{feff}') {
        return;
    }
    let main = format!("interfaces = []\n{text}");
    match Config::parse(Path::new(PATH), &main) {
        Ok(c) => {
            assert_eq!((&c.block, &c.allow), (&f.block, &f.allow), "the main file reads other entries");
            assert_eq!(c.metas, f.metas, "the main file reads other metadata");
        }
        Err(diagnostics) => {
            let missing = |d: &Diagnostic| d.message.starts_with("missing key `block`");
            assert!(
                f.block.is_empty() && diagnostics.iter().all(missing),
                "a valid fragment is an invalid main file: {:?}",
                diagnostics.iter().map(Diagnostic::headline).collect::<Vec<_>>()
            );
        }
    }
}

fn metas_are_of_listed_entries(metas: &Metas, block: &[Prefix], allow: &[Prefix]) {
    for ((list, p), m) in metas {
        let listed = match list {
            List::Block => block,
            List::Allow => allow,
        };
        assert!(listed.binary_search(p).is_ok(), "metadata of {p}, which is not in {}", list.name());
        assert!(m.until.is_some() || m.note.is_some(), "empty metadata kept for {p}");
        if let Some(note) = &m.note {
            assert!(note.chars().count() <= NOTE_MAX, "a note of {} characters", note.chars().count());
            assert!(!note.contains(|c: char| c.is_control()), "a note with a control character: {note:?}");
        }
    }
}

/// Where the first top-level `block = ` key starts, written bare.
fn bare_block_key(text: &str) -> Option<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let rest = &line[indent..];
        if let Some(after) = rest.strip_prefix("block") {
            if after.trim_start_matches([' ', '\t']).starts_with('=') {
                return Some(at + indent);
            }
        }
        at += line.len();
    }
    None
}

fn same_as_the_general_path(text: &str, parsed: &Result<Config, Vec<Diagnostic>>) {
    let Some(key) = bare_block_key(text) else { return };
    let quoted = format!("{}\"block\"{}", &text[..key], &text[key + "block".len()..]);
    // Only where quoting changes nothing (the line may be inside a string).
    match (text.parse::<toml::Table>(), quoted.parse::<toml::Table>()) {
        (Ok(a), Ok(b)) if a == b => {}
        _ => return,
    }
    let general = Config::parse(Path::new(PATH), &quoted);
    match (parsed, &general) {
        (Ok(fast), Ok(general)) => {
            // Where the fast path found the list (which the restart record
            // keeps): between the brackets of the array it read.
            let mut fast = fast.clone();
            if let Some(span) = fast.block_span.take() {
                let (open, close) = (text.as_bytes().get(span.start.wrapping_sub(1)), text.as_bytes().get(span.end));
                assert_eq!((open, close), (Some(&b'['), Some(&b']')), "the block list is not at {span:?}");
            }
            assert_eq!(&fast, general, "the fast path reads another configuration");
        }
        (Err(fast), Err(general)) => {
            // Positions on the key's line past the key moved by the quotes.
            let key_line = text[..key].matches('\n').count() + 1;
            let key_col = text[..key].rsplit('\n').next().unwrap_or_default().chars().count() + 1;
            let unquoted = |d: &Diagnostic| {
                let col = if d.line == key_line && d.col > key_col { d.col - 2 } else { d.col };
                (d.line, col, d.message.clone())
            };
            let fast: Vec<_> = fast.iter().map(|d| (d.line, d.col, d.message.clone())).collect();
            let general: Vec<_> = general.iter().map(unquoted).collect();
            assert_eq!(fast, general, "the fast path reports other problems");
        }
        (fast, general) => panic!(
            "the fast path says {}, the general path {}",
            if fast.is_ok() { "valid" } else { "invalid" },
            if general.is_ok() { "valid" } else { "invalid" }
        ),
    }
}

fn diagnostic_points_into(d: &Diagnostic, text: &str) {
    assert!(d.line >= 1 && d.col >= 1 && d.width >= 1, "{d:?}");
    let line = text.split('\n').nth(d.line - 1).unwrap_or_else(|| panic!("line {} is not in the text: {d:?}", d.line));
    let line_text = line.trim_end_matches('\r');
    if line_text.chars().count() <= icmpguard::diagnostic::WINDOW
        && !line_text.contains(|c: char| c.is_control() && c != '\t')
    {
        assert_eq!(d.excerpt, line_text, "the quoted line is not line {}", d.line);
    } else {
        // A window of the line, escaped: never the whole of a huge line.
        assert!(d.excerpt.chars().count() <= icmpguard::diagnostic::WINDOW + 2, "{:?}", d.excerpt);
        assert!(!d.excerpt.contains(|c: char| c.is_control() && c != '\t'), "{:?}", d.excerpt);
    }
    assert!(d.col <= line.chars().count() + 1, "column {} past the end of line {:?}", d.col, line);
    // One line per error: a message quoting the file's text must not carry
    // its line breaks (`check` output, and syslog lines on a reload).
    let headline = d.headline();
    assert!(!headline.contains(['\n', '\r']), "the headline spans lines: {headline:?}");
    let rendered = d.to_string();
    let prefix = format!("{PATH}:{}:{}: ", d.line, d.col);
    assert!(rendered.starts_with(&prefix), "{rendered:?}");
    // Headline, the quoted window, the caret line: control characters
    // escaped, so exactly three lines whatever the file holds.
    assert_eq!(rendered.split('\n').count(), 3, "{rendered:?}");
    let caret = rendered.rsplit('\n').next().unwrap_or_default();
    assert!(caret.trim_start().starts_with('^'), "no caret last: {rendered:?}");
}

/// Size of a ring buffer record (struct ig_event).
pub const EVENT_SIZE: usize = std::mem::size_of::<icmpguard::skel::types::ig_event>();

/// `Event::decode` on any bytes, then `Event::line` and
/// `Event::line_noted`.
///
/// The first 56 bytes are decoded as a record, what follows is the
/// interface name and the note (lossy UTF-8). A record of any other size
/// is refused. With a note, the line is the same line and ` note="..."`
/// last, still one line, and the note un-escaped is the note given.
/// A decoded event gives one line whose fields say what the event says:
/// verdict, direction, type and code, addresses that parse back, and a
/// rule that contains the address it matched.
pub fn event(data: &[u8]) {
    if data.len() != EVENT_SIZE {
        assert!(Event::decode(data).is_none(), "a record of {} bytes was decoded", data.len());
    }
    let Some(record) = data.get(..EVENT_SIZE) else { return };
    let iface = String::from_utf8_lossy(&data[EVENT_SIZE..]);
    let Some(ev) = Event::decode(record) else { return };
    let _ = ev.line(&iface);

    assert_eq!(ev.src.is_ipv4(), ev.dst.is_ipv4(), "one family per event: {ev:?}");
    let line = ev.line("eth0");
    assert!(!line.contains('\n'), "{line:?}");
    let field = |key: &str| -> &str {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
    };
    let verdict = match ev.verdict {
        Verdict::Drop => "drop",
        Verdict::Pass => "pass",
        Verdict::WouldDrop => "would-drop",
    };
    assert_eq!(field("verdict"), verdict, "{line}");
    let reason = match ev.reason {
        Reason::None => "-",
        Reason::Block => "block",
        Reason::Limit => "limit",
        Reason::Allow => "allow",
    };
    assert_eq!(field("reason"), reason, "{line}");
    // Only a block or allow entry is named; a limit names none.
    assert!(ev.rule.is_none() || matches!(ev.reason, Reason::Block | Reason::Allow), "{line}");
    assert_eq!(field("if"), "eth0");
    assert_eq!(field("proto"), if ev.src.is_ipv6() { "icmpv6" } else { "icmp" }, "{line}");
    assert_eq!(field("code"), ev.icmp_code.to_string(), "{line}");
    assert!(!field("type").is_empty(), "{line}");
    assert_eq!(field("src").parse::<IpAddr>().ok(), Some(ev.src), "{line}");
    assert_eq!(field("dst").parse::<IpAddr>().ok(), Some(ev.dst), "{line}");
    match ev.rule {
        None => assert_eq!(field("rule"), "-", "{line}"),
        Some(rule) => {
            assert_eq!(field("rule").parse::<Prefix>().ok(), Some(rule), "{line}");
            assert!(rule.contains(ev.src) || rule.contains(ev.dst), "rule {rule} contains neither address of {line}");
        }
    }

    noted(&ev, &line, &iface);
}

/// `line_noted` with `note`: ` note="..."` after `line`, one line, and the
/// note given back by un-escaping.
fn noted(ev: &Event, line: &str, note: &str) {
    assert_eq!(ev.line_noted("eth0", None), line, "a line without a note is the plain line");
    let noted = ev.line_noted("eth0", Some(note));
    assert!(!noted.contains(|c: char| c.is_control()), "the noted line is not one line: {noted:?}");
    let quoted = noted
        .strip_prefix(line)
        .and_then(|rest| rest.strip_prefix(" note="))
        .unwrap_or_else(|| panic!("{noted:?} is not {line:?} and a note"));
    assert!(quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'), "not quoted: {quoted:?}");
    assert_eq!(unquote(&quoted[1..quoted.len() - 1]), note, "{quoted}");
}

/// The inverse of `events::quote` inside the quotes: `\"`, `\\` and
/// `\u{HEX}`; a bare quote or any other escape is a failure.
fn unquote(inner: &str) -> String {
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => panic!("a bare quote inside the note: {inner:?}"),
            '\\' => match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('u') => {
                    assert_eq!(chars.next(), Some('{'), "{inner:?}");
                    let mut hex = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(h) => hex.push(h),
                            None => panic!("an unterminated \\u{{ in {inner:?}"),
                        }
                    }
                    let code = u32::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("\\u{{{hex}}}: {e}"));
                    out.push(char::from_u32(code).unwrap_or_else(|| panic!("\\u{{{hex}}} is no character")));
                }
                other => panic!("an escape \\{other:?} in {inner:?}"),
            },
            c => out.push(c),
        }
    }
    out
}
