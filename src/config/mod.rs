//! The configuration file: schema, secure load, typed values.
//!
//! `check`, `run` and every reload go through [`Config::load`]; they differ
//! only in whether unsafe ownership or permissions are fatal
//! ([`Strictness`]). Problems come back as [`Diagnostic`]s with line and
//! column, as many as can be found in one pass.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

mod block;
mod secure;

use crate::addr::Prefix;
use crate::diagnostic::Diagnostic;
use crate::error::Error;
pub use crate::plan::{AttachMode, IcmpPolicy, LogMode};
use crate::plan::{Desired, Settings};

pub const DEFAULT_PATH: &str = "/etc/icmpguard.toml";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/icmpguard";
pub const DEFAULT_SOCKET: &str = "/dev/log";
pub const DEFAULT_RATE_LIMIT: u32 = 100;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// The syslog facilities of RFC 3164 that a daemon may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Mail,
    #[default]
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The numeric code of RFC 3164 section 4.1.1.
    pub fn code(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::Authpriv => 10,
            Facility::Ftp => 11,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// A network interface name, checked the way the kernel checks it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interface(String);

impl Interface {
    pub fn parse(name: &str) -> Result<Interface, String> {
        if name.is_empty() {
            return Err("empty interface name".into());
        }
        if name.len() > IFNAME_MAX {
            return Err(format!("interface name \"{name}\" is longer than {IFNAME_MAX} bytes, the kernel's limit"));
        }
        if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            return Err(format!("\"{name}\" is not a valid interface name (no '/', ':' or whitespace; see `ip link`)"));
        }
        Ok(Interface(name.to_string()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Events {
    pub log: LogMode,
    /// Event lines per second at most; 0 means no limit.
    pub rate_limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syslog {
    pub facility: Facility,
    pub socket: PathBuf,
}

/// A loaded, valid configuration. Nothing here is a string that still needs
/// checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    /// Sorted, without duplicates.
    pub interfaces: Vec<Interface>,
    /// Sorted, without duplicates.
    pub block: Vec<Prefix>,
    pub icmp: IcmpPolicy,
    pub mode: AttachMode,
    pub pin_dir: PathBuf,
    pub events: Events,
    pub syslog: Syslog,
}

/// Whether unsafe ownership or permissions of the file refuse it (`run`,
/// reload) or only warn (`check`, which Ansible runs on a temporary copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    Enforce,
    Warn,
}

/// A valid configuration and what is worth telling the operator about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// What the kernel must enforce for this file.
    pub fn desired(&self) -> Desired<'_> {
        Desired {
            rules: &self.block,
            settings: Settings { policy: self.icmp, log: self.events.log, rate_limit: self.events.rate_limit },
            interfaces: self.interfaces.iter().map(|i| i.name().to_string()).collect(),
            mode: self.mode,
        }
    }

    /// Reads, checks and parses the file at `path`.
    pub fn load(path: &Path, strictness: Strictness) -> Result<Loaded, Error> {
        let mut warnings = Vec::new();
        let text = secure::read_secure(path, strictness, &mut warnings)?;
        let config = Config::parse(path, &text).map_err(|diagnostics| Error::Config { diagnostics })?;
        warnings.extend(config.advice());
        Ok(Loaded { config, warnings })
    }

    /// Parses the text of a configuration file; `path` only names it in
    /// diagnostics, one per problem found.
    ///
    /// serde stops at the first key it cannot take (an unknown key, a wrong
    /// type, a value out of range); so that the operator sees every such
    /// problem at once, the entry it names is blanked out (with spaces, so
    /// that every other position stays where it was) and the file read
    /// again, up to [`MAX_STRUCTURAL`] times. A file with such a problem is
    /// never accepted, whatever the blanked text would have given.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
        let mut found: Vec<Diagnostic> = Vec::new();
        let mut blanked: Option<String> = None;
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_STRUCTURAL {
            let now = blanked.as_deref().unwrap_or(text);
            match Config::parse_once(path, now, &removed) {
                Ok(config) if found.is_empty() => return Ok(config),
                Ok(_) => break,
                Err(Failure::Structural(span, diagnostic)) => {
                    found.push(*diagnostic);
                    if text.len() > STRUCTURAL_TEXT_MAX {
                        break;
                    }
                    match blank_entry(now, span) {
                        Some((next, key)) => {
                            blanked = Some(next);
                            removed.push(key);
                        }
                        None => break,
                    }
                }
                Err(Failure::Other(diagnostics)) => {
                    found.extend(diagnostics);
                    break;
                }
            }
        }
        // Lines and columns as the file has them: a blanked character of
        // several bytes became as many spaces.
        let mut found: Vec<Diagnostic> =
            found.into_iter().map(|d| Diagnostic::at(path, text, d.span.clone(), d.message)).collect();
        found.sort_by_key(|d| (d.line, d.col));
        found.dedup();
        Err(found)
    }

    /// One reading of `text`; the top-level keys in `blanked` were taken
    /// out after an error of their own, and are not missing.
    fn parse_once(path: &Path, text: &str, blanked: &[String]) -> Result<Config, Failure> {
        let blanked = |key: &str| blanked.iter().any(|k| k == key);
        // A large `block` list is read straight from the lexer; serde sees
        // the rest of the file, without the list's content. Spans serde
        // reports past the cut are moved back to where they are in `text`.
        let fast = block::scan(text);
        let cut = fast.as_ref().map(|s| s.inner.clone());
        let rest = cut.clone().map(|c| [&text[..c.start], &text[c.end..]].concat());
        let diag = |span: Range<usize>, msg: String| {
            let span = match &cut {
                Some(c) if span.start >= c.start => span.start + c.len()..span.end + c.len(),
                _ => span,
            };
            Diagnostic::at(path, text, span, msg)
        };
        let mut raw: RawConfig = match toml::from_str(rest.as_deref().unwrap_or(text)) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let d = diag(span.clone(), tidy_toml_message(e.message()));
                // Where serde stopped, in `text`'s coordinates.
                let start = match &cut {
                    Some(c) if span.start >= c.start => span.start + c.len(),
                    _ => span.start,
                };
                return Err(Failure::Structural(start, Box::new(d)));
            }
        };
        let mut errors = Vec::new();
        if let Some(s) = fast {
            // Already in `text`'s coordinates.
            for (span, msg) in &s.block.errors {
                errors.push(Diagnostic::at(path, text, span.clone(), msg.clone()));
            }
            raw.block = Some(RawBlock { prefixes: s.block.prefixes, errors: Vec::new() });
        }

        let end = text.len()..text.len();
        if blanked("interfaces") {
            raw.interfaces.get_or_insert_with(Vec::new);
        }
        if blanked("block") {
            raw.block.get_or_insert(RawBlock { prefixes: Vec::new(), errors: Vec::new() });
        }
        let Some(raw_interfaces) = raw.interfaces else {
            return Err(Failure::other(Diagnostic::at(
                path,
                text,
                end.clone(),
                "missing key `interfaces`; write `interfaces = [\"eth0\"]`, or `interfaces = []` to guard none"
                    .to_string(),
            )));
        };
        let Some(raw_block) = raw.block else {
            return Err(Failure::other(Diagnostic::at(
                path,
                text,
                end,
                "missing key `block`; write `block = [\"192.0.2.10\"]`, or `block = []` for an empty blocklist (a missing key is never taken as empty, so that a truncated file cannot unblock everything)"
                    .to_string(),
            )));
        };

        let mut interfaces = BTreeSet::new();
        for name in raw_interfaces {
            match Interface::parse(name.get_ref()) {
                Ok(i) => {
                    interfaces.insert(i);
                }
                Err(msg) => errors.push(diag(name.span(), msg)),
            }
        }

        for (span, msg) in raw_block.errors {
            errors.push(diag(span, msg));
        }
        let mut block = raw_block.prefixes;
        block.sort_unstable();
        block.dedup();

        let pin_dir = match raw.pin_dir {
            None => PathBuf::from(DEFAULT_PIN_DIR),
            Some(p) => match check_pin_dir(p.get_ref()) {
                Ok(dir) => dir,
                Err(msg) => {
                    errors.push(diag(p.span(), msg));
                    PathBuf::new()
                }
            },
        };
        let events = raw.events.unwrap_or_default();
        let raw_syslog = raw.syslog.unwrap_or_default();
        let socket = match raw_syslog.socket {
            None => PathBuf::from(DEFAULT_SOCKET),
            Some(s) if Path::new(s.get_ref()).is_absolute() => PathBuf::from(s.get_ref()),
            Some(s) => {
                errors.push(diag(
                    s.span(),
                    format!("syslog socket \"{}\" must be an absolute path, such as \"/dev/log\"", s.get_ref()),
                ));
                PathBuf::new()
            }
        };

        if !errors.is_empty() {
            return Err(Failure::Other(errors));
        }
        Ok(Config {
            path: path.to_path_buf(),
            interfaces: interfaces.into_iter().collect(),
            block,
            icmp: raw.icmp.unwrap_or_default(),
            mode: raw.mode.unwrap_or_default(),
            pin_dir,
            events: Events {
                log: events.log.unwrap_or_default(),
                rate_limit: events.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT),
            },
            syslog: Syslog { facility: raw_syslog.facility.unwrap_or_default(), socket },
        })
    }

    /// Things that are valid but probably not what the operator wants.
    fn advice(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.interfaces.is_empty() {
            out.push(format!(
                "{}: no interface is guarded: nothing is filtered until `interfaces` names one",
                self.path.display()
            ));
        }
        for p in &self.block {
            if p.prefix_len() == 0 {
                out.push(format!(
                    "{}: \"{p}\" blocks ICMP echo for every {} address",
                    self.path.display(),
                    if p.is_v4() { "IPv4" } else { "IPv6" }
                ));
            }
        }
        out
    }
}

