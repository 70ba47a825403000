//! The schema: every key the file may hold, what its value must be, and
//! what an absent key means (the named defaults), in one place.
//!
//! Each table is a list of [`Key`]s: a name and the function that reads its
//! value into a draft with the typed readers of [`Walk`]. A new key is one
//! line in its table and a field in its draft; a new table is a draft, a
//! list of keys and one line in its parent's list. The walk reports every
//! key that no list names, with the names the list has.

use std::path::{Component, Path, PathBuf};

use std::ops::Range;

use toml::de::DeValue;

use super::entries::{self, FileEntries, List, Table};
use super::parse::{BlockList, Value, Walk};
use super::{Config, Events, Facility, Fragment, Interface, LimitConfig, Metrics, Syslog};
use crate::addr::Prefix;
use crate::icmp::{self, TypeSet};
use crate::plan::{AttachMode, Cover, IcmpPolicy, LogMode};

// The named defaults: what each optional key means when the file leaves it
// out. `interfaces` and `block` have none: a missing one is an error, so
// that a truncated file cannot unblock everything.
pub const DEFAULT_ICMP: IcmpPolicy = IcmpPolicy::Echo;
pub const DEFAULT_MODE: AttachMode = AttachMode::Auto;
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/icmpguard";
pub const DEFAULT_LOG: LogMode = LogMode::All;
pub const DEFAULT_RATE_LIMIT: u32 = 100;
pub const DEFAULT_FACILITY: Facility = Facility::Daemon;
pub const DEFAULT_SOCKET: &str = "/dev/log";
pub const DEFAULT_SOURCES: u32 = 65536;
/// `[limit] burst` when the file leaves it out: this many times `echo`.
pub const DEFAULT_BURST_FACTOR: u32 = 2;
/// Most sources the rate limiter may track (16 bytes each: 64 MB of
/// kernel memory at most).
const MAX_SOURCES: u32 = 1 << 22;
/// Warnings about allow entries that cover block entries, at most.
const MAX_COVER_WARNINGS: usize = 20;

/// A key a table may hold, and how its value is read into the table's
/// draft `D`.
pub(super) struct Key<D> {
    pub name: &'static str,
    pub read: fn(&mut Walk<'_>, &Value<'_>, &mut D),
}

/// The top level of the file.
pub(super) const TOP: &[Key<Draft>] = &[
    Key { name: "interfaces", read: |w, v, d| d.interfaces = Some(w.each(v, INTERFACES, interface)) },
    Key { name: "block", read: |w, v, d| d.lists.read_block(w, v) },
    Key { name: "allow", read: |w, v, d| d.lists.read_allow(w, v) },
    Key { name: "icmp", read: |w, v, d| d.icmp = icmp_policy(w, v) },
    Key { name: "dry_run", read: |w, v, d| d.dry_run = w.bool(v) },
    Key { name: "mode", read: |w, v, d| d.mode = w.choice(v, MODES) },
    Key { name: "pin_dir", read: |w, v, d| d.pin_dir = w.checked(v, PIN_DIR, pin_dir) },
    Key { name: "events", read: |w, v, d| w.table(v, EVENTS, &mut d.events) },
    Key { name: "syslog", read: |w, v, d| w.table(v, SYSLOG, &mut d.syslog) },
    Key { name: "limit", read: |w, v, d| w.table(v, LIMIT, &mut d.limit) },
    Key { name: "metrics", read: |w, v, d| w.table(v, METRICS, &mut d.metrics) },
];

/// A fragment, `icmpguard.d/*.toml`: entries only (the main file's other
/// keys are refused as belonging there).
pub(super) const FRAGMENT: &[Key<FragmentDraft>] = &[
    Key { name: "block", read: |w, v, d| d.lists.read_block(w, v) },
    Key { name: "allow", read: |w, v, d| d.lists.read_allow(w, v) },
];

/// `[metrics]`
const METRICS: &[Key<MetricsDraft>] =
    &[Key { name: "textfile", read: |w, v, d| d.textfile = w.checked(v, TEXTFILE, textfile) }];

