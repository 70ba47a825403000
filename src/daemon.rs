//! `icmpguard run`: the loop. One place waits on everything (signals, file
//! changes, the ring buffer, a timer) and hands each to a named function.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::addr::{Family, Prefix};
use crate::config::{Config, List, Strictness};
use crate::error::{Error, Result};
use crate::events::{self, Event, KernelLosses, RateLimiter, Reason, Suppressed};
use crate::kernel::{self, Applied, Filter, Level};
use crate::metrics;
use crate::restart;
use crate::sd_notify;
use crate::syslog::{Severity, Syslog};
use crate::watch::{Debounce, Stamp, Watch};

/// How often the loop wakes without cause: drain events queued without a
/// wakeup, report losses, retry missing interfaces.
const TICK: Duration = Duration::from_millis(250);
const SECOND: Duration = Duration::from_secs(1);
/// How often the metrics file is rewritten besides after each reload.
const METRICS_EVERY: Duration = Duration::from_secs(15);
/// How long the file may be missing before a reload reports it: some
/// tools delete the file and create a new one.
const MISSING_GRACE: Duration = Duration::from_secs(1);

const WAKE_SIGNAL: u64 = 1;
const WAKE_RING: u64 = 2;
const WAKE_WATCH: u64 = 3;

struct Signals {
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    /// Readable whenever a signal arrived.
    pipe: UnixStream,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&term))?;
            signal_hook::low_level::pipe::register(sig, writer.try_clone()?)?;
        }
        signal_hook::flag::register(SIGHUP, Arc::clone(&hup))?;
        signal_hook::low_level::pipe::register(SIGHUP, writer)?;
        Ok(Signals { term, hup, pipe: reader })
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.pipe.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// Everything the loop owns.
struct Daemon {
    config: Config,
    filter: Filter,
    syslog: Syslog,
    limiter: RateLimiter,
    losses: KernelLosses,
    /// Losses not yet reported in a summary line: over rate_limit, over the
    /// in-kernel budget, ring buffer full, refused by syslog.
    unreported: Suppressed,
    ifnames: HashMap<u32, String>,
    last_second: Instant,
    watch: Option<Watch>,
    debounce: Debounce,
    /// The version of the file last read, valid or not (`None`: missing).
    stamp: Option<Stamp>,
    /// The versions of the fragments last read.
    fragment_stamps: Vec<(std::ffi::OsString, Option<Stamp>)>,
    missing_since: Option<Instant>,
    /// Entries of the file whose `until` has passed: no longer enforced.
    expired: BTreeSet<(List, Prefix)>,
    /// Events held back over `[events] rate_limit`, since the start.
    rate_limited_total: u64,
    metrics_written: Option<Instant>,
    /// The last failure to write the metrics file, reported once.
    metrics_problem: Option<String>,
    /// Started on the restart record: `config` lacks the main file's block
    /// list until [`Daemon::verify_adopted`] reads the file whole.
    lists_unread: bool,
    /// The last failure to write the restart record, reported once.
    record_problem: Option<String>,
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<()> {
    let stamp = Stamp::of(config_path);
    let fragment_stamps = Stamp::of_dir(&crate::config::fragment_dir(config_path));
    // The same files as the last daemon applied: their settings, without
    // reading the block list yet (see crate::restart).
    let recorded = restart::files(config_path, stamp, &fragment_stamps)
        .and_then(|files| restart::read(config_path).filter(|r| r.files == files))
        .and_then(|r| Some((Config::load_around(config_path, r.cut).ok()??, r.digest)));
    let (mut config, warnings, on_record) = match recorded {
        Some((config, digest)) => (config, Vec::new(), Some(digest)),
        None => {
            let loaded = Config::load(config_path, Strictness::Enforce)?;
            (loaded.config, loaded.warnings, None)
        }
    };
    let mirror = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
    let mut syslog = Syslog::new(&config.syslog.socket, config.syslog.facility, mirror);
    for w in &warnings {
        syslog.log(Severity::Warning, w);
    }
    let signals = Signals::install().map_err(|e| Error::kernel_io("installing signal handlers", e, ""))?;
    let watch = match Watch::new(&config.path) {
        Ok(w) => Some(w),
        Err(e) => {
            syslog.log(Severity::Warning, &format!("{e}; changes are noticed once a second and on SIGHUP"));
            None
        }
    };

    syslog.log(Severity::Info, &kernel::probe::facilities().describe());
    kernel::probe::require()?;
    if let Some(w) = kernel::probe::memlock_warning() {
        syslog.log(Severity::Warning, &w);
    }
    if kernel::mount_bpffs_if_missing(&config.pin_dir)? {
        let line = format!(
            "mounted a bpffs at {} (nothing was mounted there) for pin_dir {}",
            kernel::pins::BPFFS_MOUNT,
            config.pin_dir.display()
        );
        syslog.log(Severity::Notice, &line);
    }
    let pins = Filter::lock_pins(&config.pin_dir)?;
    let (filter, applied, lists_unread) = {
        let mut log = |level: Level, msg: String| {
            syslog.log(severity(level), &msg);
        };
        let adopted = match on_record {
            Some(digest) => Filter::start_on_record(pins, digest, &config.desired(), &mut log)?,
            None => Err(pins),
        };
        match adopted {
            Ok((filter, applied)) => (filter, applied, true),
            Err(pins) => {
                if on_record.is_some() {
                    // Not on the record after all: this config has no block
                    // list yet, and must not be enforced.
                    let loaded = Config::load(config_path, Strictness::Enforce)?;
                    for w in loaded.warnings {
                        log(Level::Warning, w);
                    }
                    config = loaded.config;
                }
                let (filter, applied) = Filter::start(pins, &config.desired(), &mut log)?;
                (filter, applied, false)
            }
        }
    };
    let expired = expired_now(&config);
    // Losses are reported from now on; the counters carry over migrations.
    let mut losses = KernelLosses::default();
    losses.delta(&filter.counters());
    let mut d = Daemon {
        filter,
        syslog,
        limiter: RateLimiter::new(config.events.rate_limit, Instant::now()),
        losses,
        unreported: Suppressed::default(),
        ifnames: HashMap::new(),
        last_second: Instant::now(),
        config,
        watch,
        debounce: Debounce::default(),
        stamp,
        fragment_stamps,
        missing_since: None,
        expired,
        rate_limited_total: 0,
        metrics_written: None,
        metrics_problem: None,
        lists_unread,
        record_problem: None,
    };
    let (severity, line) = d.started_line(&applied);
    d.syslog.log(severity, &line);
    sd_notify::ready();
    let result = d.verify_adopted().and_then(|()| {
        d.write_metrics();
        // What the parse and the fill freed leaves the RSS.
        kernel::sys::release_free_heap();
        d.event_loop(signals)
    });
    sd_notify::stopping();
    d.filter.release();
    let line = format!(
        "stopping: the filter stays attached ({} entries); `icmpguard unload` removes it",
        d.filter.rules().len()
    );
    d.syslog.log(Severity::Info, &line);
    result
}

/// The entries of `config` whose `until` has passed.
fn expired_now(config: &Config) -> BTreeSet<(List, Prefix)> {
    config.expired_at(SystemTime::now()).into_iter().map(|(l, p, _)| (l, p)).collect()
}

/// The policy in a few words, for the start and reload lines.
fn policy_summary(config: &Config) -> String {
    let mut parts = vec![format!("icmp = {}", quoted_policy(config))];
    if !config.allow.is_empty() {
        parts.push(format!("{} allowed", config.allow.len()));
    }
    if config.limit.echo > 0 {
        parts.push(format!("limit {} echo/s per source, burst {}", config.limit.echo, config.limit.burst));
    }
    if config.dry_run {
        parts.push("DRY RUN: nothing is dropped".to_string());
    }
    parts.join(", ")
}

fn quoted_policy(config: &Config) -> String {
    match config.icmp {
        crate::plan::IcmpPolicy::Types(_) => config.icmp.to_string(),
        other => format!("\"{other}\""),
    }
}

/// The syslog severity of a kernel-side message.
fn severity(level: Level) -> Severity {
    match level {
        Level::Err => Severity::Err,
        Level::Warning => Severity::Warning,
        Level::Notice => Severity::Notice,
        Level::Info => Severity::Info,
    }
}

impl Daemon {
    /// Where the filter enforces, per interface and direction; a warning
    /// when anything the file names is not guarded (the daemon retries it
    /// every second and logs each attempt's error once).
    fn describe_interfaces(&self) -> (Severity, String) {
        if self.config.interfaces.is_empty() {
            return (Severity::Info, "no interface (nothing is filtered until `interfaces` names one)".into());
        }
        let names: Vec<&str> = self.config.interfaces.iter().map(|i| i.name()).collect();
        let (text, all) = self.filter.coverage(&names);
        if all {
            (Severity::Info, text)
        } else {
            (Severity::Warning, format!("{text} (retrying what is not guarded every second)"))
        }
    }

