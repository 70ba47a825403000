//! RFC 3164 lines to the local syslog socket, reconnecting after the
//! syslog daemon restarts, and falling back to stderr while there is none.
//!
//! Lines go through a bounded queue to a writer thread that owns the
//! socket. The queue takes memory as lines come (a channel of blocks), not
//! all of its room at start: a 65536-slot array channel is 2.6 MB written
//! before the first line, a few milliseconds of page faults on every
//! start. The daemon's loop never waits for syslog: when the queue is full
//! a line is counted as refused (and reported in the next summary), never
//! waited for. The writer waits for the syslog daemon as long as it takes
//! to make room (up to a timeout per line), so bursts are forwarded at the
//! rate the sink can take.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
/// Lines waiting for the writer at most.
const QUEUE: usize = 65536;
/// How long the writer waits for a stalled syslog daemon to take one line.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long stopping waits for queued lines to be written.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(Severity, String),
    Reconfigure(PathBuf, Facility),
}

/// The daemon's end: cheap, never blocking.
pub struct Syslog {
    tx: Option<Sender<Msg>>,
    /// Lines sent and not yet taken by the writer (at most [`QUEUE`]).
    queued: Arc<AtomicUsize>,
    worker: Option<JoinHandle<()>>,
    /// Lines refused since the last report (queue full, or a stalled
    /// syslog daemon).
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Also write every line to stderr (a terminal is watching).
    mirror: bool,
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

fn to_stderr(sev: Severity, msg: &str) {
    let _ = writeln!(io::stderr().lock(), "icmpguard: {}: {msg}", sev.label());
}

impl Syslog {
    pub fn new(socket: &Path, facility: Facility, mirror: bool) -> Syslog {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writer = Writer {
            socket: socket.to_path_buf(),
            facility,
            logger: None,
            last_attempt: Instant::now(),
            mirror,
            dropped: Arc::clone(&dropped),
            queued: Arc::clone(&queued),
            stop: Arc::clone(&stop),
        };
        if let Err(e) = writer.reconnect() {
            to_stderr(
                Severity::Warning,
                &format!("syslog socket {} unavailable ({e}); logging to stderr until it returns", socket.display()),
            );
        }
        let worker = std::thread::Builder::new().name("syslog".into()).spawn(move || writer.run(rx)).ok();
        Syslog { tx: worker.is_some().then_some(tx), queued, worker, dropped, stop, mirror }
    }

    /// Queues one line; never blocks, never fails. Returns false when the
    /// line was refused (the queue is full: syslog cannot keep up).
    pub fn log(&mut self, sev: Severity, msg: &str) -> bool {
        if self.mirror {
            to_stderr(sev, msg);
        }
        let Some(tx) = &self.tx else {
            // No writer thread could be started: stderr it is.
            if !self.mirror {
                to_stderr(sev, msg);
            }
            return true;
        };
        // Counted before it is sent, so that the writer never takes a line
        // it was not counted for. Only this thread adds.
        if self.queued.fetch_add(1, Ordering::AcqRel) < QUEUE && tx.send(Msg::Line(sev, msg.to_string())).is_ok() {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Lines refused since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// A line refused and then not counted after all (a summary line that
    /// is retried: it is not an event).
    pub fn forget_one_dropped(&self) {
        let _ = self.dropped.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// Points at another socket or facility (after a reload).
    pub fn reconfigure(&mut self, socket: &Path, facility: Facility) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reconfigure(socket.to_path_buf(), facility));
        }
    }
}

impl Drop for Syslog {
    /// Writes what is queued (for a moment at most), then stops the writer.
    fn drop(&mut self) {
        drop(self.tx.take());
        let deadline = Instant::now() + FLUSH_ON_EXIT;
        if let Some(worker) = self.worker.take() {
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.stop.store(true, Ordering::Relaxed);
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
    }
}

/// The writer thread's end: owns the connection.
struct Writer {
    socket: PathBuf,
    facility: Facility,
    logger: Option<Logger<LoggerBackend, Formatter3164>>,
    last_attempt: Instant,
    mirror: bool,
    dropped: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

fn connect(socket: &Path, fac: Facility) -> io::Result<Logger<LoggerBackend, Formatter3164>> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(socket)?;
    // Blocking, so that a burst waits for the syslog daemon to make room;
    // bounded, so that a stalled one cannot hold the writer forever.
    sock.set_write_timeout(Some(SEND_TIMEOUT))?;
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

fn timed_out(e: &syslog::Error) -> bool {
    match e {
        syslog::Error::Io(io) | syslog::Error::Write(io) => {
            matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        }
        _ => false,
    }
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(RETRY) {
                Ok(Msg::Line(sev, msg)) => {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    self.write(sev, &msg);
                }
                Ok(Msg::Reconfigure(socket, facility)) => {
                    if socket != self.socket || facility != self.facility {
                        self.socket = socket;
                        self.facility = facility;
                        self.logger = None;
                        let _ = self.reconnect();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.tick(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.last_attempt = Instant::now();
        self.logger = Some(connect(&self.socket, self.facility)?);
        Ok(())
    }

    fn write(&mut self, sev: Severity, msg: &str) {
        if self.logger.is_none() && self.last_attempt.elapsed() >= RETRY && self.reconnect().is_ok() {
            self.announce_reconnect();
        }
        let Some(logger) = self.logger.as_mut() else {
            if !self.mirror {
                to_stderr(sev, msg);
            }
            return;
        };
        match send(logger, sev, msg) {
            Ok(()) => {}
            Err(e) if timed_out(&e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // The syslog daemon restarted (new socket) or went away: one
                // immediate reconnection, then stderr until it is back.
                let retried = self.reconnect().ok().and_then(|()| self.logger.as_mut().map(|l| send(l, sev, msg)));
                match retried {
                    Some(Ok(())) => {}
                    Some(Err(e)) if timed_out(&e) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        self.logger = None;
                        if !self.mirror {
                            to_stderr(
                                Severity::Warning,
                                &format!(
                                    "syslog socket {} unavailable; logging to stderr until it returns",
                                    self.socket.display()
                                ),
                            );
                            to_stderr(sev, msg);
                        }
                    }
                }
            }
        }
    }

    /// While the queue is quiet: reconnects once syslog is back.
    fn tick(&mut self) {
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
            to_stderr(Severity::Notice, &msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syslog daemon that takes nothing: the writer blocks on its first
    /// lines, the queue fills, and what comes past QUEUE is refused and
    /// counted, never waited for.
    #[test]
    fn a_stalled_sink_fills_the_queue_and_the_rest_is_refused_and_counted() {
        let dir = std::env::temp_dir().join(format!("icmpguard-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let _sink = UnixDatagram::bind(&path).expect("bind the sink");
        let mut log = Syslog::new(&path, Facility::Daemon, false);
        let extra = 5000;
        let started = Instant::now();
        let accepted = (0..QUEUE + extra).filter(|i| log.log(Severity::Info, &format!("line {i}"))).count();
        let refused = log.take_dropped();
        assert!(started.elapsed() < SEND_TIMEOUT, "logging waited for the sink: {:?}", started.elapsed());
        assert_eq!(accepted as u64 + refused, (QUEUE + extra) as u64);
        // The writer took what the socket buffer holds, and one more that it
        // is blocked on: far fewer than `extra`.
        assert!(refused > 0 && accepted >= QUEUE, "accepted {accepted}, refused {refused}");
        log.stop.store(true, Ordering::Relaxed);
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