/// `[limit]`
const LIMIT: &[Key<LimitDraft>] = &[
    Key { name: "echo", read: |w, v, d| d.echo = w.u32(v).map(|n| (n, v.span())) },
    Key { name: "burst", read: |w, v, d| d.burst = w.u32(v).map(|n| (n, v.span())) },
    Key { name: "sources", read: |w, v, d| d.sources = w.u32(v).map(|n| (n, v.span())) },
];

/// `[events]`
const EVENTS: &[Key<EventsDraft>] = &[
    Key { name: "log", read: |w, v, d| d.log = w.choice(v, LOGS) },
    Key { name: "rate_limit", read: |w, v, d| d.rate_limit = w.u32(v) },
];

/// `[syslog]`
const SYSLOG: &[Key<SyslogDraft>] = &[
    Key { name: "facility", read: |w, v, d| d.facility = w.choice(v, FACILITIES) },
    Key { name: "socket", read: |w, v, d| d.socket = w.checked(v, SOCKET, socket) },
];

// What a value of the wrong type should have been, for the message.
const INTERFACES: &str = "an array of interface names, such as [\"eth0\"]";
const BLOCK: &str = "an array of addresses and prefixes, such as [\"192.0.2.10\", \"198.51.100.0/24\"]";
const ALLOW: &str = "an array of addresses and prefixes, such as [\"192.0.2.10\", \"198.51.100.0/24\"]";
const TEXTFILE: &str = "an absolute path in quotes, such as \"/var/lib/prometheus/node-exporter/icmpguard.prom\"";
const ICMP_EXPECTED: &str =
    "`\"echo\"`, `\"all\"` or a list of ICMP types, such as [\"echo-request\", \"timestamp-request\"]";
const PIN_DIR: &str = "an absolute path in quotes, such as \"/sys/fs/bpf/icmpguard\"";
const SOCKET: &str = "an absolute path in quotes, such as \"/dev/log\"";

/// The names of the values of `icmp`, `mode`, `log` and `facility`, as the
/// file writes them (and messages and `status` show them).
pub(super) const ICMP: &[(&str, IcmpPolicy)] = &[("echo", IcmpPolicy::Echo), ("all", IcmpPolicy::All)];
pub(super) const MODES: &[(&str, AttachMode)] =
    &[("auto", AttachMode::Auto), ("native", AttachMode::Native), ("generic", AttachMode::Generic)];
const LOGS: &[(&str, LogMode)] = &[("all", LogMode::All), ("blocked", LogMode::Blocked), ("none", LogMode::None)];
const FACILITIES: &[(&str, Facility)] = &[
    ("kern", Facility::Kern),
    ("user", Facility::User),
    ("mail", Facility::Mail),
    ("daemon", Facility::Daemon),
    ("auth", Facility::Auth),
    ("syslog", Facility::Syslog),
    ("lpr", Facility::Lpr),
    ("news", Facility::News),
    ("uucp", Facility::Uucp),
    ("cron", Facility::Cron),
    ("authpriv", Facility::Authpriv),
    ("ftp", Facility::Ftp),
    ("local0", Facility::Local0),
    ("local1", Facility::Local1),
    ("local2", Facility::Local2),
    ("local3", Facility::Local3),
    ("local4", Facility::Local4),
    ("local5", Facility::Local5),
    ("local6", Facility::Local6),
    ("local7", Facility::Local7),
];