    fn started_line(&self, applied: &Applied) -> (Severity, String) {
        let (severity, where_) = self.describe_interfaces();
        let parts = applied.parts.map_or(String::new(), |p| {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            format!(
                ": map creation {:.1}, load and verify {:.1}, fill {:.1}, attach {:.1}",
                ms(p.maps),
                ms(p.load),
                ms(p.fill),
                ms(p.attach)
            )
        });
        let line = format!(
            "started: {} entries enforced on {where_} ({} ms{parts}); {}",
            applied.enforced,
            applied.elapsed.as_millis(),
            policy_summary(&self.config)
        );
        (self.policy_severity(severity), line)
    }

    /// Reads back and verifies maps adopted on the record (the file is the
    /// one they last applied), right after READY=1 and before anything
    /// else; what someone changed in them meanwhile is repaired and logged.
    /// Started on the restart record, it first reads the file whole: a file
    /// that no longer reads is an error (the filter stays as adopted).
    fn verify_adopted(&mut self) -> Result<()> {
        let started = Instant::now();
        if std::mem::take(&mut self.lists_unread) {
            let loaded = Config::load(&self.config.path, Strictness::Enforce)?;
            for w in &loaded.warnings {
                self.syslog.log(Severity::Warning, w);
            }
            self.config = loaded.config;
            self.expired = expired_now(&self.config);
        }
        let verified = {
            let syslog = &mut self.syslog;
            let mut log = |level: Level, msg: String| {
                syslog.log(severity(level), &msg);
            };
            self.filter.verify(&self.config.desired(), &mut log)?
        };
        // Every start comes here, on the record or not.
        self.remember();
        let Some(v) = verified else {
            return Ok(());
        };
        let ms = started.elapsed().as_millis();
        let a = &v.applied;
        if v.drift() {
            let settings = if v.settings_repaired { ", settings rewritten" } else { "" };
            let line = format!(
                "verified: the pinned maps had changed since this file was applied (+{} -{} entries{settings}); repaired, {} entries enforced ({ms} ms)",
                a.added, a.removed, a.enforced
            );
            self.syslog.log(Severity::Warning, &line);
        } else {
            let line = format!("verified: the pinned maps hold this file's {} entries ({ms} ms)", a.enforced);
            self.syslog.log(Severity::Info, &line);
        }
        Ok(())
    }

