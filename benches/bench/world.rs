//! The throwaway world the benchmark runs in: a pair of network namespaces
//! joined by a veth, a private bpffs, a private rsyslogd, the daemon under
//! test with NOTIFY_SOCKET readiness, and the helpers that run peer tools
//! where they can touch nothing else. Everything is removed on drop.
//!
//! ```text
//!   <id>h (guarded host)                  <id>p (peer, the sender)
//!   bh0 192.0.2.1/24  2001:db8::1/64 <->  bp0 192.0.2.10/24 (blocked) 192.0.2.20/24
//!                                             2001:db8::10/64
//! ```

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub type R<T> = Result<T, String>;

pub const BIN: &str = env!("CARGO_BIN_EXE_icmpguard");
pub const HOST_IF: &str = "bh0";
pub const PEER_IF: &str = "bp0";
pub const HOST_V4: &str = "192.0.2.1";
pub const BLOCKED_V4: &str = "192.0.2.10";
pub const NEIGHBOUR_V4: &str = "192.0.2.20";

static NEXT: AtomicUsize = AtomicUsize::new(0);

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

/// Whether a program is on PATH, with the Debian package that brings it.
pub fn require(tool: &str, package: &str) -> R<()> {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!("{tool} not found: apt-get install {package}"))
    }
}

/// Polls `cond` until it holds or `timeout` passes.
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

/// A bpffs mounted in the bench's own directory, unmounted on drop.
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

/// Two namespaces joined by a veth pair.
pub struct Pair {
    pub host: String,
    pub peer: String,
}

impl Pair {
    /// The names are also written to `dir`/netns, for scripts/bench.sh to
    /// clean up after an interrupted run.
    pub fn new(dir: &Path) -> R<Pair> {
        let id = format!("igb{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let pair = Pair { host: format!("{id}h"), peer: format!("{id}p") };
        let mut record = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("netns"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        writeln!(record, "{}\n{}", pair.host, pair.peer).map_err(|e| e.to_string())?;
        sh(&["ip", "netns", "add", &pair.host])?;
        sh(&["ip", "netns", "add", &pair.peer])?;
        let (h, p) = (pair.host.as_str(), pair.peer.as_str());
        sh(&["ip", "link", "add", HOST_IF, "netns", h, "type", "veth", "peer", "name", PEER_IF, "netns", p])?;
        for (ns, dev, v4, v6) in [
            (h, HOST_IF, &["192.0.2.1/24"][..], "2001:db8::1/64"),
            (p, PEER_IF, &["192.0.2.10/24", "192.0.2.20/24"][..], "2001:db8::10/64"),
        ] {
            for a in v4 {
                sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev])?;
            }
            sh(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// A command run in namespace `ns` (nsenter keeps the mounts visible,
    /// unlike `ip netns exec`).
    pub fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).args(args);
        c
    }

    pub fn host_mac(&self) -> R<[u8; 6]> {
        let out = sh(&["ip", "-n", &self.host, "-j", "link", "show", HOST_IF])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let text = v[0]["address"].as_str().ok_or("no MAC address in `ip -j link`")?;
        let mut mac = [0u8; 6];
        for (i, part) in text.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16).map_err(|e| e.to_string())?;
        }
        Ok(mac)
    }

    /// `ethtool -S` counters of the host end, summed over queues, by the
    /// suffix of their name (`xdp_drops`, `xdp_packets`, `drops`).
    pub fn host_stat(&self, suffix: &str) -> R<u64> {
        let out = run(&mut self.cmd(&self.host, &["ethtool", "-S", HOST_IF]))?;
        let want = format!("_{suffix}:");
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with("rx_queue_") && l.contains(&want))
            .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
            .sum())
    }

    /// Runs a peer tool that looks for a bpffs of its own (iproute2,
    /// xdp-filter/libxdp) in namespace `ns`, inside a private mount
    /// namespace where `bpffs` is the only bpffs there is, at /sys/fs/bpf:
    /// whatever it pins lands in the bench's bpffs, never in another one.
    pub fn isolated(&self, bpffs: &Path, ns: &str, args: &[&str]) -> R<Output> {
        const SCRIPT: &str = r#"priv=$1 ns=$2; shift 2
mount --bind "$priv" /sys/fs/bpf || exit 1
findmnt -rn -t bpf -o TARGET | grep -vx /sys/fs/bpf | while read -r m; do umount -l "$m" || exit 1; done
LIBXDP_BPFFS=/sys/fs/bpf exec nsenter --net="/run/netns/$ns" "$@""#;
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT, "sh"]).arg(bpffs).arg(ns).args(args);
        run(&mut c)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.host]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.peer]).output();
    }
}

/// A private rsyslogd writing every message, as `TAG MSG`, to its own file.
pub struct Rsyslog {
    pub socket: PathBuf,
    pub output: PathBuf,
    child: Child,
}

