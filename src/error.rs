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
    /// A call into the kernel (through libbpf, or a system call) failed:
    /// what was attempted, the errno of that call, the error itself.
    Kernel { what: String, errno: Option<i32>, hint: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// The running kernel lacks what icmpguard cannot do without.
    Unsupported { what: String, hint: String },
    /// A state that is a bug, a broken build or damaged pins, not the
    /// operator's doing; the hint says what to do (by default: report it).
    Internal { what: String, hint: String },
    /// Writing the output of a command failed.
    Output { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
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
            | Error::Unsupported { .. }
            | Error::Internal { .. }
            | Error::Output { .. }
            | Error::NotEnforced { .. } => EXIT_RUNTIME,
        }
    }

    /// A failed libbpf-rs call; `what` says what was attempted. libbpf sets
    /// errno on every failure and libbpf-rs keeps the number to itself, so
    /// it is read here, before anything else can fail: call this at once.
    pub fn kernel(what: impl Into<String>, e: libbpf_rs::Error, hint: impl Into<String>) -> Error {
        let errno = io::Error::last_os_error().raw_os_error().filter(|n| *n != 0);
        Error::Kernel { what: what.into(), errno, hint: hint.into(), source: Box::new(e) }
    }

    /// A failed system call.
    pub fn kernel_io(what: impl Into<String>, e: io::Error, hint: impl Into<String>) -> Error {
        Error::Kernel { what: what.into(), errno: e.raw_os_error(), hint: hint.into(), source: Box::new(e) }
    }

    /// The errno of the call that failed, where there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } | Error::Attach { errno, .. } => *errno,
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
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
            Error::Kernel { what, errno, hint, source } => {
                write!(f, "{what}: {source}")?;
                if let Some(n) = errno {
                    write!(f, " (errno {n})")?;
                }
                if !hint.is_empty() {
                    write!(f, "\nhint: {hint}")?;
                }
                Ok(())
            }
            Error::Unsupported { what, hint } => write!(f, "{what}\nhint: {hint}"),
            Error::Internal { what, hint } if hint.is_empty() => {
                write!(f, "{what}\nhint: this is a bug of icmpguard or of its build; please report it")
            }
            Error::Internal { what, hint } => write!(f, "{what}\nhint: {hint}"),
            Error::Output { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Kernel { source, .. } | Error::Output { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_system_call_keeps_its_errno_and_its_source() {
        let e = Error::kernel_io("pinning a map", io::Error::from_raw_os_error(13), "run as root");
        assert_eq!(e.errno(), Some(13));
        assert_eq!(e.exit_code(), EXIT_RUNTIME);
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), io::Error::from_raw_os_error(13).to_string());
        assert!(e
            .to_string()
            .starts_with("pinning a map: Permission denied (os error 13) (errno 13)\nhint: run as root"));
    }

    #[test]
    fn a_failed_libbpf_call_takes_the_errno_the_call_left() {
        // A call that fails with EBADF, as libbpf's do: errno is set.
        let _ = nix::unistd::close(-1);
        let e = Error::kernel("opening a map", libbpf_rs::Error::from_raw_os_error(9), "");
        assert_eq!(e.errno(), Some(9));
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn output_and_internal_errors_are_runtime_failures_with_a_hint() {
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let e = Error::Output { what: "encoding the status as JSON", source: Box::new(json) };
        assert_eq!(e.exit_code(), EXIT_RUNTIME);
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::Internal { what: "no .rodata".into(), hint: String::new() };
        assert!(e.to_string().contains("hint: this is a bug"), "{e}");
    }
}
