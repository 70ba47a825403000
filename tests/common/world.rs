//! The throwaway world the end-to-end tests (tests/common/lab.rs) and the
//! benchmark (benches/bench/world.rs) both run in: two network namespaces
//! joined by a veth pair, a private bpffs for the pins, a private rsyslogd,
//! and the daemon under test started with NOTIFY_SOCKET readiness. Each part
//! removes what it made when dropped.
//!
//! Errors are returned, not raised: the benchmark reports them, the lab
//! turns them into test failures. Each side adds its own methods in its
//! own file: lab.rs the panicking `Rsyslog::start` and `Rsyslog::restart`
//! the tests call, benches/bench/world.rs what only the bench asks of a
//! `Pair` (ethtool counters, peer tools in a private mount namespace).
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub type R<T> = Result<T, String>;

pub const BIN: &str = env!("CARGO_BIN_EXE_icmpguard");

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A number no other call in this process returns: for names of
/// namespaces, sockets and files.
pub fn unique() -> usize {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command; its output, or an error that quotes it.
pub fn run(cmd: &mut Command) -> R<Output> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

pub fn sh(args: &[&str]) -> R<Output> {
    run(Command::new(args[0]).args(&args[1..]))
}

/// A command run in network namespace `ns` (nsenter keeps the mounts, such
/// as a private bpffs, visible, unlike `ip netns exec`).
pub fn in_netns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).args(args);
    c
}

/// SIGTERM, then waits; the exit code (None when a signal ended it).
pub fn terminate(mut child: Child) -> Option<i32> {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    child.wait().ok().and_then(|s| s.code())
}

/// Polls `cond` every `step` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Opens a file for appending, creating it if need be.
pub fn append(path: &Path) -> R<fs::File> {
    fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a file atomically (`.NAME.tmp` beside it, then rename), mode
/// 0644: how editors and configuration management save.
pub fn write_atomic(path: &Path, text: &str) -> R<()> {
    write_atomic_timed(path, text).map(|_| ())
}

/// As `write_atomic`; returns the moment the rename returned (the save is
/// complete: the new content is the file) and how long the rename took (a
/// file system frees the replaced file's blocks in it: 0.2 s for 200 MB
/// on ext4).
pub fn write_atomic_timed(path: &Path, text: &str) -> R<(Instant, Duration)> {
    let name = path.file_name().ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let mut f = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
    let at = Instant::now();
    fs::rename(&tmp, path).map_err(|e| e.to_string())?;
    Ok((Instant::now(), at.elapsed()))
}

/// A bpffs mounted at `path` (created if need be), unmounted on drop.
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn mount(path: PathBuf) -> R<Bpffs> {
        fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        sh(&["mount", "-t", "bpf", "bpf", &path.to_string_lossy()])?;
        Ok(Bpffs { path })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).output();
    }
}

/// One end of a `Pair`: its interface and addresses (`A/LEN`; IPv6 ones are
/// added without duplicate address detection), in the order they are added.
pub struct End<'a> {
    pub dev: &'static str,
    pub addrs: &'a [&'a str],
}

/// Two namespaces, `<id>h` (the guarded host) and `<id>p` (its peer),
/// joined by a veth pair; both deleted on drop.
pub struct Pair {
    pub id: String,
    pub host: String,
    pub peer: String,
    pub host_if: &'static str,
    pub peer_if: &'static str,
}

impl Pair {
    /// Names the namespaces `<prefix><pid>x<n>h` and `...p`, and writes the
    /// names to `dir`/netns, one a line, for a script to clean up after an
    /// interrupted run (scripts/bench.sh does).
    pub fn new(dir: &Path, prefix: &str, host: End<'_>, peer: End<'_>) -> R<Pair> {
        let id = format!("{prefix}{}x{}", std::process::id(), unique());
        let pair = Pair { host: format!("{id}h"), peer: format!("{id}p"), id, host_if: host.dev, peer_if: peer.dev };
        let mut record = append(&dir.join("netns"))?;
        writeln!(record, "{}\n{}", pair.host, pair.peer).map_err(|e| e.to_string())?;
        sh(&["ip", "netns", "add", &pair.host])?;
        sh(&["ip", "netns", "add", &pair.peer])?;
        let (h, p) = (pair.host.as_str(), pair.peer.as_str());
        sh(&["ip", "link", "add", host.dev, "netns", h, "type", "veth", "peer", "name", peer.dev, "netns", p])?;
        for (ns, end) in [(h, &host), (p, &peer)] {
            for a in end.addrs {
                pair.add_addr(ns, end.dev, a)?;
            }
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", ns, "link", "set", end.dev, "up"])?;
        }
        Ok(pair)
    }

    /// Adds `cidr` to `dev` in namespace `ns` (IPv6 without duplicate
    /// address detection, so that it is usable at once).
    pub fn add_addr(&self, ns: &str, dev: &str, cidr: &str) -> R<()> {
        let mut args = vec!["ip", "-n", ns, "addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        sh(&args).map(|_| ())
    }

    /// A command run in namespace `ns`.
    pub fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        in_netns(ns, args)
    }

    /// The MAC address of the host end, as `ip` writes it (`aa:bb:...`).
    pub fn host_mac(&self) -> R<String> {
        let out = sh(&["ip", "-n", &self.host, "-j", "link", "show", self.host_if])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(v[0]["address"].as_str().ok_or("no MAC address in `ip -j link`")?.to_string())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.host]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.peer]).output();
    }
}

