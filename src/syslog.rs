//! RFC 3164 lines to the local syslog socket, reconnecting after the
//! syslog daemon restarts, and falling back to stderr while there is none.
//!
//! Nothing here ever blocks the daemon: the socket is non-blocking, and a
//! line the syslog daemon has no room for is counted, not waited for.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use syslog::{Formatter3164, Logger, LoggerBackend};

use crate::config::Facility;

/// The severities icmpguard uses (RFC 3164 section 4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Err,
    Warning,
    Notice,
    Info,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Err => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
        }
    }
}

/// How long to wait between reconnection attempts while syslog is gone.
const RETRY: Duration = Duration::from_secs(1);
/// How long, in total per second, the daemon may wait for a busy syslog
/// daemon to make room (a burst of lines overflows a socket queue of ten
/// datagrams); past that, lines are counted as refused, never waited for.
const PATIENCE_PER_SECOND: Duration = Duration::from_millis(100);
const PATIENCE_PER_LINE: Duration = Duration::from_millis(20);

pub struct Syslog {
    socket: PathBuf,
    facility: Facility,
    logger: Option<Logger<LoggerBackend, Formatter3164>>,
    last_attempt: Instant,
    /// Also write every line to stderr (a terminal is watching).
    mirror: bool,
    /// Lines the syslog daemon had no room for, since the last report.
    pub dropped: u64,
    /// Time spent waiting for room in the current second.
    waited: Duration,
    wait_window: Instant,
}

fn facility(f: Facility) -> syslog::Facility {
    use syslog::Facility as S;
    match f {
        Facility::Kern => S::LOG_KERN,
        Facility::User => S::LOG_USER,
        Facility::Mail => S::LOG_MAIL,
        Facility::Daemon => S::LOG_DAEMON,
        Facility::Auth => S::LOG_AUTH,
        Facility::Syslog => S::LOG_SYSLOG,
        Facility::Lpr => S::LOG_LPR,
        Facility::News => S::LOG_NEWS,
        Facility::Uucp => S::LOG_UUCP,
        Facility::Cron => S::LOG_CRON,
        Facility::Authpriv => S::LOG_AUTHPRIV,
        Facility::Ftp => S::LOG_FTP,
        Facility::Local0 => S::LOG_LOCAL0,
        Facility::Local1 => S::LOG_LOCAL1,
        Facility::Local2 => S::LOG_LOCAL2,
        Facility::Local3 => S::LOG_LOCAL3,
        Facility::Local4 => S::LOG_LOCAL4,
        Facility::Local5 => S::LOG_LOCAL5,
        Facility::Local6 => S::LOG_LOCAL6,
        Facility::Local7 => S::LOG_LOCAL7,
    }
}

fn connect(socket: &Path, fac: Facility) -> io::Result<Logger<LoggerBackend, Formatter3164>> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(socket)?;
    sock.set_nonblocking(true)?;
    let formatter =
        Formatter3164 { facility: facility(fac), hostname: None, process: "icmpguard".into(), pid: std::process::id() };
    Ok(Logger::new(LoggerBackend::Unix(sock), formatter))
}

fn send(logger: &mut Logger<LoggerBackend, Formatter3164>, sev: Severity, msg: &str) -> Result<(), syslog::Error> {
    match sev {
        Severity::Err => logger.err(msg),
        Severity::Warning => logger.warning(msg),
        Severity::Notice => logger.notice(msg),
        Severity::Info => logger.info(msg),
    }
}

fn would_block(e: &syslog::Error) -> bool {
    match e {
        syslog::Error::Io(io) | syslog::Error::Write(io) => io.kind() == io::ErrorKind::WouldBlock,
        _ => false,
    }
}

impl Syslog {
    pub fn new(socket: &Path, facility: Facility, mirror: bool) -> Syslog {
        let mut s = Syslog {
            socket: socket.to_path_buf(),
            facility,
            logger: None,
            last_attempt: Instant::now(),
            mirror,
            dropped: 0,
            waited: Duration::ZERO,
            wait_window: Instant::now(),
        };
        if let Err(e) = s.reconnect() {
            s.to_stderr(
                Severity::Warning,
                &format!("syslog socket {} unavailable ({e}); logging to stderr until it returns", socket.display()),
            );
        }
        s
    }