    /// Notes in the restart record the state just applied: the versions of
    /// the files read, where the block list lies, the maps' digest (see
    /// crate::restart). Without a list the fast scanner read, no record.
    fn remember(&mut self) {
        let path = self.config.path.clone();
        let digest = self.filter.meta().applied_digest;
        let files = restart::files(&path, self.stamp, &self.fragment_stamps);
        let (Some(cut), Some(files), true) = (self.config.block_span.clone(), files, digest != 0) else {
            restart::remove(&path);
            return;
        };
        match restart::write(&path, &restart::Record { files, cut, digest }) {
            Ok(()) => self.record_problem = None,
            Err(e) => {
                let problem = format!(
                    "cannot write the restart record in {} ({e}); a restart reads the whole file before it is ready",
                    restart::dir().unwrap_or_default().display()
                );
                if self.record_problem.as_ref() != Some(&problem) {
                    self.syslog.log(Severity::Warning, &problem);
                    self.record_problem = Some(problem);
                }
            }
        }
    }

    /// A dry run is worth more than an info line: nothing is dropped.
    fn policy_severity(&self, severity: Severity) -> Severity {
        match severity {
            Severity::Info if self.config.dry_run => Severity::Notice,
            other => other,
        }
    }

    fn event_loop(&mut self, mut signals: Signals) -> Result<()> {
        let io = |what: &str, e: nix::errno::Errno| Error::kernel_io(what, std::io::Error::from(e), "");
        // One pass of the outer loop per generation of maps: its ring buffer.
        loop {
            let queue: Rc<RefCell<Vec<Event>>> = Rc::default();
            let ring = self.build_ring(&queue)?;
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| io("creating an epoll instance", e))?;
            epoll
                .add(signals.pipe.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE_SIGNAL))
                .map_err(|e| io("watching the signal pipe", e))?;
            epoll
                .add(kernel::sys::ring_fd(&ring), EpollEvent::new(EpollFlags::EPOLLIN, WAKE_RING))
                .map_err(|e| io("watching the ring buffer", e))?;
            if let Some(w) = &self.watch {
                epoll
                    .add(w.wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE_WATCH))
                    .map_err(|e| io("watching for file changes", e))?;
            }