/// How many datagrams a syslog socket queues: what systemd sets
/// (sysctl.d/50-default.conf); the kernel's default is 10.
pub const SYSLOG_QLEN: u32 = 512;

impl Rsyslog {
    /// Runs in the host namespace of `pair`, whose net.unix.max_dgram_qlen
    /// is set to SYSLOG_QLEN first: the socket queue of a systemd host,
    /// whatever the machine's own setting.
    pub fn start(dir: &Path, pair: &Pair) -> R<Rsyslog> {
        sh(&["ip", "netns", "exec", &pair.host, "sysctl", "-qw", &format!("net.unix.max_dgram_qlen={SYSLOG_QLEN}")])?;
        let work = dir.join("rsyslog-work");
        fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let socket = dir.join("log.sock");
        let output = dir.join("syslog.out");
        let conf = dir.join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{work}\")\n\
                 module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{sock}\" RateLimit.Interval=\"0\")\n\
                 template(name=\"plain\" type=\"string\" string=\"%syslogtag%%msg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{out}\" template=\"plain\")\n",
                work = work.display(),
                sock = socket.display(),
                out = output.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = pair
            .cmd(&pair.host, &["rsyslogd"])
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("rsyslogd: {e} (apt-get install rsyslog)"))?;
        let r = Rsyslog { socket, output, child };
        if !wait_until(Duration::from_secs(10), Duration::from_millis(20), || r.socket.exists()) {
            return Err("rsyslogd did not create its socket".into());
        }
        Ok(r)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads what rsyslogd wrote since the last call.
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
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The daemon under test, started in a namespace with NOTIFY_SOCKET.
pub struct Daemon {
    child: Option<Child>,
    notify: UnixDatagram,
    pub pid: i32,
    pub spawned: Instant,
    pub pin_dir: PathBuf,
}

impl Daemon {
    pub fn spawn(pair: &Pair, dir: &Path, config: &Path, pin_dir: &Path) -> R<Daemon> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let notify_path = dir.join(format!("notify-{n}.sock"));
        let notify = UnixDatagram::bind(&notify_path).map_err(|e| e.to_string())?;
        let stderr =
            fs::OpenOptions::new().create(true).append(true).open(dir.join("daemon.err")).map_err(|e| e.to_string())?;
        let spawned = Instant::now();
        let child = pair
            .cmd(&pair.host, &[BIN, "run", "-c", &config.to_string_lossy()])
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting the daemon: {e}"))?;
        let pid = child.id() as i32;
        Ok(Daemon { child: Some(child), notify, pid, spawned, pin_dir: pin_dir.to_path_buf() })
    }

    /// Waits for a notification containing `what`; when it came. Gives up
    /// early when the daemon exits.
    pub fn wait_notify(&mut self, what: &str, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            if self.child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None))) {
                return None;
            }
            let left = end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let _ = self.notify.set_read_timeout(Some(left.min(Duration::from_millis(100))));
            if let Ok(n) = self.notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).contains(what) {
                    return Some(Instant::now());
                }
            }
        }
        None
    }

    /// Waits for READY=1 after a start; an error with the daemon's stderr.
    pub fn ready(&mut self, dir: &Path, timeout: Duration) -> R<Instant> {
        self.wait_notify("READY=1", timeout).ok_or_else(|| {
            format!(
                "the daemon was not ready in {timeout:?}: {}",
                fs::read_to_string(dir.join("daemon.err")).unwrap_or_default()
            )
        })
    }

    /// Non-blocking: every notification received so far.
    pub fn drain_notify(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        let _ = self.notify.set_nonblocking(true);
        while let Ok(n) = self.notify.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        let _ = self.notify.set_nonblocking(false);
        out
    }

    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid)
    }

    /// A field of /proc/PID/status in kB (VmHWM, VmRSS).
    pub fn status_kb(&self, field: &str) -> u64 {
        status_kb(self.pid, field)
    }

    /// SIGTERM, wait, and remove what it left pinned.
    pub fn stop(mut self) -> R<()> {
        self.terminate();
        icmpguard::kernel::unload(&self.pin_dir).map(|_| ()).map_err(|e| format!("unloading: {e}"))
    }

    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
            let _ = icmpguard::kernel::unload(&self.pin_dir);
        }
    }
}

/// CPU time (user + system, in clock ticks) of a process so far.
pub fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // After the command name in parentheses, utime and stime are the 12th
    // and 13th fields.
    let Some(close) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |v| v as f64)
}

pub fn status_kb(pid: i32, field: &str) -> u64 {
    status_kb_of(&format!("/proc/{pid}/status"), field)
}