    pub fn is_connected(&self) -> bool {
        self.logger.is_some()
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.last_attempt = Instant::now();
        self.logger = Some(connect(&self.socket, self.facility)?);
        Ok(())
    }

    /// Points at another socket or facility (after a reload).
    pub fn reconfigure(&mut self, socket: &Path, facility: Facility) {
        if socket != self.socket || facility != self.facility {
            self.socket = socket.to_path_buf();
            self.facility = facility;
            self.logger = None;
            let _ = self.reconnect();
        }
    }

    fn to_stderr(&self, sev: Severity, msg: &str) {
        let _ = writeln!(io::stderr().lock(), "icmpguard: {}: {msg}", sev.label());
    }

    /// Logs one line; never blocks, never fails. Returns false when the
    /// line was dropped (the syslog daemon had no room for it).
    pub fn log(&mut self, sev: Severity, msg: &str) -> bool {
        if self.mirror {
            self.to_stderr(sev, msg);
        }
        if self.logger.is_none() && self.last_attempt.elapsed() >= RETRY && self.reconnect().is_ok() {
            self.announce_reconnect();
        }
        let Some(logger) = self.logger.as_mut() else {
            if !self.mirror {
                self.to_stderr(sev, msg);
            }
            return true;
        };
        match send(logger, sev, msg) {
            Ok(()) => true,
            Err(e) if would_block(&e) => {
                if !(self.wait_for_room() && self.logger.as_mut().is_some_and(|l| send(l, sev, msg).is_ok())) {
                    self.dropped += 1;
                    return false;
                }
                true
            }
            Err(_) => {
                // The syslog daemon restarted (new socket) or went away: one
                // immediate reconnection, then stderr until it is back.
                let retried = self.reconnect().ok().and_then(|()| self.logger.as_mut().map(|l| send(l, sev, msg)));
                match retried {
                    Some(Ok(())) => true,
                    Some(Err(e)) if would_block(&e) => {
                        self.dropped += 1;
                        false
                    }
                    _ => {
                        self.logger = None;
                        if !self.mirror {
                            self.to_stderr(
                                Severity::Warning,
                                &format!(
                                    "syslog socket {} unavailable; logging to stderr until it returns",
                                    self.socket.display()
                                ),
                            );
                            self.to_stderr(sev, msg);
                        }
                        true
                    }
                }
            }
        }
    }

    /// Waits a little for the syslog socket to have room, within the
    /// per-second allowance; whether it has room now.
    fn wait_for_room(&mut self) -> bool {
        if self.wait_window.elapsed() >= Duration::from_secs(1) {
            self.wait_window = Instant::now();
            self.waited = Duration::ZERO;
        }
        let Some(budget) = PATIENCE_PER_SECOND.checked_sub(self.waited) else { return false };
        let wait = budget.min(PATIENCE_PER_LINE);
        let Some(LoggerBackend::Unix(sock)) = self.logger.as_ref().map(|l| &l.backend) else { return false };
        let started = Instant::now();
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
        let ready = poll(&mut fds, PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO)).unwrap_or(0) > 0;
        self.waited += started.elapsed();
        ready
    }

    /// Called periodically: reconnects once syslog is back.
    pub fn tick(&mut self) {
        if self.logger.is_none() && self.last_attempt.elapsed() >= RETRY && self.reconnect().is_ok() {
            self.announce_reconnect();
        }
    }

    fn announce_reconnect(&mut self) {
        let msg = format!("syslog socket {} is back; logging there again", self.socket.display());
        if let Some(l) = self.logger.as_mut() {
            let _ = send(l, Severity::Notice, &msg);
        }
        if !self.mirror {
            self.to_stderr(Severity::Notice, &msg);
        }
    }
}
