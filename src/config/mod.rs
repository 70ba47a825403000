//! The configuration file: typed values, secure load, one parse.
//!
//! `check`, `run` and every reload go through [`Config::load`]; they differ
//! only in whether unsafe ownership or permissions are fatal
//! ([`Strictness`]). Problems come back as [`Diagnostic`]s with line and
//! column, every one found, in one pass.
//!
//! - `secure.rs` reads the file: owner, mode and symlinks checked on the
//!   way, as sshd's StrictModes does.
//! - `schema.rs` says which keys there are, what each takes, and what an
//!   absent one means (the named defaults).
//! - `parse.rs` reads the text once into toml's spanned tree and walks it,
//!   collecting every problem with its position.
//! - `block.rs` reads a large `block` list straight from toml's lexer.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod block;
mod entries;
mod parse;
mod schema;
mod secure;
#[cfg(test)]
mod tests;

use crate::addr::Prefix;
use crate::diagnostic::Diagnostic;
use crate::error::Error;
pub use crate::plan::{AttachMode, IcmpPolicy, LogMode};
use crate::plan::{Desired, Limit, Settings};
pub use entries::{EntryMeta, List, Metas, NOTE_MAX};
pub use schema::{DEFAULT_PIN_DIR, DEFAULT_RATE_LIMIT, DEFAULT_SOCKET, DEFAULT_SOURCES};
pub use secure::pin_dir_hint;

/// The directory of fragments beside a configuration file.
pub const FRAGMENT_DIR: &str = "icmpguard.d";

pub const DEFAULT_PATH: &str = "/etc/icmpguard.toml";
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// The syslog facilities of RFC 3164 that a daemon may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facility {
    Kern,
    User,
    Mail,
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

/// `[limit]`: the echo rate limit per source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    /// Echo requests per second from one source; 0: no limit.
    pub echo: u32,
    pub burst: u32,
    /// Sources tracked at once.
    pub sources: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syslog {
    pub facility: Facility,
    pub socket: PathBuf,
}

/// `[metrics]`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Where the Prometheus text file goes.
    pub textfile: Option<PathBuf>,
}

