//! Security promises: the daemon needs only CAP_BPF and CAP_NET_ADMIN (on
//! kernels that verify with speculation barriers, as this suite's does;
//! older ones also need CAP_PERFMON, which the unit grants and the kernel
//! tier proves) and
//! never runs another program; its pins are root's alone; it refuses a
//! configuration someone other than root could change, symlinks included.
//! Needs root (to drop to the capabilities and users it tests).

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::lab::{sh, Lab, BIN};

const T: Duration = Duration::from_secs(10);

/// The capability sets of a process, from /proc/PID/status.
fn cap_eff(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap()
}

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_BPF: u64 = 1 << 39;

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn the_daemon_blocks_and_reloads_with_only_cap_bpf_and_cap_net_admin_and_runs_no_program() {
    if !common::require_root() {
        return;
    }
    let mut lab = Lab::new();
    lab.write_config(&["192.0.2.10"], "");
    // Root's uid, but a bounding set of exactly two capabilities: every
    // other one is gone for the daemon and anything it could start.
    lab.spawn_daemon_wrapped(
        &["setpriv", "--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all", "--"],
        Path::new(BIN),
    );
    assert!(lab.wait_notify("READY=1", T), "not ready with two capabilities:\n{}", lab.daemon_stderr());
    assert_eq!(cap_eff(lab.daemon_pid()), CAP_BPF | CAP_NET_ADMIN, "effective capabilities");

    // Every exec from now on would show up here.
    let trace = lab.dir.path().join("exec.trace");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=execve,execveat", "-o"])
        .arg(&trace)
        .args(["-p", &lab.daemon_pid().to_string()])
        .spawn()
        .expect("strace (apt-get install strace)");
    std::thread::sleep(Duration::from_millis(500));

    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);
    lab.write_config(&["192.0.2.10", "192.0.2.20", "198.51.100.0/24"], "");
    assert!(lab.wait_log(&["reload: +2 -0 entries, 3 enforced"], T), "{}", lab.daemon_stderr());
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2), 0);
    assert_eq!(lab.ping(&lab.peer, Some("198.51.100.7"), "198.51.100.1", 2), 0);
    // A migration to larger maps, too.
    let many: Vec<String> = (0..6000).map(|i| format!("2001:db8:7:{i:x}::1")).collect();
    let mut block: Vec<&str> = many.iter().map(String::as_str).collect();
    block.push("192.0.2.10");
    lab.write_config(&block, "");
    assert!(lab.wait_log(&["moved to new maps"], T), "{}", lab.daemon_stderr());
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2), 2);
    lab.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(lab.wait_notify("READY=1", T));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(strace.id() as i32), nix::sys::signal::SIGINT).unwrap();
    strace.wait().unwrap();
    let execs = fs::read_to_string(&trace).unwrap_or_default();
    assert!(!execs.contains("execve"), "the daemon ran a program:\n{execs}");
    assert_eq!(lab.stop_daemon(), Some(0));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn pins_are_root_only_and_a_user_can_neither_read_nor_change_them() {
    if !common::require_root() {
        return;
    }
    let mut lab = Lab::new();
    lab.write_config(&["192.0.2.10"], "");
    lab.start_daemon();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&lab.pin_dir), 0o700, "pin_dir");
    let gen = lab.pin_dir.join("gen_1");
    for entry in fs::read_dir(&gen).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
    for entry in fs::read_dir(lab.pin_dir.join("links/gh0")).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
    // Even with the directories opened up, the objects stay closed.
    fs::set_permissions(&lab.pin_dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&gen, fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.host))
            .args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let map = gen.join("v4_exact");
    let read = as_nobody(&["bpftool", "map", "dump", "pinned", map.to_str().unwrap()]);
    assert!(!read.status.success(), "a user read the blocklist: {}", String::from_utf8_lossy(&read.stdout));
    let write = as_nobody(&[
        "bpftool",
        "map",
        "update",
        "pinned",
        map.to_str().unwrap(),
        "key",
        "0",
        "0",
        "0",
        "0",
        "value",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
    ]);
    assert!(!write.status.success(), "a user changed the blocklist");
    let status = as_nobody(&[BIN, "status", "--pin-dir", lab.pin_dir.to_str().unwrap()]);
    assert!(!status.status.success());
    let unload = as_nobody(&[BIN, "unload", "--pin-dir", lab.pin_dir.to_str().unwrap()]);
    assert!(!unload.status.success());
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);
    assert_eq!(lab.status_json()["entries"].as_array().unwrap().len(), 1);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn run_refuses_a_config_reached_through_a_symlink_a_user_controls() {
    if !common::require_root() {
        return;
    }
    let lab = Lab::new();
    lab.write_config(&["192.0.2.10"], "");
    let run = |path: &Path| lab.icmpguard(&["run", "-c", path.to_str().unwrap()]);

    // A symlink owned by a user.
    let link = lab.dir.path().join("by-user.toml");
    symlink(&lab.config, &link).unwrap();
    sh(&["chown", "-h", "65534:65534", link.to_str().unwrap()]);
    let out = run(&link);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a symlink owned by uid 65534, not root"), "{err}");

    // A root-owned symlink in a directory a user can write (and so replace
    // the link).
    let open_dir = lab.dir.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let link2 = open_dir.join("icmpguard.toml");
    symlink(&lab.config, &link2).unwrap();
    let out = run(&link2);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds the symlink") && err.contains("world-writable"), "{err}");

    // `check` only warns about the same file (Ansible validates copies).
    let out = lab.icmpguard(&["check", "-c", link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("would refuse it"));

    // A root-owned symlink in a root-only directory is fine.
    let safe = lab.dir.path().join("safe.toml");
    symlink(&lab.config, &safe).unwrap();
    let out = lab.icmpguard(&["check", "-c", safe.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("would refuse"));
}
