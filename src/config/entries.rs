//! Entries of `block` and `allow`: an address or prefix in quotes, or an
//! inline table with a note and an expiry; and how the entries of the main
//! file and of its fragments collapse into one list.
//!
//! A plain string is the common case (a million of them are read by the
//! fast scanner, block.rs, and carry nothing but the prefix); only entries
//! written as tables have metadata, kept beside the lists by (list, prefix).

use std::collections::BTreeMap;
use std::time::SystemTime;

use toml::de::DeValue;

use super::parse::{Value, Walk};
use super::schema::{found, not_an_entry, Key};
use crate::addr::Prefix;

/// Characters a note may have at most.
pub const NOTE_MAX: usize = 200;

/// The list an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum List {
    Block,
    Allow,
}

impl List {
    pub fn name(self) -> &'static str {
        match self {
            List::Block => "block",
            List::Allow => "allow",
        }
    }
}

/// What an entry written as a table adds to its address: when it stops
/// being enforced, and a note for `status` and the event lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryMeta {
    pub until: Option<SystemTime>,
    pub note: Option<String>,
}

/// The metadata of a set of lists: only entries that have an expiry or a
/// note are here.
pub type Metas = BTreeMap<(List, Prefix), EntryMeta>;

/// An entry table of one list as read, and where it is (none for the
/// collapsed entries of a whole file).
#[derive(Clone, Debug)]
pub(super) struct Table {
    pub prefix: Prefix,
    pub meta: EntryMeta,
    pub span: Option<std::ops::Range<usize>>,
}

#[derive(Default)]
struct EntryDraft {
    addr: Option<Prefix>,
    /// Set when `addr` was given, valid or not (no "missing" error then).
    addr_seen: bool,
    until: Option<SystemTime>,
    note: Option<String>,
}

const ENTRY: &[Key<EntryDraft>] = &[
    Key {
        name: "addr",
        read: |w, v, d| {
            d.addr_seen = true;
            d.addr = prefix(w, v);
        },
    },
    Key { name: "until", read: |w, v, d| d.until = until(w, v) },
    Key { name: "note", read: |w, v, d| d.note = note(w, v) },
];

/// An address or prefix in quotes.
fn prefix(w: &mut Walk<'_>, v: &Value<'_>) -> Option<Prefix> {
    match v.get_ref() {
        DeValue::String(s) => s.parse().map_err(|e: crate::addr::PrefixError| w.error(v.span(), e.to_string())).ok(),
        other => {
            w.error(v.span(), not_an_entry(&found(other)));
            None
        }
    }
}

fn until(w: &mut Walk<'_>, v: &Value<'_>) -> Option<SystemTime> {
    match v.get_ref() {
        DeValue::Datetime(d) => crate::when::from_toml(d).map_err(|e| w.error(v.span(), format!("until: {e}"))).ok(),
        _ => {
            w.wrong_type(v, "an offset date-time, such as 2026-12-24T00:00:00Z (no quotes)");
            None
        }
    }
}

fn note(w: &mut Walk<'_>, v: &Value<'_>) -> Option<String> {
    let DeValue::String(s) = v.get_ref() else {
        w.wrong_type(v, "a note in quotes, such as \"scanner, ticket 4711\"");
        return None;
    };
    let chars = s.chars().count();
    if chars > NOTE_MAX {
        w.error(
            v.span(),
            format!("the note has {chars} characters; at most {NOTE_MAX} are kept in status and event lines"),
        );
        return None;
    }
    if s.is_empty() {
        w.error(v.span(), "the note is empty; write a few words or leave `note` out");
        return None;
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || invisible(*c)) {
        w.error(
            v.span(),
            format!(
                "the note holds the control character {c:?}; a note is one line of text, shown in status and syslog"
            ),
        );
        return None;
    }
    Some(s.to_string())
}