            let mut ready = [EpollEvent::empty(); 4];
            loop {
                let wait =
                    self.debounce.deadline().map_or(TICK, |d| d.saturating_duration_since(Instant::now()).min(TICK));
                let timeout = EpollTimeout::try_from(wait).unwrap_or(EpollTimeout::NONE);
                match epoll.wait(&mut ready, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(io("waiting for events", e)),
                }
                signals.drain();
                self.drain_ring(&ring, &queue);
                if signals.term.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Some(w) = self.watch.as_mut() {
                    w.drain_into(&mut self.debounce, Instant::now());
                }
                let migrated = if signals.hup.swap(false, Ordering::Relaxed) {
                    self.debounce = Debounce::default();
                    self.reload()
                } else if self.debounce.take_due(Instant::now()) {
                    self.reload_changed_file()
                } else {
                    false
                };
                self.tick();
                let migrated = migrated || self.expire();
                if migrated {
                    // The old ring buffer belongs to the retired programs:
                    // drain what they queued, then listen to the new one.
                    self.drain_ring(&ring, &queue);
                    break;
                }
            }
        }
    }

    fn build_ring<'a>(&self, queue: &Rc<RefCell<Vec<Event>>>) -> Result<libbpf_rs::RingBuffer<'a>> {
        let sink = Rc::clone(queue);
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        builder
            .add(self.filter.events(), move |bytes: &[u8]| {
                if let Some(e) = Event::decode(bytes) {
                    sink.borrow_mut().push(e);
                }
                0
            })
            .map_err(|e| Error::kernel("opening the event ring buffer", e, ""))?;
        builder.build().map_err(|e| Error::kernel("opening the event ring buffer", e, ""))
    }

    fn drain_ring(&mut self, ring: &libbpf_rs::RingBuffer<'_>, queue: &Rc<RefCell<Vec<Event>>>) {
        let _ = ring.consume();
        let batch = std::mem::take(&mut *queue.borrow_mut());
        let now = Instant::now();
        for e in batch {
            if self.limiter.admit(now) {
                let iface = self.iface_name(e.ifindex);
                let list = match e.reason {
                    Reason::Allow => Some(List::Allow),
                    Reason::Block => Some(List::Block),
                    Reason::None | Reason::Limit => None,
                };
                let note = list.zip(e.rule).and_then(|(l, p)| self.config.note(l, &p));
                self.syslog.log(Severity::Info, &e.line_noted(&iface, note));
            }
        }
    }

    fn iface_name(&mut self, ifindex: u32) -> String {
        if !self.ifnames.contains_key(&ifindex) {
            for i in &self.config.interfaces {
                if let Ok(idx) = nix::net::if_::if_nametoindex(i.name()) {
                    self.ifnames.insert(idx, i.name().to_string());
                }
            }
        }
        self.ifnames.get(&ifindex).cloned().unwrap_or_else(|| format!("ifindex{ifindex}"))
    }

    /// A save was noticed and has settled: reload, unless the file has
    /// been missing for only a moment (it is being replaced).
    fn reload_changed_file(&mut self) -> bool {
        if Stamp::of(&self.config.path).is_none() {
            let since = *self.missing_since.get_or_insert_with(Instant::now);
            if since.elapsed() < MISSING_GRACE {
                self.debounce.event(Instant::now());
                return false;
            }
            if self.stamp.is_none() {
                // Already reported missing; nothing new.
                return false;
            }
        }
        self.reload()
    }

    /// Re-reads the file; on success applies the difference, on failure
    /// keeps everything as it is. Returns whether the maps were migrated.
    fn reload(&mut self) -> bool {
        sd_notify::reloading();
        self.stamp = Stamp::of(&self.config.path);
        self.fragment_stamps = Stamp::of_dir(&crate::config::fragment_dir(&self.config.path));
        if let Some(w) = self.watch.as_mut() {
            w.refresh();
        }
        if self.stamp.is_some() {
            self.missing_since = None;
        }
        let migrated = match Config::load(&self.config.path, Strictness::Enforce) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    self.syslog.log(Severity::Warning, w);
                }
                self.apply(loaded.config)
            }
            Err(e) => {
                self.refuse(&e);
                false
            }
        };
        sd_notify::ready();
        // What the parse and the fill freed leaves the RSS.
        kernel::sys::release_free_heap();
        self.write_metrics();
        migrated
    }

    fn refuse(&mut self, e: &Error) {
        let first = format!(
            "reload refused, still enforcing the previous blocklist ({} entries): {}",
            self.filter.rules().len(),
            match e {
                Error::Config { diagnostics } => diagnostics.first().map(|d| d.headline()).unwrap_or_default(),
                other => other.to_string().lines().next().unwrap_or_default().to_string(),
            }
        );
        self.syslog.log(Severity::Err, &first);
        if let Error::Config { diagnostics } = e {
            for d in diagnostics.iter().skip(1) {
                self.syslog.log(Severity::Err, &d.headline());
            }
        }
        let _ = self.filter.record_refused();
    }

    fn apply(&mut self, mut config: Config) -> bool {
        if config.pin_dir != self.config.pin_dir {
            self.syslog.log(
                Severity::Warning,
                &format!(
                    "pin_dir changed to {}: this takes a restart; keeping {}",
                    config.pin_dir.display(),
                    self.config.pin_dir.display()
                ),
            );
            config.pin_dir = self.config.pin_dir.clone();
        }
        self.syslog.reconfigure(&config.syslog.socket, config.syslog.facility);
        self.limiter.set_limit(config.events.rate_limit);
        let result = {
            let syslog = &mut self.syslog;
            let mut log = |level: Level, msg: String| {
                syslog.log(severity(level), &msg);
            };
            self.filter.reconcile(&config.desired(), &mut log)
        };
        self.config = config;
        // Entries that expired before this reload were named by its
        // warnings; from now on, each is logged as it expires.
        self.expired = expired_now(&self.config);
        self.ifnames.clear();
        match result {
            Ok(a) => {
                self.sync_interfaces();
                self.log_applied(&a);
                self.remember();
                a.new_capacity.is_some()
            }
            Err(e) => {
                self.syslog.log(Severity::Err, &format!("reload failed while applying: {e}"));
                false
            }
        }
    }

    fn log_applied(&mut self, a: &Applied) {
        let (severity, where_) = self.describe_interfaces();
        let mut line = format!(
            "reload: +{} -{} entries, {} enforced on {where_} ({} ms)",
            a.added,
            a.removed,
            a.enforced,
            a.elapsed.as_millis()
        );
        if let Some(capacity) = a.new_capacity {
            line.push_str(&format!("; moved to new maps for {capacity} entries"));
        }
        line.push_str("; ");
        line.push_str(&policy_summary(&self.config));
        let severity = self.policy_severity(severity);
        self.syslog.log(severity, &line);
    }

    fn sync_interfaces(&mut self) {
        let syslog = &mut self.syslog;
        let mut log = |level: Level, msg: String| {
            syslog.log(severity(level), &msg);
        };
        // Only where to hook: not the entries, which an expired one would
        // make a copy of every second.
        let interfaces: Vec<String> = self.config.interfaces.iter().map(|i| i.name().to_string()).collect();
        self.filter.sync_interfaces(&interfaces, self.config.mode, &mut log);
    }

    /// Stops enforcing the entries whose `until` has passed (and enforces
    /// again those the clock, set back, brought back before their `until`),
    /// without a change of the file. Returns whether the maps migrated.
    fn expire(&mut self) -> bool {
        let now = SystemTime::now();
        let expired_now = self.config.expired_at(now);
        let set: BTreeSet<(List, Prefix)> = expired_now.iter().map(|(l, p, _)| (*l, *p)).collect();
        if set == self.expired {
            return false;
        }
        for (list, p, meta) in &expired_now {
            if self.expired.contains(&(*list, *p)) {
                continue;
            }
            let what = if *list == List::Allow { format!("allow {p}") } else { p.to_string() };
            let line = match &meta.note {
                Some(n) => format!("expired: {what} ({n})"),
                None => format!("expired: {what}"),
            };
            self.syslog.log(Severity::Notice, &line);
        }
        for (list, p) in self.expired.difference(&set) {
            let what = if *list == List::Allow { format!("allow {p}") } else { p.to_string() };
            self.syslog
                .log(Severity::Warning, &format!("enforced again: {what} (the clock was set back before its until)"));
        }
        self.expired = set;
        let result = {
            let syslog = &mut self.syslog;
            let mut log = |level: Level, msg: String| {
                syslog.log(severity(level), &msg);
            };
            self.filter.reconcile(&self.config.desired_at(now), &mut log)
        };
        let migrated = match result {
            Ok(a) => {
                self.log_applied(&a);
                self.remember();
                a.new_capacity.is_some()
            }
            Err(e) => {
                self.syslog.log(Severity::Err, &format!("applying an expiry failed: {e}"));
                false
            }
        };
        self.write_metrics();
        migrated
    }

    /// Writes the metrics file, if the file asks for one; a failure is
    /// logged once (until it changes or writing works again).
    fn write_metrics(&mut self) {
        let Some(path) = self.config.metrics.textfile.clone() else { return };
        self.metrics_written = Some(Instant::now());
        let meta = *self.filter.meta();
        let mut entries = Vec::new();
        for (list, allow) in [("block", false), ("allow", true)] {
            for family in Family::ALL {
                let n = self.filter.rules().iter().filter(|(p, r)| r.allow() == allow && p.family() == family).count();
                entries.push((list, family, n as u64));
            }
        }
        let figures = metrics::Figures {
            counters: self.filter.counters_by_direction(),
            entries,
            expired: self.expired.len() as u64,
            reloads_applied: meta.reloads,
            reloads_refused: meta.reloads_refused,
            last_reload_seconds: meta.last_reload_unix_ms as f64 / 1000.0,
            last_reload_ok: meta.last_reload_ok == 1,
            events_rate_limited: self.rate_limited_total,
            dry_run: self.config.dry_run,
        };
        match metrics::write_atomic(&path, &metrics::render(&figures)) {
            Ok(()) => {
                if self.metrics_problem.take().is_some() {
                    self.syslog.log(Severity::Notice, &format!("metrics: writing {} again", path.display()));
                }
            }
            Err(e) => {
                let problem = format!("metrics: cannot write {}: {e}", path.display());
                if self.metrics_problem.as_ref() != Some(&problem) {
                    self.syslog.log(Severity::Warning, &problem);
                    self.metrics_problem = Some(problem);
                }
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_second) < SECOND {
            return;
        }
        self.last_second = now;
        if let Err(e) = self.filter.reset_event_budget() {
            self.syslog.log(Severity::Warning, &e.to_string());
        }
        // Backs up inotify: a lost event, a replaced directory, a fragment
        // directory created after the start.
        let fragments = Stamp::of_dir(&crate::config::fragment_dir(&self.config.path));
        if (Stamp::of(&self.config.path) != self.stamp || fragments != self.fragment_stamps) && !self.debounce.pending()
        {
            self.debounce.event(now);
        }
        if self.metrics_written.is_none_or(|t| now.duration_since(t) >= METRICS_EVERY) {
            self.write_metrics();
        }
        let (over_budget, ring_full) = self.losses.delta(&self.filter.counters());
        let u = &mut self.unreported;
        let rate_limited = self.limiter.take_suppressed();
        self.rate_limited_total += rate_limited;
        u.rate_limited += rate_limited;
        u.over_budget += over_budget;
        u.ring_full += ring_full;
        u.syslog_busy += self.syslog.take_dropped();
        if let Some(line) = events::summary(u) {
            if self.syslog.log(Severity::Notice, &line) {
                self.unreported = Suppressed::default();
            } else {
                // The summary itself found no room: its counts wait for the
                // next one (and the refused line is not an event).
                self.syslog.forget_one_dropped();
            }
        }
        self.sync_interfaces();
    }
}