/// The name of `value` in `names`.
pub(super) fn name_of<T: PartialEq>(names: &[(&'static str, T)], value: &T) -> &'static str {
    names.iter().find(|(_, v)| v == value).map_or("", |(n, _)| n)
}

/// What the walk found, key by key; `None` where the file does not say.
/// A key whose value was refused is never missing: its error is enough.
/// The two lists of a file as read: the prefixes (file order, duplicates
/// kept), where each allow entry is, and the entries written as tables.
#[derive(Default)]
pub(super) struct Lists {
    block: Option<Vec<Prefix>>,
    /// `block` came from the fast scanner: sorted, without duplicates,
    /// without tables (the scanner steps aside at the first one).
    block_sorted_unique: bool,
    allow: Option<Vec<(Prefix, Range<usize>)>>,
    block_tables: Vec<Table>,
    allow_tables: Vec<Table>,
}

impl Lists {
    fn read_block(&mut self, w: &mut Walk<'_>, v: &Value<'_>) {
        let mut tables = Vec::new();
        self.block = Some(w.each(v, BLOCK, |w, v| entries::entry(w, v, &mut tables)));
        self.block_tables = tables;
    }

    fn read_allow(&mut self, w: &mut Walk<'_>, v: &Value<'_>) {
        let mut tables = Vec::new();
        self.allow = Some(w.each(v, ALLOW, |w, v| entries::entry(w, v, &mut tables).map(|p| (p, v.span()))));
        self.allow_tables = tables;
    }

    /// Both lists sorted and without duplicates, their tables' metadata
    /// collapsed, and the warnings about allow entries covering blocks.
    /// `None` for a missing `block` when `block_required`.
    fn finish(self, w: &mut Walk<'_>, block_required: bool) -> Option<(Vec<Prefix>, Vec<Prefix>, entries::Metas)> {
        let mut block = match self.block {
            Some(b) => b,
            None if !block_required => Vec::new(),
            None => {
                w.error_at_end("missing key `block`; write `block = [\"192.0.2.10\"]`, or `block = []` for an empty blocklist (a missing key is never taken as empty, so that a truncated file cannot unblock everything)");
                return None;
            }
        };
        if !self.block_sorted_unique {
            crate::addr::sort_prefixes(&mut block);
        }
        let mut allow_spanned = self.allow.unwrap_or_default();
        allow_spanned.sort_by_key(|(p, _)| *p);
        let allow_sorted: Vec<Prefix> = allow_spanned.iter().map(|(p, _)| *p).collect();
        let files = [
            FileEntries { list: List::Block, sorted: &block, tables: &self.block_tables },
            FileEntries { list: List::Allow, sorted: &allow_sorted, tables: &self.allow_tables },
        ];
        let metas = entries::collapse(&files);
        entries::warn_expired(w, &metas, &files);
        if !self.block_sorted_unique {
            block.dedup();
        }
        allow_spanned.dedup_by_key(|(p, _)| *p);
        warn_covered(w, &block, &allow_spanned);
        let allow = allow_spanned.into_iter().map(|(p, _)| p).collect();
        Some((block, allow, metas))
    }
}

#[derive(Default)]
pub(super) struct FragmentDraft {
    lists: Lists,
}

impl BlockList for FragmentDraft {
    fn set_block(&mut self, prefixes: Vec<Prefix>, _inner: Range<usize>) {
        self.lists.block = Some(prefixes);
        self.lists.block_sorted_unique = true;
    }
}

impl FragmentDraft {
    pub(super) fn finish(self, path: &Path, w: &mut Walk<'_>) -> Option<Fragment> {
        let (block, allow, metas) = self.lists.finish(w, false)?;
        Some(Fragment { path: path.to_path_buf(), block, allow, metas })
    }
}

impl BlockList for Draft {
    fn set_block(&mut self, prefixes: Vec<Prefix>, inner: Range<usize>) {
        self.block_span = Some(inner);
        self.lists.block = Some(prefixes);
        self.lists.block_sorted_unique = true;
    }
}

#[derive(Default)]
pub(super) struct Draft {
    interfaces: Option<Vec<Interface>>,
    lists: Lists,
    block_span: Option<Range<usize>>,
    icmp: Option<IcmpPolicy>,
    dry_run: Option<bool>,
    limit: LimitDraft,
    metrics: MetricsDraft,
    mode: Option<AttachMode>,
    pin_dir: Option<PathBuf>,
    events: EventsDraft,
    syslog: SyslogDraft,
}

#[derive(Default)]
struct EventsDraft {
    log: Option<LogMode>,
    rate_limit: Option<u32>,
}

#[derive(Default)]
struct MetricsDraft {
    textfile: Option<PathBuf>,
}

/// `[limit]`: each value with where it is, for the errors that involve two.
#[derive(Default)]
struct LimitDraft {
    echo: Option<(u32, Range<usize>)>,
    burst: Option<(u32, Range<usize>)>,
    sources: Option<(u32, Range<usize>)>,
}

impl LimitDraft {
    fn finish(self, w: &mut Walk<'_>) -> LimitConfig {
        let echo = self.echo.as_ref().map_or(0, |(n, _)| *n);
        if echo > 1_000_000_000 {
            if let Some((_, span)) = &self.echo {
                w.error(span.clone(), "`echo` is at most 1000000000 requests per second (one per nanosecond)");
            }
        }
        let burst = match self.burst {
            Some((0, span)) => {
                w.error(span, "`burst` must be at least 1 (a bucket that holds no request admits none); leave it out for 2 x echo");
                1
            }
            Some((n, span)) if echo == 0 => {
                w.warning(span, format!("`burst = {n}` has no effect without `echo` (no rate limit)"));
                n
            }
            Some((n, _)) => n,
            None => echo.saturating_mul(DEFAULT_BURST_FACTOR).max(1),
        };
        let sources = match self.sources {
            Some((n, span)) if n == 0 || n > MAX_SOURCES => {
                w.error(span, format!("`sources` must be from 1 to {MAX_SOURCES}"));
                DEFAULT_SOURCES
            }
            Some((n, _)) => n,
            None => DEFAULT_SOURCES,
        };
        LimitConfig { echo, burst, sources }
    }
}

#[derive(Default)]
struct SyslogDraft {
    facility: Option<Facility>,
    socket: Option<PathBuf>,
}

impl Draft {
    /// The configuration, defaults filled in; `None`, and an error at the
    /// end of the file, when a required key is missing.
    pub(super) fn finish(self, path: &Path, w: &mut Walk<'_>) -> Option<Config> {
        let Some(mut interfaces) = self.interfaces else {
            w.error_at_end(
                "missing key `interfaces`; write `interfaces = [\"eth0\"]`, or `interfaces = []` to guard none",
            );
            return None;
        };
        let (block, allow, metas) = self.lists.finish(w, true)?;
        interfaces.sort_unstable();
        interfaces.dedup();
        let limit = self.limit.finish(w);
        Some(Config {
            path: path.to_path_buf(),
            interfaces,
            block,
            block_span: self.block_span,
            allow,
            metas,
            fragments: Vec::new(),
            metrics: Metrics { textfile: self.metrics.textfile },
            dry_run: self.dry_run.unwrap_or(false),
            limit,
            icmp: self.icmp.unwrap_or(DEFAULT_ICMP),
            mode: self.mode.unwrap_or(DEFAULT_MODE),
            pin_dir: self.pin_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR)),
            events: Events {
                log: self.events.log.unwrap_or(DEFAULT_LOG),
                rate_limit: self.events.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT),
            },
            syslog: Syslog {
                facility: self.syslog.facility.unwrap_or(DEFAULT_FACILITY),
                socket: self.syslog.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            },
        })
    }
}