/// A `Field: N kB` line of a /proc file.
pub fn status_kb_of(path: &str, field: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What one child process took: wall time and peak RSS (kB).
pub struct Usage {
    pub wall: Duration,
    pub max_rss_kb: u64,
}

/// Runs `args` to its end, with its stdin from `stdin` when given, and
/// measures its wall time and peak RSS.
///
/// The peak is ru_maxrss of wait4(2), taken by a fresh, small process (this
/// binary with `--measure-child`): a child's ru_maxrss starts at the peak of
/// the process it was forked from, which for the bench itself, holding a
/// million-entry list, would hide the figure being measured.
pub fn measure(args: &[&str], stdin: Option<&Path>) -> R<Usage> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg(MEASURE_CHILD).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(p) = stdin {
        cmd.stdin(fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    let out = cmd.output().map_err(|e| format!("{args:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    match (it.next(), it.next(), it.next()) {
        (Some(kb), Some(ns), Some(0)) => Ok(Usage { wall: Duration::from_nanos(ns), max_rss_kb: kb }),
        _ => Err(format!("{args:?} failed: {}{}", text.trim(), String::from_utf8_lossy(&out.stderr).trim())),
    }
}

pub const MEASURE_CHILD: &str = "--measure-child";

/// The `--measure-child` side of `measure`: runs the command and prints
/// "PEAK_KB WALL_NS EXIT_CODE".
pub fn measure_child(args: &[String]) -> std::process::ExitCode {
    let Some((prog, rest)) = args.split_first() else { return std::process::ExitCode::from(2) };
    let start = Instant::now();
    let child = match Command::new(prog).args(rest).stdout(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let pid = child.id() as nix::libc::pid_t;
    let mut status: nix::libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (the `Child` is never
    // waited on); `status` and `ru` are valid for writes during the call.
    let ret = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    if ret != pid {
        eprintln!("wait4: {}", std::io::Error::last_os_error());
        return std::process::ExitCode::from(2);
    }
    let code = if nix::libc::WIFEXITED(status) { nix::libc::WEXITSTATUS(status) } else { 128 };
    println!("{} {} {code}", ru.ru_maxrss, wall.as_nanos());
    std::process::ExitCode::SUCCESS
}

/// Writes a file atomically (temporary file, then rename), mode 0644: how
/// editors and configuration management save.
pub fn write_atomic(path: &Path, text: &str) -> R<()> {
    write_atomic_timed(path, text).map(|_| ())
}

/// As `write_atomic`; returns the moment of the rename, when the new
/// content became the file.
pub fn write_atomic_timed(path: &Path, text: &str) -> R<Instant> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
    let at = Instant::now();
    fs::rename(&tmp, path).map_err(|e| e.to_string())?;
    Ok(at)
}

/// A trafgen sender in the peer namespace: one process pinned to CPU 0.
pub struct Sender {
    child: Option<Child>,
}

impl Sender {
    /// Sends `frame` from the peer end as fast as it can (`rate` None) or
    /// at `rate` packets per second, `count` packets (0: until stopped).
    pub fn start(pair: &Pair, dir: &Path, frame: &[u8], rate: Option<u64>, count: u64) -> R<Sender> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let conf = dir.join(format!("trafgen-{n}.cfg"));
        let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
        fs::write(&conf, format!("{{ {} }}\n", bytes.join(", "))).map_err(|e| e.to_string())?;
        let conf = conf.to_string_lossy().to_string();
        let count = count.to_string();
        let mut args = vec![
            "taskset",
            "-c",
            "0",
            "trafgen",
            "--dev",
            PEER_IF,
            "--conf",
            &conf,
            "--cpus",
            "1",
            "--no-sock-mem",
            "-Q",
            "--num",
            &count,
        ];
        let rate_arg = rate.map(|r| format!("{r}pps"));
        if let Some(r) = &rate_arg {
            args.extend_from_slice(&["--rate", r]);
        }
        // Its own process group: trafgen forks its senders, and they stop
        // only on a signal of their own.
        let child = pair
            .cmd(&pair.peer, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("trafgen: {e} (apt-get install netsniff-ng)"))?;
        Ok(Sender { child: Some(child) })
    }

    /// Waits for a sender with a packet count to finish.
    pub fn wait(mut self, timeout: Duration) -> R<()> {
        let Some(mut c) = self.child.take() else { return Ok(()) };
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            if Instant::now() > end {
                let _ = kill(Pid::from_raw(-(c.id() as i32)), Signal::SIGKILL);
                let _ = c.wait();
                return Err("trafgen did not finish in time".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = Pid::from_raw(-(c.id() as i32));
            let _ = kill(group, Signal::SIGINT);
            if !wait_until(Duration::from_secs(5), Duration::from_millis(20), || matches!(c.try_wait(), Ok(Some(_)))) {
                let _ = kill(group, Signal::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.halt();
    }
}
