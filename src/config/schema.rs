//! The schema: every key the file may hold, what its value must be, and
//! what an absent key means (the named defaults), in one place.
//!
//! Each table is a list of [`Key`]s: a name and the function that reads its
//! value into a draft with the typed readers of [`Walk`]. A new key is one
//! line in its table and a field in its draft; a new table is a draft, a
//! list of keys and one line in its parent's list. The walk reports every
//! key that no list names, with the names the list has.

use std::path::{Component, Path, PathBuf};

use toml::de::DeValue;

use super::parse::{Value, Walk};
use super::{Config, Events, Facility, Interface, Syslog};
use crate::addr::Prefix;
use crate::plan::{AttachMode, IcmpPolicy, LogMode};

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

/// A key a table may hold, and how its value is read into the table's
/// draft `D`.
pub(super) struct Key<D> {
    pub name: &'static str,
    pub read: fn(&mut Walk<'_>, &Value<'_>, &mut D),
}

/// The top level of the file.
pub(super) const TOP: &[Key<Draft>] = &[
    Key { name: "interfaces", read: |w, v, d| d.interfaces = Some(w.each(v, INTERFACES, interface)) },
    Key { name: "block", read: |w, v, d| d.block = Some(w.each(v, BLOCK, entry)) },
    Key { name: "icmp", read: |w, v, d| d.icmp = w.choice(v, ICMP) },
    Key { name: "mode", read: |w, v, d| d.mode = w.choice(v, MODES) },
    Key { name: "pin_dir", read: |w, v, d| d.pin_dir = w.checked(v, PIN_DIR, pin_dir) },
    Key { name: "events", read: |w, v, d| w.table(v, EVENTS, &mut d.events) },
    Key { name: "syslog", read: |w, v, d| w.table(v, SYSLOG, &mut d.syslog) },
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
#[derive(Default)]
pub(super) struct Draft {
    interfaces: Option<Vec<Interface>>,
    pub block: Option<Vec<Prefix>>,
    icmp: Option<IcmpPolicy>,
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
        let Some(mut block) = self.block else {
            w.error_at_end("missing key `block`; write `block = [\"192.0.2.10\"]`, or `block = []` for an empty blocklist (a missing key is never taken as empty, so that a truncated file cannot unblock everything)");
            return None;
        };
        interfaces.sort_unstable();
        interfaces.dedup();
        block.sort_unstable();
        block.dedup();
        Some(Config {
            path: path.to_path_buf(),
            interfaces,
            block,
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

fn interface(w: &mut Walk<'_>, v: &Value<'_>) -> Option<Interface> {
    w.checked(v, "an interface name in quotes, such as \"eth0\"", Interface::parse)
}

/// One entry of `block`: an address or a prefix. An entry of the wrong type
/// is an error of its own, so that one stray number does not hide the other
/// problems of the list.
fn entry(w: &mut Walk<'_>, v: &Value<'_>) -> Option<Prefix> {
    match v.get_ref() {
        DeValue::String(s) => s.parse().map_err(|e: crate::addr::PrefixError| w.error(v.span(), e.to_string())).ok(),
        other => {
            w.error(v.span(), not_an_entry(&found(other)));
            None
        }
    }
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

fn socket(text: &str) -> Result<PathBuf, String> {
    if Path::new(text).is_absolute() {
        Ok(PathBuf::from(text))
    } else {
        Err(format!("syslog socket \"{text}\" must be an absolute path, such as \"{DEFAULT_SOCKET}\""))
    }
}