/// Warns, at the allow entry, about block entries it covers: allow wins,
/// so they never drop anything.
fn warn_covered(w: &mut Walk<'_>, block: &[Prefix], allow: &[(Prefix, Range<usize>)]) {
    if allow.is_empty() || block.is_empty() {
        return;
    }
    let just: Vec<Prefix> = allow.iter().map(|(p, _)| *p).collect();
    let cover = Cover::new(&just);
    let mut by_allow: Vec<(Prefix, Vec<Prefix>)> = Vec::new();
    for b in block {
        if let Some(a) = cover.covering(b) {
            match by_allow.iter_mut().find(|(p, _)| *p == a) {
                Some((_, list)) => list.push(*b),
                None => by_allow.push((a, vec![*b])),
            }
        }
    }
    for (a, covered) in by_allow.iter().take(MAX_COVER_WARNINGS) {
        let Some((_, span)) = allow.iter().find(|(p, _)| p == a) else { continue };
        let what = match covered.as_slice() {
            [one] if one == a => {
                format!("\"{a}\" is both allowed and blocked: allow wins, the block entry has no effect")
            }
            [one] => format!("allowed \"{a}\" covers blocked \"{one}\": allow wins, the block entry has no effect"),
            [first, ..] => format!(
                "allowed \"{a}\" covers {} block entries (\"{first}\" first): allow wins, they have no effect",
                covered.len()
            ),
            [] => continue,
        };
        w.warning(span.clone(), what);
    }
    if by_allow.len() > MAX_COVER_WARNINGS {
        let span = allow[0].1.clone();
        w.warning(span, format!("{} more allow entries cover block entries", by_allow.len() - MAX_COVER_WARNINGS));
    }
}

