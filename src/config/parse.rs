//! One reading of the file: toml's spanned document, walked by hand.
//!
//! The text is parsed once into toml's tree of spanned values; the walk
//! goes through it table by table, key by key (schema.rs says which keys
//! there are and what each takes), and collects every problem it meets
//! with its position instead of stopping at the first. A syntax error is
//! the exception: there is no tree to walk, and toml's own message, at its
//! position, is the one diagnostic.
//!
//! A large `block` list is read by the fast scanner (block.rs) and cut out
//! of the text before toml sees it: the tree holds the list empty, and
//! positions in the tree past the cut are moved back to the file's.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeInteger, DeTable, DeValue};
use toml::Spanned;

use super::schema::{self, Draft, FragmentDraft, Key};
use super::{block, Config, Fragment};
use crate::diagnostic::Diagnostic;

/// A value of the tree, with its span.
pub(super) type Value<'t> = Spanned<DeValue<'t>>;

/// A draft with a `block` list, which the fast scanner may fill.
pub(super) trait BlockList {
    /// The list the fast scanner read (sorted, without duplicates), and
    /// the bytes between its brackets.
    fn set_block(&mut self, prefixes: Vec<crate::addr::Prefix>, inner: Range<usize>);
}

/// The configuration `text` holds and what is worth a warning in it, or
/// every problem found in it.
pub(super) fn parse(path: &Path, text: &str) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    parse_as::<Draft, Config>(path, text, schema::TOP, &[], Draft::finish)
}

/// A fragment (`icmpguard.d/*.toml`: `block` and `allow` only), as
/// [`parse`] reads the main file.
pub(super) fn parse_fragment(path: &Path, text: &str) -> Result<(Fragment, Vec<Diagnostic>), Vec<Diagnostic>> {
    let main: Vec<&'static str> = schema::TOP.iter().map(|k| k.name).collect();
    parse_as::<FragmentDraft, Fragment>(path, text, schema::FRAGMENT, &main, FragmentDraft::finish)
}

