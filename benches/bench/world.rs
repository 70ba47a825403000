//! The throwaway world the benchmark runs in: the one the end-to-end tests
//! run in (tests/common/world.rs: two namespaces joined by a veth, a
//! private bpffs, a private rsyslogd, the daemon with NOTIFY_SOCKET
//! readiness), laid out for the bench, and what only the bench needs: the
//! daemon as a measured process, peer tools run where they can touch
//! nothing else, trafgen senders, the wall time and peak memory of a
//! child. Everything is removed on drop.
//!
//! ```text
//!   <id>h (guarded host)                  <id>p (peer, the sender)
//!   bh0 192.0.2.1/24  2001:db8::1/64 <->  bp0 192.0.2.10/24 (blocked) 192.0.2.20/24
//!                                             2001:db8::10/64
//! ```

#[path = "../../tests/common/world.rs"]
mod shared;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use shared::{run, sh, status_kb_of, wait_until, write_atomic, write_atomic_timed, Bpffs, Pair, Rsyslog, BIN, R};
use shared::{End, Notify};

pub const HOST_IF: &str = "bh0";
pub const PEER_IF: &str = "bp0";
pub const HOST_V4: &str = "192.0.2.1";
pub const BLOCKED_V4: &str = "192.0.2.10";
pub const NEIGHBOUR_V4: &str = "192.0.2.20";

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

/// The bench's pair of namespaces (`igb...`); their names are also written
/// to `dir`/netns, for scripts/bench.sh to clean up after an interrupted
/// run.
pub fn pair(dir: &Path) -> R<Pair> {
    let host = End { dev: HOST_IF, addrs: &["192.0.2.1/24", "2001:db8::1/64"] };
    let peer = End { dev: PEER_IF, addrs: &["192.0.2.10/24", "192.0.2.20/24", "2001:db8::10/64"] };
    Pair::new(dir, "igb", host, peer)
}

/// What only the bench asks of the pair.
impl Pair {
    pub fn host_mac_bytes(&self) -> R<[u8; 6]> {
        let text = self.host_mac()?;
        let mut mac = [0u8; 6];
        for (i, part) in text.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16).map_err(|e| e.to_string())?;
        }
        Ok(mac)
    }

    /// `ethtool -S` counters of the host end, summed over queues, by the
    /// suffix of their name (`xdp_drops`, `xdp_packets`, `drops`).
    pub fn host_stat(&self, suffix: &str) -> R<u64> {
        let out = run(&mut self.cmd(&self.host, &["ethtool", "-S", self.host_if]))?;
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

/// How many datagrams a syslog socket queues: what systemd sets
/// (sysctl.d/50-default.conf); the kernel's default is 10.
pub const SYSLOG_QLEN: u32 = 512;

/// The private rsyslogd, writing `TAG MSG` lines, in the host namespace of
/// `pair`, whose net.unix.max_dgram_qlen is set to SYSLOG_QLEN first: the
/// socket queue of a systemd host, whatever the machine's own setting.
pub fn syslog(dir: &Path, pair: &Pair) -> R<Rsyslog> {
    sh(&["ip", "netns", "exec", &pair.host, "sysctl", "-qw", &format!("net.unix.max_dgram_qlen={SYSLOG_QLEN}")])?;
    Rsyslog::spawn(dir, Some(&pair.host), false)
}

/// The daemon under test, started in the host namespace with
/// NOTIFY_SOCKET; stopped, and what it pinned removed, on drop.
pub struct Daemon {
    child: Option<Child>,
    notify: Notify,
    pub pid: i32,
    pub spawned: Instant,
    pub pin_dir: PathBuf,
}

impl Daemon {
    pub fn spawn(pair: &Pair, dir: &Path, config: &Path, pin_dir: &Path) -> R<Daemon> {
        let notify = Notify::bind(dir)?;
        let spawned = Instant::now();
        let child = shared::spawn_daemon(&pair.host, &[], Path::new(BIN), config, &notify, dir)?;
        let pid = child.id() as i32;
        Ok(Daemon { child: Some(child), notify, pid, spawned, pin_dir: pin_dir.to_path_buf() })
    }

    /// Waits for a notification containing `what`; when it came. Gives up
    /// early when the daemon exits.
    pub fn wait_notify(&mut self, what: &str, timeout: Duration) -> Option<Instant> {
        let child = &mut self.child;
        self.notify.wait(what, timeout, || child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))))
    }

    /// Waits for READY=1 after a start; an error with the daemon's stderr.
    pub fn ready(&mut self, dir: &Path, timeout: Duration) -> R<Instant> {
        self.wait_notify("READY=1", timeout)
            .ok_or_else(|| format!("the daemon was not ready in {timeout:?}: {}", shared::daemon_stderr(dir)))
    }

    /// Non-blocking: every notification received so far.
    pub fn drain_notify(&self) -> Vec<String> {
        self.notify.drain()
    }

    /// CPU time (user + system, in clock ticks) so far.
    pub fn cpu_ticks(&self) -> u64 {
        shared::cpu_ticks(self.pid).unwrap_or(0)
    }

    /// A field of /proc/PID/status in kB (VmHWM, VmRSS).
    pub fn status_kb(&self, field: &str) -> u64 {
        shared::status_kb(self.pid, field).unwrap_or(0)
    }

    /// SIGTERM, wait, and remove what it left pinned.
    pub fn stop(mut self) -> R<()> {
        self.terminate();
        icmpguard::kernel::unload(&self.pin_dir).map(|_| ()).map_err(|e| format!("unloading: {e}"))
    }

    /// SIGTERM and wait, leaving what it pinned (the filter stays
    /// attached), for the next daemon to adopt.
    pub fn stop_keeping_pins(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(c) = self.child.take() {
            shared::terminate(c);
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

pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |v| v as f64)
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
    match measure_status(args, stdin)? {
        (usage, 0, _) => Ok(usage),
        (_, code, stderr) => Err(format!("{args:?} failed (exit {code}): {stderr}")),
    }
}

/// As `measure`, for a command that may fail: its exit code (128 and
/// more: killed by a signal) and what it wrote to stderr beside.
pub fn measure_status(args: &[&str], stdin: Option<&Path>) -> R<(Usage, i32, String)> {
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
        (Some(kb), Some(ns), Some(code)) if code < 256 => {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Ok((Usage { wall: Duration::from_nanos(ns), max_rss_kb: kb }, code as i32, stderr))
        }
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

/// A trafgen sender in the peer namespace: one process pinned to CPU 0.
pub struct Sender {
    child: Option<Child>,
}

impl Sender {
    /// Sends `frame` from the peer end as fast as it can (`rate` None) or
    /// at `rate` packets per second, `count` packets (0: until stopped).
    pub fn start(pair: &Pair, dir: &Path, frame: &[u8], rate: Option<u64>, count: u64) -> R<Sender> {
        let conf = dir.join(format!("trafgen-{}.cfg", shared::unique()));
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
