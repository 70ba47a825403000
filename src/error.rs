//! Every failure icmpguard reports: what failed, where, and how to fix it.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::diagnostic::Diagnostic;

/// Exit status of SPEC: 1 invalid configuration, 3 runtime failure.
pub const EXIT_CONFIG: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_RUNTIME: i32 = 3;

#[derive(Debug)]
pub enum Error {
    /// The file does not parse or holds invalid values.
    Config { diagnostics: Vec<Diagnostic> },
    /// The configuration file could not be read.
    Io { path: PathBuf, source: io::Error },
    /// The configuration path is a directory, FIFO, device...
    NotAFile { path: PathBuf, kind: &'static str },
    /// The configuration file (or its directory) could be changed by
    /// someone other than root.
    Unsafe { path: PathBuf, reason: String },
    /// The pin directory is unusable.
    PinDir { path: PathBuf, msg: String, hint: String },
    /// Another daemon holds the pin directory.
    Busy { path: PathBuf, pid: Option<u32> },
    /// Attaching to or detaching from an interface failed.
    Attach { iface: String, errno: Option<i32>, msg: String, hint: String },
    /// The kernel refused something else (load, map update, ...).
    Kernel { what: String, errno: Option<i32>, hint: String },
    /// `status`: the kernel enforces less than the file asks.
    NotEnforced { path: PathBuf, missing: Vec<String> },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Io { .. } | Error::NotAFile { .. } | Error::Unsafe { .. } => EXIT_CONFIG,
            Error::PinDir { .. }
            | Error::Busy { .. }
            | Error::Attach { .. }
            | Error::Kernel { .. }
            | Error::NotEnforced { .. } => EXIT_RUNTIME,
        }
    }

    /// A kernel error from a libbpf-rs call; `what` says what was attempted.
    pub fn kernel(what: impl Into<String>, e: &libbpf_rs::Error, hint: impl Into<String>) -> Error {
        let errno = errno_of(e);
        Error::Kernel { what: format!("{}: {e}", what.into()), errno, hint: hint.into() }
    }

    /// A kernel error from a raw system call.
    pub fn kernel_io(what: impl Into<String>, e: &io::Error, hint: impl Into<String>) -> Error {
        Error::Kernel { what: format!("{}: {e}", what.into()), errno: e.raw_os_error(), hint: hint.into() }
    }
}

/// The errno inside a libbpf-rs error. libbpf-rs keeps the `io::Error`
/// private and only shows it in the message ("... (os error 22)").
pub fn errno_of(e: &libbpf_rs::Error) -> Option<i32> {
    let text = format!("{e:#}");
    let at = text.rfind("os error ")? + "os error ".len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { diagnostics } => {
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
            Error::Io { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())?;
                if source.kind() == io::ErrorKind::NotFound {
                    write!(f, "\nhint: create it (see icmpguard.toml(5)) or pass another file with -c")?;
                } else if source.kind() == io::ErrorKind::PermissionDenied {
                    write!(f, "\nhint: run as root, or make the file readable")?;
                }
                Ok(())
            }
            Error::NotAFile { path, kind } => {
                write!(f, "{}: is {kind}, not a configuration file\nhint: pass the file itself with -c", path.display())
            }
            Error::Unsafe { path, reason } => write!(
                f,
                "{}: refusing a configuration that someone other than root could change: it {reason}",
                path.display()
            ),
            Error::PinDir { path, msg, hint } => write!(f, "pin_dir {}: {msg}\nhint: {hint}", path.display()),
            Error::Busy { path, pid } => {
                write!(f, "pin_dir {}: another icmpguard daemon", path.display())?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(
                    f,
                    " is using it\nhint: stop it first (`systemctl stop icmpguard`), or give this one its own pin_dir"
                )
            }
            Error::Attach { iface, errno, msg, hint } => {
                write!(f, "interface {iface}: {msg}")?;
                if let Some(n) = errno {
                    write!(f, " (errno {n})")?;
                }
                write!(f, "\nhint: {hint}")
            }
            Error::NotEnforced { path, missing } => {
                write!(f, "the kernel does not enforce everything {} asks:", path.display())?;
                for m in missing {
                    write!(f, "\n  {m}")?;
                }
                write!(f, "\nhint: the daemon retries what is not guarded every second and logs why (`journalctl -u icmpguard`)")
            }
            Error::Kernel { what, errno, hint } => {
                write!(f, "{what}")?;
                if let Some(n) = errno {
                    write!(f, " (errno {n})")?;
                }
                if !hint.is_empty() {
                    write!(f, "\nhint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