/// Characters that are not control characters but would still break or
/// disguise a line of text: line and paragraph separators, and the marks
/// and overrides of bidirectional text.
fn invisible(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One entry of a list: an address or prefix in quotes, or a table with
/// `addr` and optionally `until` and `note` (pushed onto `tables`). An
/// entry of the wrong type is an error of its own, so that one stray
/// number does not hide the other problems of the list.
pub(super) fn entry(w: &mut Walk<'_>, v: &Value<'_>, tables: &mut Vec<Table>) -> Option<Prefix> {
    let DeValue::Table(t) = v.get_ref() else {
        return prefix(w, v);
    };
    let mut d = EntryDraft::default();
    w.keys(t, ENTRY, &mut d);
    if !d.addr_seen {
        w.error(
            v.span(),
            "an entry table needs `addr`, such as { addr = \"203.0.113.7\", until = 2026-12-24T00:00:00Z, note = \"scanner\" }",
        );
    }
    let p = d.addr?;
    tables.push(Table { prefix: p, meta: EntryMeta { until: d.until, note: d.note }, span: Some(v.span()) });
    Some(p)
}

/// Warns about the entries of a file that expired before it was read (at
/// the first table of each): after duplicates collapsed, so that an entry
/// listed again without an expiry, or with a later one, is not named.
pub(super) fn warn_expired(w: &mut Walk<'_>, metas: &Metas, files: &[FileEntries<'_>]) {
    let now = SystemTime::now();
    for ((list, p), m) in metas {
        let Some(until) = m.until.filter(|u| *u <= now) else { continue };
        let span = files
            .iter()
            .filter(|f| f.list == *list)
            .flat_map(|f| f.tables.iter())
            .find(|t| t.prefix == *p)
            .and_then(|t| t.span.clone());
        if let Some(span) = span {
            w.warning(
                span,
                format!("\"{p}\" expired at {}: it is not enforced; remove the entry", crate::when::rfc3339(until)),
            );
        }
    }
}

/// One file's lists as read: every prefix (sorted, duplicates kept, as
/// `count` needs them) and its entry tables.
pub(super) struct FileEntries<'a> {
    pub list: List,
    pub sorted: &'a [Prefix],
    pub tables: &'a [Table],
}

/// The metadata of entries listed in several places, collapsed: an entry
/// listed without an expiry anywhere (a plain string, or a table without
/// `until`) never expires; otherwise the latest expiry holds. The first
/// note, in file order, is kept.
pub(super) fn collapse(files: &[FileEntries<'_>]) -> Metas {
    let mut out = Metas::new();
    // Only prefixes some table names can have metadata.
    let mut keys: Vec<(List, Prefix)> =
        files.iter().flat_map(|f| f.tables.iter().map(move |t| (f.list, t.prefix))).collect();
    keys.sort_unstable();
    keys.dedup();
    for (list, p) in keys {
        let mut until: Option<Option<SystemTime>> = None; // None: not seen yet
        let mut note = None;
        for f in files.iter().filter(|f| f.list == list) {
            let listed = count(f.sorted, &p);
            if listed == 0 {
                continue;
            }
            let tables: Vec<&Table> = f.tables.iter().filter(|t| t.prefix == p).collect();
            let plain = listed > tables.len();
            for u in tables.iter().map(|t| t.meta.until).chain(plain.then_some(None)) {
                until = Some(match (until, u) {
                    (None, u) => u,
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(a)), Some(b)) => Some(a.max(b)),
                });
            }
            if note.is_none() {
                note = tables.iter().find_map(|t| t.meta.note.clone());
            }
        }
        let meta = EntryMeta { until: until.flatten(), note };
        if meta != EntryMeta::default() {
            out.insert((list, p), meta);
        }
    }
    out
}

/// How many times `p` is in `sorted`.
fn count(sorted: &[Prefix], p: &Prefix) -> usize {
    let start = sorted.partition_point(|q| q < p);
    sorted[start..].iter().take_while(|q| *q == p).count()
}