/// A fragment: entries that join the main file's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub path: PathBuf,
    /// Sorted, without duplicates.
    pub block: Vec<Prefix>,
    /// Sorted, without duplicates.
    pub allow: Vec<Prefix>,
    pub metas: Metas,
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
    /// Where the main file's `block` list lies (the bytes between its
    /// brackets) when the fast scanner read it: what a restart on the
    /// record skips (see [`Config::load_around`]).
    pub block_span: Option<std::ops::Range<usize>>,
    /// Sorted, without duplicates.
    pub allow: Vec<Prefix>,
    /// Expiry and note of the entries written as tables (those of the
    /// fragments too), by list and prefix.
    pub metas: Metas,
    /// The fragments whose entries joined `block` and `allow`, in the
    /// order read.
    pub fragments: Vec<PathBuf>,
    pub metrics: Metrics,
    pub icmp: IcmpPolicy,
    pub dry_run: bool,
    pub limit: LimitConfig,
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
    /// What the kernel must enforce for this file now.
    pub fn desired(&self) -> Desired<'_> {
        self.desired_at(SystemTime::now())
    }

    /// What the kernel must enforce for this file at `now`: the entries
    /// whose `until` has passed are left out.
    pub fn desired_at(&self, now: SystemTime) -> Desired<'_> {
        Desired {
            block: self.enforced(List::Block, now),
            allow: self.enforced(List::Allow, now),
            settings: Settings {
                policy: self.icmp,
                log: self.events.log,
                rate_limit: self.events.rate_limit,
                dry_run: self.dry_run,
                limit: Limit { echo: self.limit.echo, burst: self.limit.burst },
            },
            // Without a limit the buckets are never used: one, not a
            // preallocated map of `sources` (3 ms and 4 MB at 65536). Turning
            // the limit on moves to maps of the right size without a gap.
            sources: if self.limit.echo == 0 { 1 } else { self.limit.sources },
            interfaces: self.interfaces.iter().map(|i| i.name().to_string()).collect(),
            mode: self.mode,
        }
    }

    /// A list as enforced at `now`: borrowed when nothing in it expires.
    fn enforced(&self, list: List, now: SystemTime) -> Cow<'_, [Prefix]> {
        let all = match list {
            List::Block => &self.block,
            List::Allow => &self.allow,
        };
        let expired = |p: &Prefix| self.metas.get(&(list, *p)).and_then(|m| m.until).is_some_and(|u| u <= now);
        if !self.metas.iter().any(|((l, p), _)| *l == list && expired(p)) {
            return Cow::Borrowed(all);
        }
        Cow::Owned(all.iter().filter(|p| !expired(p)).copied().collect())
    }

    /// The entries whose `until` is at or before `now`, with their notes.
    pub fn expired_at(&self, now: SystemTime) -> Vec<(List, Prefix, &EntryMeta)> {
        self.metas.iter().filter(|(_, m)| m.until.is_some_and(|u| u <= now)).map(|((l, p), m)| (*l, *p, m)).collect()
    }

    /// The next moment an entry expires after `now`.
    pub fn next_expiry(&self, now: SystemTime) -> Option<SystemTime> {
        self.metas.values().filter_map(|m| m.until).filter(|u| *u > now).min()
    }

    /// The note of an entry, if it has one.
    pub fn note(&self, list: List, p: &Prefix) -> Option<&str> {
        self.metas.get(&(list, *p)).and_then(|m| m.note.as_deref())
    }

    /// Reads, checks and parses the file at `path` and its fragments.
    pub fn load(path: &Path, strictness: Strictness) -> Result<Loaded, Error> {
        let mut warnings = Vec::new();
        let text = secure::read_secure(path, strictness, &mut warnings)?;
        let (mut config, found) =
            Config::parse_with_warnings(path, &text).map_err(|diagnostics| Error::Config { diagnostics })?;
        warnings.extend(found.iter().map(Diagnostic::headline));
        config.read_fragments(strictness, &mut warnings)?;
        warnings.extend(config.advice());
        // The fragment directory's problems come once, not once per file.
        let mut seen = std::collections::HashSet::new();
        warnings.retain(|w| seen.insert(w.clone()));
        Ok(Loaded { config, warnings })
    }

    /// Reads the fragments beside the file and adds their entries.
    fn read_fragments(&mut self, strictness: Strictness, warnings: &mut Vec<String>) -> Result<(), Error> {
        let mut fragments = Vec::new();
        let mut diagnostics = Vec::new();
        for f in secure::fragment_files(&fragment_dir(&self.path), strictness, warnings)? {
            let text = secure::read_secure(&f, strictness, warnings)?;
            match parse::parse_fragment(&f, &text) {
                Ok((fragment, found)) => {
                    warnings.extend(found.iter().map(Diagnostic::headline));
                    fragments.push(fragment);
                }
                Err(found) => diagnostics.extend(found),
            }
        }
        if !diagnostics.is_empty() {
            return Err(Error::Config { diagnostics });
        }
        self.absorb(fragments);
        Ok(())
    }

    /// The configuration without the main file's `block` list, which lies
    /// in `cut` (the bytes between its brackets, as [`Config::block_span`]
    /// found them when the file was last read whole) and is not read:
    /// every setting, the fragments, and `block` without the main file's
    /// entries. For a restart on the record (see `crate::restart`), which
    /// must not enforce it: it tells where the pins are and what the
    /// daemon is to do until the file is read whole. `None` when the file
    /// does not have `[`...`]` around `cut`, or this does not parse: read
    /// it whole.
    pub fn load_around(path: &Path, cut: std::ops::Range<usize>) -> Result<Option<Config>, Error> {
        let Some(text) = secure::read_around(path, cut.clone())? else {
            return Ok(None);
        };
        let Ok((mut config, _)) = Config::parse_with_warnings(path, &text) else {
            return Ok(None);
        };
        config.block_span = Some(cut);
        // Warnings come when the file is read whole.
        config.read_fragments(Strictness::Enforce, &mut Vec::new())?;
        Ok(Some(config))
    }

    /// Reads and checks one fragment alone (`check --fragment`).
    pub fn load_fragment(path: &Path, strictness: Strictness) -> Result<(Fragment, Vec<String>), Error> {
        let mut warnings = Vec::new();
        let text = secure::read_secure(path, strictness, &mut warnings)?;
        let (fragment, found) =
            parse::parse_fragment(path, &text).map_err(|diagnostics| Error::Config { diagnostics })?;
        warnings.extend(found.iter().map(Diagnostic::headline));
        Ok((fragment, warnings))
    }

    /// Parses the text of a fragment; `path` names it in diagnostics.
    pub fn parse_fragment(path: &Path, text: &str) -> Result<(Fragment, Vec<Diagnostic>), Vec<Diagnostic>> {
        parse::parse_fragment(path, text)
    }

    /// The entries of `fragments` (in the order read) joined to the main
    /// file's: duplicates collapse (entries::collapse), allow still wins.
    pub fn absorb(&mut self, fragments: Vec<Fragment>) {
        if fragments.is_empty() {
            return;
        }
        // Each file's metadata as tables: a prefix a file lists without a
        // table never expires there.
        let as_tables = |metas: &Metas, list: List| -> Vec<entries::Table> {
            metas
                .iter()
                .filter(|((l, _), _)| *l == list)
                .map(|((_, p), m)| entries::Table { prefix: *p, meta: m.clone(), span: None })
                .collect()
        };
        let files: Vec<(&Vec<Prefix>, &Vec<Prefix>, &Metas)> = std::iter::once((&self.block, &self.allow, &self.metas))
            .chain(fragments.iter().map(|f| (&f.block, &f.allow, &f.metas)))
            .collect();
        let tables: Vec<(Vec<entries::Table>, Vec<entries::Table>)> =
            files.iter().map(|(_, _, m)| (as_tables(m, List::Block), as_tables(m, List::Allow))).collect();
        let mut each = Vec::new();
        for ((block, allow, _), (bt, at)) in files.iter().zip(&tables) {
            each.push(entries::FileEntries { list: List::Block, sorted: block, tables: bt });
            each.push(entries::FileEntries { list: List::Allow, sorted: allow, tables: at });
        }
        let metas = entries::collapse(&each);
        let mut block: Vec<Prefix> = files.iter().flat_map(|(b, _, _)| b.iter().copied()).collect();
        let mut allow: Vec<Prefix> = files.iter().flat_map(|(_, a, _)| a.iter().copied()).collect();
        crate::addr::sort_prefixes(&mut block);
        block.dedup();
        allow.sort_unstable();
        allow.dedup();
        self.block = block;
        self.allow = allow;
        self.metas = metas;
        self.fragments = fragments.into_iter().map(|f| f.path).collect();
    }

    /// Parses the text of a configuration file; `path` only names it in
    /// diagnostics, one per problem found.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
        // The main file alone: fragments are read by `load`.
        parse::parse(path, text).map(|(config, _)| config)
    }

    /// As [`Config::parse`], with the warnings (valid, but probably not
    /// what the operator meant), each where it is.
    pub fn parse_with_warnings(path: &Path, text: &str) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
        parse::parse(path, text)
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
                    "{}: \"{p}\" blocks ICMP {} for every {} address{}",
                    self.path.display(),
                    match self.icmp {
                        IcmpPolicy::Echo => "echo",
                        _ => "of the listed types",
                    },
                    if p.is_v4() { "IPv4" } else { "IPv6" },
                    if self.allow.is_empty() { "" } else { " but the allowed ones" }
                ));
            }
        }
        if self.dry_run {
            out.push(format!(
                "{}: dry_run = true: nothing is dropped; what would be is only counted and logged",
                self.path.display()
            ));
        }
        out
    }
}

/// `icmpguard.d` beside the file at `path`.
pub fn fragment_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(FRAGMENT_DIR),
        _ => PathBuf::from(FRAGMENT_DIR),
    }
}

/// Whether a file name in the fragment directory is a fragment: `*.toml`,
/// not hidden (editors' swap and backup files, dpkg's `.dpkg-new` and
/// `.dpkg-old`, Ansible's temporary files are not).
pub fn is_fragment_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.ends_with(".toml") && !name.starts_with('.') && name.len() > ".toml".len()
}

/// A short, stable name for messages and `status`: the file's.
impl fmt::Display for IcmpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IcmpPolicy::Types(t) => {
                let names: Vec<String> = t.names().iter().map(|n| format!("{n:?}")).collect();
                write!(f, "[{}]", names.join(", "))
            }
            other => f.write_str(schema::name_of(schema::ICMP, other)),
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(schema::name_of(schema::MODES, self))
    }
}