/// A private rsyslogd listening on its own socket (`dir`/log.sock) and
/// writing every message, as `TAG MSG` (or `UNIXTIME TAG MSG`), to its own
/// file (`dir`/syslog.out). Stopped on drop.
pub struct Rsyslog {
    pub socket: PathBuf,
    pub output: PathBuf,
    conf: PathBuf,
    dir: PathBuf,
    netns: Option<String>,
    child: Option<Child>,
}

impl Rsyslog {
    /// Starts one in network namespace `netns` (None: this process's),
    /// whose datagram queue limit (net.unix.max_dgram_qlen) is the one its
    /// socket gets. `stamped`: each line begins with the Unix time the
    /// message was received.
    pub fn spawn(dir: &Path, netns: Option<&str>, stamped: bool) -> R<Rsyslog> {
        let mut r = Rsyslog {
            socket: dir.join("log.sock"),
            output: dir.join("syslog.out"),
            conf: dir.join("rsyslog.conf"),
            dir: dir.to_path_buf(),
            netns: netns.map(str::to_string),
            child: None,
        };
        let work = dir.join("rsyslog-work");
        fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let stamp = if stamped { "%timegenerated:::date-unixtimestamp% " } else { "" };
        fs::write(
            &r.conf,
            format!(
                "global(workDirectory=\"{work}\")\n\
                 module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{sock}\" RateLimit.Interval=\"0\")\n\
                 template(name=\"plain\" type=\"string\" string=\"{stamp}%syslogtag%%msg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{out}\" template=\"plain\")\n",
                work = work.display(),
                sock = r.socket.display(),
                out = r.output.display()
            ),
        )
        .map_err(|e| format!("{}: {e}", r.conf.display()))?;
        r.respawn()?;
        Ok(r)
    }

    /// (Re)starts rsyslogd; the socket is recreated.
    pub fn respawn(&mut self) -> R<()> {
        self.stop();
        let _ = fs::remove_file(&self.socket);
        let mut cmd = match &self.netns {
            Some(ns) => in_netns(ns, &["rsyslogd"]),
            None => Command::new("rsyslogd"),
        };
        let stderr = fs::File::create(self.dir.join("rsyslogd.err")).map_err(|e| e.to_string())?;
        let child = cmd
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("rsyslogd: {e} (apt-get install rsyslog)"))?;
        self.child = Some(child);
        if !wait_until(Duration::from_secs(10), Duration::from_millis(20), || self.socket.exists()) {
            return Err("rsyslogd did not create its socket".into());
        }
        Ok(())
    }

    /// SIGTERM, and wait for it.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Every line written so far.
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.output).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The whole lines written since offset `from`, which moves past them.
    pub fn tail(&self, from: &mut u64) -> String {
        let Ok(mut f) = fs::File::open(&self.output) else { return String::new() };
        let mut s = String::new();
        if f.seek(SeekFrom::Start(*from)).is_ok() && f.read_to_string(&mut s).is_ok() {
            // Only whole lines; the rest is read next time.
            let whole = s.rfind('\n').map_or(0, |i| i + 1);
            s.truncate(whole);
            *from += whole as u64;
        }
        s
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The socket a daemon started with NOTIFY_SOCKET sends its readiness
/// notifications (READY=1, RELOADING=1, STOPPING=1) to.
pub struct Notify {
    pub path: PathBuf,
    sock: UnixDatagram,
}

impl Notify {
    /// A fresh socket in `dir`.
    pub fn bind(dir: &Path) -> R<Notify> {
        let path = dir.join(format!("notify-{}.sock", unique()));
        let sock = UnixDatagram::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Notify { path, sock })
    }

    /// Waits for a notification containing `what`; when it came. Gives up
    /// as soon as `alive` says the sender is gone.
    pub fn wait(&self, what: &str, timeout: Duration, mut alive: impl FnMut() -> bool) -> Option<Instant> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            if !alive() {
                return None;
            }
            let left = end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let _ = self.sock.set_read_timeout(Some(left.min(Duration::from_millis(100))));
            if let Ok(n) = self.sock.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).contains(what) {
                    return Some(Instant::now());
                }
            }
        }
        None
    }

    /// Every notification received so far and not yet consumed, without
    /// waiting.
    pub fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        let _ = self.sock.set_nonblocking(true);
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        let _ = self.sock.set_nonblocking(false);
        out
    }
}

/// Starts `bin run -c config` in namespace `ns`, under `wrapper` (a command
/// that execs the rest, like setpriv; empty for none), notifying `notify`,
/// its stderr appended to `dir`/daemon.err, its runtime directory (the
/// restart record, as systemd's `RuntimeDirectory=` gives it) `dir`/run.
/// Does not wait for it.
pub fn spawn_daemon(ns: &str, wrapper: &[&str], bin: &Path, config: &Path, notify: &Notify, dir: &Path) -> R<Child> {
    let stderr = append(&dir.join("daemon.err"))?;
    in_netns(ns, wrapper)
        .arg(bin)
        .arg("run")
        .arg("-c")
        .arg(config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("RUNTIME_DIRECTORY", dir.join("run"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))
}

/// What the daemons `spawn_daemon` started with `dir` wrote to stderr.
pub fn daemon_stderr(dir: &Path) -> String {
    fs::read_to_string(dir.join("daemon.err")).unwrap_or_default()
}

/// CPU time (user + system, in clock ticks) of a process so far.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses, utime and stime are the 12th
    // and 13th fields.
    let f: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A field of /proc/PID/status in kB (VmHWM, VmRSS).
pub fn status_kb(pid: i32, field: &str) -> Option<u64> {
    status_kb_of(&format!("/proc/{pid}/status"), field)
}

/// A `Field: N kB` line of a /proc file.
pub fn status_kb_of(path: &str, field: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}
