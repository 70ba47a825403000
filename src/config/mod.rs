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

use std::fmt;
use std::path::{Path, PathBuf};

mod block;
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
pub use schema::{DEFAULT_PIN_DIR, DEFAULT_RATE_LIMIT, DEFAULT_SOCKET, DEFAULT_SOURCES};
pub use secure::pin_dir_hint;

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

/// A loaded, valid configuration. Nothing here is a string that still needs
/// checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    /// Sorted, without duplicates.
    pub interfaces: Vec<Interface>,
    /// Sorted, without duplicates.
    pub block: Vec<Prefix>,
    /// Sorted, without duplicates.
    pub allow: Vec<Prefix>,
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
    /// What the kernel must enforce for this file.
    pub fn desired(&self) -> Desired<'_> {
        Desired {
            block: &self.block,
            allow: &self.allow,
            settings: Settings {
                policy: self.icmp,
                log: self.events.log,
                rate_limit: self.events.rate_limit,
                dry_run: self.dry_run,
                limit: Limit { echo: self.limit.echo, burst: self.limit.burst },
            },
            sources: self.limit.sources,
            interfaces: self.interfaces.iter().map(|i| i.name().to_string()).collect(),
            mode: self.mode,
        }
    }

    /// Reads, checks and parses the file at `path`.
    pub fn load(path: &Path, strictness: Strictness) -> Result<Loaded, Error> {
        let mut warnings = Vec::new();
        let text = secure::read_secure(path, strictness, &mut warnings)?;
        let (config, found) =
            Config::parse_with_warnings(path, &text).map_err(|diagnostics| Error::Config { diagnostics })?;
        warnings.extend(found.iter().map(Diagnostic::headline));
        warnings.extend(config.advice());
        Ok(Loaded { config, warnings })
    }

    /// Parses the text of a configuration file; `path` only names it in
    /// diagnostics, one per problem found.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
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