/// `text` read by the walk through `keys` into a draft `D`, which
/// `finish` turns into a `T`; a key of `main` that `keys` lacks is one
/// that belongs in the main file.
fn parse_as<D: Default + BlockList, T>(
    path: &Path,
    text: &str,
    keys: &[Key<D>],
    main: &[&'static str],
    finish: fn(D, &Path, &mut Walk<'_>) -> Option<T>,
) -> Result<(T, Vec<Diagnostic>), Vec<Diagnostic>> {
    let fast = block::scan(text);
    let cut = fast.as_ref().map(|s| s.inner.clone());
    let rest = cut.as_ref().map(|c| [&text[..c.start], &text[c.end..]].concat());
    let mut walk = Walk { path, text, cut, found: Vec::new(), warnings: Vec::new(), main: main.to_vec() };
    let doc = match DeTable::parse(rest.as_deref().unwrap_or(text)) {
        Ok(doc) => doc,
        Err(e) => {
            // toml's messages end with a newline and sometimes go on with
            // a sentence: one line.
            walk.error(e.span().unwrap_or(0..0), e.message().trim().replace('\n', "; "));
            return Err(walk.found);
        }
    };
    let mut draft = D::default();
    walk.keys(doc.get_ref(), keys, &mut draft);
    if let Some(mut scanned) = fast {
        // Already in the file's positions.
        for (span, message) in std::mem::take(&mut scanned.errors) {
            walk.found.push(Diagnostic::at(path, text, span, message));
        }
        let inner = scanned.inner.clone();
        draft.set_block(scanned.into_sorted(), inner);
    }
    match finish(draft, path, &mut walk) {
        Some(config) if walk.found.is_empty() => {
            let mut warnings = walk.warnings;
            warnings.sort_by_key(|d| (d.line, d.col));
            Ok((config, warnings))
        }
        _ => {
            let mut found = walk.found;
            found.sort_by_key(|d| (d.line, d.col));
            found.dedup();
            Err(found)
        }
    }
}

/// The walk through the tree: typed readers for the schema's keys, each
/// recording what is wrong with a value where it is and going on.
pub(super) struct Walk<'t> {
    path: &'t Path,
    text: &'t str,
    /// The bytes of `text` the fast scanner took out before toml read it.
    cut: Option<Range<usize>>,
    found: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// The main file's keys, when this is a fragment.
    main: Vec<&'static str>,
}

impl Walk<'_> {
    /// A problem at `span` of the tree.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message);
        self.found.push(d);
    }

    /// Something valid but probably not meant, at `span` of the tree.
    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message);
        self.warnings.push(d);
    }

    /// A diagnostic at `span` of the tree, in the file's positions.
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        // What starts at the cut or past it, and what ends past it, was
        // that much further on in the file.
        let span = match &self.cut {
            Some(c) => {
                let start = if span.start >= c.start { span.start + c.len() } else { span.start };
                let end = if span.end > c.start { span.end + c.len() } else { span.end };
                start..end.max(start)
            }
            None => span,
        };
        Diagnostic::at(self.path, self.text, span, message)
    }

    /// A problem of the whole file, shown at its end.
    pub fn error_at_end(&mut self, message: &str) {
        let end = self.text.len();
        self.found.push(Diagnostic::at(self.path, self.text, end..end, message));
    }

    pub fn wrong_type(&mut self, v: &Value<'_>, expected: &str) {
        self.error(v.span(), format!("invalid type: {}, expected {expected}", unexpected(v.get_ref())));
    }

    /// Reads each key of `table` with its entry of `keys`; a key that is
    /// not there is an error naming those that are.
    pub fn keys<D>(&mut self, table: &DeTable<'_>, keys: &[Key<D>], draft: &mut D) {
        for (k, v) in table.iter() {
            match keys.iter().find(|key| key.name == k.get_ref()) {
                Some(key) => (key.read)(self, v, draft),
                None if self.main.contains(&k.get_ref().as_ref()) => self.error(
                    k.span(),
                    format!(
                        "`{}` belongs in the main configuration file: a fragment holds only `block` and `allow`",
                        k.get_ref()
                    ),
                ),
                None => {
                    let names: Vec<&str> = keys.iter().map(|key| key.name).collect();
                    self.error(k.span(), format!("unknown field `{}`, expected {}", k.get_ref(), one_of(&names)));
                }
            }
        }
    }

    /// A table of `keys`, read into `draft`.
    pub fn table<D>(&mut self, v: &Value<'_>, keys: &[Key<D>], draft: &mut D) {
        match v.get_ref() {
            DeValue::Table(t) => self.keys(t, keys, draft),
            _ => self.wrong_type(v, "a table"),
        }
    }

    /// An array, each element read by `item`; what `item` refuses is left
    /// out (it said why).
    pub fn each<T>(
        &mut self,
        v: &Value<'_>,
        expected: &str,
        mut item: impl FnMut(&mut Self, &Value<'_>) -> Option<T>,
    ) -> Vec<T> {
        let DeValue::Array(elements) = v.get_ref() else {
            self.wrong_type(v, expected);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(elements.len());
        for e in elements.iter() {
            out.extend(item(self, e));
        }
        out
    }

    /// A string, as `check` takes it.
    pub fn checked<T>(&mut self, v: &Value<'_>, expected: &str, check: fn(&str) -> Result<T, String>) -> Option<T> {
        let DeValue::String(s) = v.get_ref() else {
            self.wrong_type(v, expected);
            return None;
        };
        check(s).map_err(|message| self.error(v.span(), message)).ok()
    }

    /// One of the strings of `names`, as the value it names.
    pub fn choice<T: Copy>(&mut self, v: &Value<'_>, names: &[(&str, T)]) -> Option<T> {
        let expected: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        let expected = one_of(&expected);
        let DeValue::String(s) = v.get_ref() else {
            self.wrong_type(v, &expected);
            return None;
        };
        let found = names.iter().find(|(n, _)| n == s).map(|(_, value)| *value);
        if found.is_none() {
            self.error(v.span(), format!("unknown variant `{s}`, expected {expected}"));
        }
        found
    }

    /// `true` or `false`.
    pub fn bool(&mut self, v: &Value<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(v, "`true` or `false`");
                None
            }
        }
    }

    /// A whole number from 0 to `u32::MAX`.
    pub fn u32(&mut self, v: &Value<'_>) -> Option<u32> {
        const EXPECTED: &str = "a whole number from 0 to 4294967295";
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(v, EXPECTED);
            return None;
        };
        let n = i128::from_str_radix(i.as_str(), i.radix()).ok().and_then(|n| u32::try_from(n).ok());
        if n.is_none() {
            self.error(v.span(), format!("invalid value: {}, expected {EXPECTED}", unexpected(v.get_ref())));
        }
        n
    }
}

/// `a`, `a` or `b`, one of `a`, `b`, `c`: the names a message offers.
fn one_of(names: &[&str]) -> String {
    match names {
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        _ => format!("one of {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")),
    }
}

/// What a value of the wrong type is, in a message.
fn unexpected(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer `{}`", integer_text(i)),
        DeValue::Float(f) => format!("floating point `{}`", f.as_str()),
        DeValue::Boolean(b) => format!("boolean `{b}`"),
        DeValue::Datetime(d) => format!("date-time `{d}`"),
        DeValue::Array(_) => "array".to_string(),
        DeValue::Table(_) => "table".to_string(),
    }
}

/// An integer in decimal, whatever base the file wrote it in.
pub(super) fn integer_text(i: &DeInteger<'_>) -> String {
    match i128::from_str_radix(i.as_str(), i.radix()) {
        Ok(n) => n.to_string(),
        Err(_) => i.to_string(),
    }
}
