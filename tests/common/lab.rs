//! A throwaway world for end-to-end tests: two network namespaces joined by
//! a veth pair, a private bpffs for the pins, a private rsyslogd, and the
//! daemon under test running in the guarded namespace. Everything is torn
//! down on drop, in reverse order.
//!
//! ```text
//!   <id>h (guarded host, daemon)           <id>p (peer)
//!   gh0 192.0.2.1/24  192.0.2.2/24   <->   gp0 192.0.2.10/24 (blocked in most tests)
//!       198.51.100.1/24                        192.0.2.20/24 (a neighbour, never blocked)
//!       2001:db8::1/64 2001:db8::2/64          198.51.100.7/24
//!       2001:db8:dead::1/64                    2001:db8::10/64 2001:db8::20/64
//!                                              2001:db8:dead::7/64
//! ```
//!
//! The namespaces, bpffs, rsyslogd and daemon are those of the shared
//! world (tests/common/world.rs, which the benchmark uses too); this file
//! adds the lab's layout and what the tests check with, and panics where
//! the world returns an error.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use super::world::{self, Bpffs, End, Notify, Pair};
pub use super::world::{Rsyslog, BIN};

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    world::sh(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    world::wait_until(timeout, Duration::from_millis(20), cond)
}

/// The tests' way to run a private rsyslogd: in this network namespace,
/// each line stamped with the Unix time it was received.
impl Rsyslog {
    pub fn start(dir: &Path) -> Rsyslog {
        Rsyslog::spawn(dir, None, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (Re)starts the daemon; the socket is recreated.
    pub fn restart(&mut self) {
        self.respawn().unwrap_or_else(|e| panic!("{e}"));
    }
}

pub struct Lab {
    pub id: String,
    pub host: String,
    pub peer: String,
    pub bpffs: PathBuf,
    pub pin_dir: PathBuf,
    pub config: PathBuf,
    pub syslog: Rsyslog,
    pub daemon: Option<Child>,
    notify: Option<Notify>,
    // Dropped in this order, after `drop` has stopped the daemon and
    // unloaded the filter: the bpffs is unmounted, the namespaces are
    // deleted, the directory is removed.
    mount: Bpffs,
    net: Pair,
    pub dir: tempfile::TempDir,
}

pub const HOST_IF: &str = "gh0";
pub const PEER_IF: &str = "gp0";

impl Lab {
    /// A lab with the daemon running on `block` (and the `extra` lines of
    /// configuration); `None` where the privileged tests are skipped.
    pub fn running(block: &[&str], extra: &str) -> Option<Lab> {
        if !super::require_root() {
            return None;
        }
        let mut lab = Lab::new();
        lab.write_config(block, extra);
        lab.start_daemon();
        Some(lab)
    }

    pub fn new() -> Lab {
        let dir = tempfile::Builder::new().prefix("icmpguard-test-").tempdir().unwrap();
        let mount = Bpffs::mount(dir.path().join("bpf")).unwrap_or_else(|e| panic!("{e}"));
        let syslog = Rsyslog::start(dir.path());
        let host = End {
            dev: HOST_IF,
            addrs: &[
                "192.0.2.1/24",
                "192.0.2.2/24",
                "198.51.100.1/24",
                "2001:db8::1/64",
                "2001:db8::2/64",
                "2001:db8:dead::1/64",
            ],
        };
        let peer = End {
            dev: PEER_IF,
            addrs: &[
                "192.0.2.10/24",
                "192.0.2.20/24",
                "198.51.100.7/24",
                "2001:db8::10/64",
                "2001:db8::20/64",
                "2001:db8:dead::7/64",
            ],
        };
        let net = Pair::new(dir.path(), "ig", host, peer).unwrap_or_else(|e| panic!("{e}"));
        Lab {
            id: net.id.clone(),
            host: net.host.clone(),
            peer: net.peer.clone(),
            bpffs: mount.path.clone(),
            pin_dir: mount.path.join("icmpguard"),
            config: dir.path().join("icmpguard.toml"),
            syslog,
            daemon: None,
            notify: None,
            mount,
            net,
            dir,
        }
    }

    /// Runs a command in a namespace (nsenter keeps /sys/fs/bpf visible,
    /// unlike `ip netns exec`).
    pub fn ns(&self, ns: &str, args: &[&str]) -> Output {
        world::in_netns(ns, args).output().unwrap()
    }

    /// Writes the config: the guarded interface, the private pin dir and
    /// syslog socket, then `block` and any `extra` TOML.
    pub fn write_config(&self, block: &[&str], extra: &str) {
        let list: Vec<String> = block.iter().map(|b| format!("  \"{b}\",\n")).collect();
        let text = format!(
            "interfaces = [\"{HOST_IF}\"]\nblock = [\n{}]\npin_dir = \"{}\"\n{extra}\n",
            list.concat(),
            self.pin_dir.display()
        );
        self.write_raw_config(&self.with_syslog(&text));
    }

    /// Adds the lab's `[syslog]` table unless the text has one.
    pub fn with_syslog(&self, text: &str) -> String {
        if text.contains("[syslog]") {
            text.to_string()
        } else {
            format!("{text}\n[syslog]\nsocket = \"{}\"\n", self.syslog.socket.display())
        }
    }

    /// Replaces the config file's content atomically (write + rename).
    pub fn write_raw_config(&self, text: &str) {
        world::write_atomic(&self.config, text).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the daemon in the guarded namespace and waits for READY=1.
    pub fn start_daemon(&mut self) {
        self.start_daemon_bin(Path::new(BIN));
    }

    /// Starts a given build of the daemon and waits for READY=1.
    pub fn start_daemon_bin(&mut self, bin: &Path) {
        self.spawn_daemon(bin);
        assert!(self.wait_notify("READY=1", Duration::from_secs(20)), "daemon not ready: {}", self.daemon_stderr());
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn_daemon(&mut self, bin: &Path) {
        self.spawn_daemon_wrapped(&[], bin);
    }

    /// Starts the daemon under `wrapper` (a command that execs the rest,
    /// like setpriv), in the guarded namespace, without waiting for it.
    pub fn spawn_daemon_wrapped(&mut self, wrapper: &[&str], bin: &Path) {
        let notify = Notify::bind(self.dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let child = world::spawn_daemon(&self.host, wrapper, bin, &self.config, &notify, self.dir.path());
        self.notify = Some(notify);
        self.daemon = Some(child.unwrap_or_else(|e| panic!("{e}")));
    }

    /// Every notification datagram received so far and not yet consumed.
    pub fn drain_notify(&self) -> Vec<String> {
        self.notify.as_ref().map(Notify::drain).unwrap_or_default()
    }

    /// Waits for a notification datagram containing `what` (also after
    /// the daemon exited: it may have sent it before).
    pub fn wait_notify(&self, what: &str, timeout: Duration) -> bool {
        self.notify.as_ref().and_then(|n| n.wait(what, timeout, || true)).is_some()
    }

    pub fn daemon_pid(&self) -> i32 {
        self.daemon.as_ref().expect("daemon running").id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.daemon_pid()), sig).unwrap();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop_daemon(&mut self) -> Option<i32> {
        self.daemon.take().and_then(world::terminate)
    }

    pub fn daemon_stderr(&self) -> String {
        world::daemon_stderr(self.dir.path())
    }

    /// Runs an icmpguard subcommand in the guarded namespace.
    pub fn icmpguard(&self, args: &[&str]) -> Output {
        let mut full = vec![BIN];
        full.extend_from_slice(args);
        self.ns(&self.host, &full)
    }

    pub fn status_json(&self) -> serde_json::Value {
        let pins = self.pin_dir.to_str().unwrap();
        let out = self.icmpguard(&["status", "--json", "-c", self.config.to_str().unwrap(), "--pin-dir", pins]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Echo requests sent from `ns` (source `src`) to `dst`; returns the
    /// number of replies.
    pub fn ping(&self, ns: &str, src: Option<&str>, dst: &str, count: u32) -> u32 {
        let count = count.to_string();
        let mut args = vec!["ping", "-n", "-q", "-c", &count, "-i", "0.1", "-W", "1"];
        if let Some(s) = src {
            args.extend_from_slice(&["-I", s]);
        }
        args.push(dst);
        let out = self.ns(ns, &args);
        ping_summary(&String::from_utf8_lossy(&out.stdout)).1 as u32
    }

    /// A counter of /proc/net/snmp (`Icmp`, `InEchos`) or /proc/net/snmp6
    /// (`Icmp6InEchos`) in namespace `ns`.
    pub fn snmp(&self, ns: &str, group: &str, field: &str) -> u64 {
        if group == "Icmp6" || group == "Ip6" {
            let text = String::from_utf8_lossy(&self.ns(ns, &["cat", "/proc/net/snmp6"]).stdout).to_string();
            let key = format!("{group}{field}");
            return text
                .lines()
                .find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some(key.as_str())).then(|| it.next().and_then(|v| v.parse().ok())).flatten()
                })
                .unwrap_or_else(|| panic!("no {key} in snmp6"));
        }
        let text = String::from_utf8_lossy(&self.ns(ns, &["cat", "/proc/net/snmp"]).stdout).to_string();
        let prefix = format!("{group}:");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
        let names: Vec<&str> = rows[0].split_whitespace().collect();
        let values: Vec<&str> = rows[1].split_whitespace().collect();
        let i = names.iter().position(|n| *n == field).unwrap_or_else(|| panic!("no {group} {field}"));
        values[i].parse().unwrap()
    }

    /// Sends one crafted frame from the peer with scapy (Debian's
    /// python3-scapy); `layers` is a scapy expression above Ethernet.
    pub fn scapy_send(&self, layers: &str) {
        let mac = self.host_mac();
        let script = format!(
            "import logging; logging.getLogger('scapy').setLevel(logging.ERROR)\n\
             from scapy.all import *\n\
             sendp(Ether(dst='{mac}')/{layers}, iface='{PEER_IF}', verbose=False)\n"
        );
        let out = self.ns(&self.peer, &["/usr/bin/python3", "-c", &script]);
        assert!(out.status.success(), "scapy: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn host_mac(&self) -> String {
        self.net.host_mac().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Syslog lines containing every one of `parts`.
    pub fn count_log(&self, parts: &[&str]) -> usize {
        self.syslog.lines().iter().filter(|l| parts.iter().all(|p| l.contains(p))).count()
    }

    /// Adds an address to the peer's interface.
    pub fn add_peer_addr(&self, cidr: &str) {
        self.net.add_addr(&self.peer, PEER_IF, cidr).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts `ping` in `ns` from `src` to `dst` every `interval` seconds
    /// until stopped.
    pub fn pinger(&self, ns: &str, src: &str, dst: &str, interval: &str) -> Pinger {
        let child = world::in_netns(ns, &["ping", "-n", "-q", "-i", interval, "-W", "1", "-I", src, dst])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Pinger { child: Some(child) }
    }

    /// CPU time (user + system, in clock ticks) the daemon used so far.
    pub fn daemon_cpu_ticks(&self) -> u64 {
        world::cpu_ticks(self.daemon_pid()).expect("the daemon's /proc/PID/stat")
    }

    /// Waits until `n` syslog lines contain every one of `parts`.
    pub fn wait_log_count(&self, parts: &[&str], n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count_log(parts) >= n)
    }

    /// Sends echo requests from the peer's `src` to `dst` as fast as a
    /// packet socket allows, for `seconds`; returns how many were sent.
    /// (`ping -f` without replies sends only 100 a second.)
    pub fn flood(&self, src: &str, dst: &str, seconds: f64) -> u64 {
        let mac = self.host_mac();
        let script = format!(
            "import errno, socket, struct, time
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
icmp = struct.pack('!BBHHH', 8, 0, 0, 1, 1) + b'x' * 56
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                 socket.inet_aton('{src}'), socket.inet_aton('{dst}'))
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
eth = bytes.fromhex('{mac}'.replace(':', '')) + bytes([2, 0, 0, 0, 0, 1]) + bytes([8, 0])
frame = eth + ip + icmp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('{PEER_IF}', 0))
n = 0
end = time.time() + {seconds}
while time.time() < end:
    for _ in range(1000):
        try:
            s.send(frame)
            n += 1
        except OSError as e:
            # ENOBUFS: the device queue is full for a moment; the flood
            # only needs to go on.
            if e.errno != errno.ENOBUFS:
                raise
            time.sleep(0.0005)
print(n)
"
        );
        let out = self.ns(&self.peer, &["/usr/bin/python3", "-c", &script]);
        assert!(out.status.success(), "flood: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Waits for a syslog line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str], timeout: Duration) -> bool {
        wait_until(timeout, || self.syslog.lines().iter().any(|l| parts.iter().all(|p| l.contains(p))))
    }

    /// VmRSS of the daemon, in kB.
    pub fn daemon_rss_kb(&self) -> u64 {
        world::status_kb(self.daemon_pid(), "VmRSS").expect("VmRSS in the daemon's /proc/PID/status")
    }

    /// Open file descriptors of the daemon.
    pub fn daemon_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.daemon_pid())).unwrap().count()
    }

    /// Kernel memory of the BPF maps the daemon holds (memlock of each map
    /// descriptor, from /proc/PID/fdinfo), in bytes.
    pub fn daemon_map_memory(&self) -> u64 {
        let pid = self.daemon_pid();
        fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter(|info| info.contains("map_type:"))
            .filter_map(|info| {
                info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum()
    }

    pub fn unload(&self) -> Output {
        self.icmpguard(&["unload", "-c", self.config.to_str().unwrap()])
    }
}

/// (transmitted, received) from ping's summary line
/// "N packets transmitted, M received, ...".
pub fn ping_summary(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|l| l.contains(" packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in ping output: {text}"));
    let num = |suffix: &str| -> u64 {
        line.split(',')
            .find_map(|part| part.trim().strip_suffix(suffix).and_then(|n| n.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no '{suffix}' in {line:?}"))
    };
    (num(" packets transmitted"), num(" received"))
}

/// A background `ping`; stopping it reports (transmitted, received).
pub struct Pinger {
    child: Option<Child>,
}

impl Pinger {
    pub fn stop(mut self) -> (u64, u64) {
        let child = self.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
        let out = child.wait_with_output().unwrap();
        ping_summary(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_daemon();
        let _ = world::in_netns(&self.host, &[BIN, "unload", "--pin-dir"]).arg(&self.pin_dir).output();
        // The fields then unmount the bpffs, delete the namespaces and
        // remove the directory.
    }
}