/// `icmp`: "echo", "all", or a list of types.
fn icmp_policy(w: &mut Walk<'_>, v: &Value<'_>) -> Option<IcmpPolicy> {
    match v.get_ref() {
        DeValue::String(_) => w.choice(v, ICMP),
        DeValue::Array(items) => {
            if items.is_empty() {
                w.error(v.span(), "an empty `icmp` list drops nothing for a blocked address; write \"echo\" (ping), \"all\", or the types to drop");
                return None;
            }
            let mut set = TypeSet::default();
            let mut ok = true;
            for item in items.iter() {
                let DeValue::String(name) = item.get_ref() else {
                    w.error(
                        item.span(),
                        format!(
                            "expected an ICMP type name in quotes, such as \"echo-request\", found {}",
                            found(item.get_ref())
                        ),
                    );
                    ok = false;
                    continue;
                };
                match icmp::select(name) {
                    Ok(sel) => {
                        for (f, t) in sel.types {
                            set.insert(f, t);
                        }
                        if let Some(note) = sel.note {
                            w.warning(item.span(), note);
                        }
                    }
                    Err(e) => {
                        w.error(item.span(), e);
                        ok = false;
                    }
                }
            }
            ok.then_some(IcmpPolicy::Types(set))
        }
        _ => {
            w.wrong_type(v, ICMP_EXPECTED);
            None
        }
    }
}

fn interface(w: &mut Walk<'_>, v: &Value<'_>) -> Option<Interface> {
    w.checked(v, "an interface name in quotes, such as \"eth0\"", Interface::parse)
}

/// The error for an entry of `block` that is `found` (see [`found`])
/// instead of a string; block.rs, which reads the list from the lexer, says
/// the same.
pub(super) fn not_an_entry(found: &str) -> String {
    format!("expected an address or prefix in quotes, such as \"192.0.2.10\", found {found}")
}

/// A value that is not a string, as [`not_an_entry`] names it.
pub(super) fn found(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {}", super::parse::integer_text(i)),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

pub(super) fn pin_dir(text: &str) -> Result<PathBuf, String> {
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

fn textfile(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    match path.file_name() {
        _ if !path.is_absolute() => Err(format!("textfile \"{text}\" must be an absolute path, such as \"/var/lib/prometheus/node-exporter/icmpguard.prom\"")),
        Some(name) if !name.to_string_lossy().ends_with(".prom") => Err(format!(
            "textfile \"{text}\" must end in .prom: node_exporter's textfile collector reads only *.prom files"
        )),
        Some(name) if name.to_string_lossy().starts_with('.') => {
            Err(format!("textfile \"{text}\" must not be a hidden file"))
        }
        Some(_) => Ok(path.to_path_buf()),
        None => Err(format!("textfile \"{text}\" must name a file")),
    }
}

fn socket(text: &str) -> Result<PathBuf, String> {
    if Path::new(text).is_absolute() {
        Ok(PathBuf::from(text))
    } else {
        Err(format!("syslog socket \"{text}\" must be an absolute path, such as \"{DEFAULT_SOCKET}\""))
    }
}