/// How many problems serde reports one by one before `check` gives up on
/// a file (a file that is not a configuration at all).
const MAX_STRUCTURAL: usize = 32;

/// Past this size (a blocklist of tens of thousands of entries), only the
/// first such problem is reported: each further one costs a full reading.
const STRUCTURAL_TEXT_MAX: usize = 1 << 20;

/// Why one reading of a file failed.
enum Failure {
    /// serde stopped at the entry around this byte of the text.
    Structural(usize, Box<Diagnostic>),
    /// Everything else found; nothing more to read.
    Other(Vec<Diagnostic>),
}

impl Failure {
    fn other(d: Diagnostic) -> Failure {
        Failure::Other(vec![d])
    }
}

/// `text` with the innermost entry (key, value, and for a table everything
/// in it) that holds byte `at` replaced by spaces, line ends kept; and the
/// entry's top-level key. `None` when no entry holds it (a syntax error:
/// nothing more can be read).
fn blank_entry(text: &str, at: usize) -> Option<(String, String)> {
    use toml::de::{DeTable, DeValue};
    type Entry<'a> = (&'a toml::Spanned<toml::de::DeString<'a>>, &'a toml::Spanned<DeValue<'a>>);

    fn extent(v: &toml::Spanned<DeValue<'_>>) -> Range<usize> {
        let mut r = v.span();
        let children: Vec<Range<usize>> = match v.get_ref() {
            DeValue::Table(t) => t.iter().flat_map(|(k, v)| [k.span(), extent(v)]).collect(),
            DeValue::Array(a) => a.iter().map(extent).collect(),
            _ => Vec::new(),
        };
        for c in children {
            r.start = r.start.min(c.start);
            r.end = r.end.max(c.end);
        }
        r
    }

    /// The innermost entry of `table` whose extent holds `at`.
    fn innermost<'a>(table: &'a DeTable<'a>, at: usize) -> Option<Entry<'a>> {
        for (k, v) in table.iter() {
            let r = extent(v);
            let whole = k.span().start.min(r.start)..r.end.max(k.span().end);
            if !whole.contains(&at) {
                continue;
            }
            if let DeValue::Table(inner) = v.get_ref() {
                if let Some(e) = innermost(inner, at) {
                    return Some(e);
                }
            }
            return Some((k, v));
        }
        None
    }

    let doc = DeTable::parse(text).ok()?;
    let top = doc.get_ref().iter().find(|(k, v)| {
        let r = extent(v);
        (k.span().start.min(r.start)..r.end.max(k.span().end)).contains(&at)
    })?;
    let (k, v) = innermost(doc.get_ref(), at)?;
    let r = extent(v);
    let mut span = k.span().start.min(r.start)..r.end.max(k.span().end);
    // A table's header: its brackets go with its name.
    let bytes = text.as_bytes();
    while span.start > 0 && matches!(bytes[span.start - 1], b' ' | b'\t' | b'[') {
        span.start -= 1;
    }
    while span.end < bytes.len() && matches!(bytes[span.end], b' ' | b'\t' | b']') {
        span.end += 1;
    }
    // An entry of an inline table: its comma goes with it.
    if bytes.get(span.end) == Some(&b',') {
        span.end += 1;
    }
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if span.contains(&i) && c != '\n' && c != '\r' {
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    // Only if what is left still reads as TOML: a problem of our own
    // making is none of the operator's.
    DeTable::parse(&out).ok()?;
    Some((out, top.0.get_ref().to_string()))
}

/// toml's messages end with a newline and sometimes a lower-case sentence;
/// keep them on one line.
fn tidy_toml_message(msg: &str) -> String {
    msg.trim().replace('\n', "; ")
}

/// The `pin_dir` a file names, read leniently: for `status` and `unload`
/// when the file is otherwise invalid (they must still find the filter).
pub fn pin_dir_hint(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    check_pin_dir(table.get("pin_dir")?.as_str()?).ok()
}

fn check_pin_dir(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("pin_dir \"{text}\" must be an absolute path on a bpffs, such as \"{DEFAULT_PIN_DIR}\""));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return Err(format!("pin_dir \"{text}\" must not contain \".\" or \"..\" components"));
    }
    match path.file_name() {
        None => Err(format!("pin_dir \"{text}\" must name a directory below a bpffs mount, not \"/\"")),
        Some(name) if name.to_string_lossy().contains('.') => {
            Err(format!("pin_dir \"{text}\": bpffs does not accept '.' in names; choose a name without one"))
        }
        Some(_) => Ok(path.components().collect()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interfaces: Option<Vec<Spanned<String>>>,
    block: Option<RawBlock>,
    icmp: Option<IcmpPolicy>,
    mode: Option<AttachMode>,
    pin_dir: Option<Spanned<String>>,
    events: Option<RawEvents>,
    syslog: Option<RawSyslog>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    log: Option<LogMode>,
    rate_limit: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    facility: Option<Facility>,
    socket: Option<Spanned<String>>,
}

/// The `block` array, parsed entry by entry as it is read: no string is
/// kept, and every bad entry is remembered with its span instead of ending
/// the parse, so that `check` reports them all.
struct RawBlock {
    prefixes: Vec<Prefix>,
    errors: Vec<(Range<usize>, String)>,
}

/// One entry of `block`: a prefix, or why it is not one. Entries of the
/// wrong type are errors of their own, so that one stray number does not
/// hide the other problems of the list.
struct RawEntry(Result<Prefix, String>);

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawEntry, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or prefix as a string, such as \"192.0.2.10\" or \"198.51.100.0/24\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawEntry, E> {
                Ok(RawEntry(s.parse().map_err(|e: crate::addr::PrefixError| e.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawEntry, E> {
                Ok(wrong_type(&format!("the integer {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawEntry, E> {
                Ok(wrong_type(&format!("the integer {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawEntry, E> {
                Ok(wrong_type(&format!("the number {v}")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawEntry, E> {
                Ok(wrong_type(&format!("the boolean {v}")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEntry, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(wrong_type("an array"))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(wrong_type("a table or date"))
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

fn wrong_type(found: &str) -> RawEntry {
    RawEntry(Err(wrong_type_message(found)))
}

fn wrong_type_message(found: &str) -> String {
    format!("expected an address or prefix in quotes, such as \"192.0.2.10\", found {found}")
}

impl<'de> Deserialize<'de> for RawBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawBlock, D::Error> {
        struct BlockVisitor;
        impl<'de> Visitor<'de> for BlockVisitor {
            type Value = RawBlock;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of addresses and prefixes, such as [\"192.0.2.10\", \"198.51.100.0/24\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBlock, A::Error> {
                let mut out =
                    RawBlock { prefixes: Vec::with_capacity(seq.size_hint().unwrap_or(0)), errors: Vec::new() };
                while let Some(entry) = seq.next_element::<Spanned<RawEntry>>()? {
                    let span = entry.span();
                    match entry.into_inner().0 {
                        Ok(p) => out.prefixes.push(p),
                        Err(e) => out.errors.push((span, e)),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(BlockVisitor)
    }
}

/// A short, stable name for messages and `status`.
impl fmt::Display for IcmpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IcmpPolicy::Echo => "echo",
            IcmpPolicy::All => "all",
        })
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

#[cfg(test)]
mod tests {
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
            vec!["t.toml:3:1: unknown field `blok`, expected one of `interfaces`, `block`, `icmp`, `mode`, `pin_dir`, `events`, `syslog`"]
        );
        assert_eq!(
            errors("interfaces = []\nblock = []\n[events]\nrate = 5\n"),
            vec!["t.toml:4:1: unknown field `rate`, expected `log` or `rate_limit`"]
        );
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first_serde_meets() {
        let e = errors(
            "interfaces = 5\nblock = [\"192.0.2.1/24\"]\nicmp = \"ping\"\n[foo]\na = 1\n[events]\nrate = 5\nlog = \"x\"\n",
        );
        let at: Vec<&str> = e.iter().map(|h| h.split(": ").next().unwrap_or_default()).collect();
        assert_eq!(
            at,
            ["t.toml:1:14", "t.toml:2:10", "t.toml:3:8", "t.toml:4:2", "t.toml:7:1", "t.toml:8:7"],
            "{e:#?}"
        );
        assert!(e[3].contains("unknown field `foo`"), "{e:#?}");
        // A key taken out after its own error is not also missing; one
        // that is absent is.
        let e = errors("interfaces = []\nblok = []\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[1].contains("missing key `block`"), "{e:#?}");
        // The line quoted and the column are the file's, not those of
        // the text with the entries blanked.
        let d = parse("interfaces = []\nblock = []\nicmp = 1\nmode = 2\n").unwrap_err();
        assert_eq!((d[0].excerpt.as_str(), d[1].excerpt.as_str()), ("icmp = 1", "mode = 2"));
        let e = errors("interfaces = []\nblock = []\nevents = { log = \"\u{e9}\u{e9}\", rate_limit = \"x\" }\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[1].starts_with("t.toml:3:37: "), "{e:#?}");
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
}
