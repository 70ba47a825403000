//! The daemon under faults, proven with real packets: killed in the middle
//! of a large reconcile, its file deleted or replaced by a directory or a
//! dangling symlink, its bpffs unmounted, its syslog gone. Needs root.
//!
//! ICMPGUARD_FAULT_ROUNDS sets how many kill -9 rounds run (3 by default;
//! the figure in the closing note comes from a longer run), and
//! ICMPGUARD_SYSLOG_GONE_SECS how long syslog stays away (5 by default).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::lab::{sh, wait_until, Lab};

const T: Duration = Duration::from_secs(10);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `n` distinct IPv4 addresses from a block of 10.0.0.0/8 chosen by `seed`,
/// plus some IPv6 and prefixes, as config entries.
fn big_list(n: u32, seed: u32) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .map(|i| {
            let a = 0x0a00_0000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i)) & 0x00ff_ffff);
            std::net::Ipv4Addr::from(a).to_string()
        })
        .collect();
    v.extend((0..n / 10).map(|i| format!("2001:db8:{seed:x}:{i:x}::1")));
    v.extend((0..n / 100).map(|i| format!("198.18.{}.0/24", i % 256)));
    v.sort();
    v.dedup();
    v
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn kill_9_in_the_middle_of_a_large_reconcile_loses_nothing() {
    let Some(mut lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    let rounds = env_num("ICMPGUARD_FAULT_ROUNDS", 3);
    let mut rng = 0x1234_5678u64;
    for round in 0..rounds {
        let mut list = big_list(100_000, round as u32 + 1);
        list.push("192.0.2.10".into());
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        lab.write_config(&refs, "");
        lab.signal(nix::sys::signal::Signal::SIGHUP);
        // Somewhere within the reconcile (which takes tens of milliseconds).
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        std::thread::sleep(Duration::from_micros(rng >> 33 & 0xffff));
        lab.signal(nix::sys::signal::Signal::SIGKILL);
        lab.daemon.take().unwrap().wait().unwrap();
        lab.start_daemon();
        let s = lab.status_json();
        let d = &s["drift"];
        assert_eq!(d["missing_in_kernel"].as_array().unwrap().len(), 0, "round {round}: {}", d["missing_in_kernel"]);
        assert_eq!(d["extra_in_kernel"].as_array().unwrap().len(), 0, "round {round}: {}", d["extra_in_kernel"]);
        assert_eq!(s["entries"].as_array().unwrap().len(), list.len(), "round {round}");
    }
    let (sent, got) = pinger.stop();
    assert!(sent > 20, "{sent}");
    assert_eq!(got, 0, "{got} of {sent} replies got through the kills and restarts");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_deleted_file_a_directory_or_a_dangling_symlink_keeps_the_previous_blocklist() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    let good = fs::read_to_string(&lab.config).unwrap();

    fs::remove_file(&lab.config).unwrap();
    assert!(lab.wait_log(&["reload refused, still enforcing the previous blocklist (1 entries)", "cannot read"], T));
    fs::create_dir(&lab.config).unwrap();
    assert!(lab.wait_log(&["reload refused", "is a directory, not a configuration file"], T));
    fs::remove_dir(&lab.config).unwrap();
    std::os::unix::fs::symlink(lab.dir.path().join("nowhere.toml"), &lab.config).unwrap();
    lab.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(lab.wait_log_count(&["reload refused", "cannot read"], 2, T));
    fs::remove_file(&lab.config).unwrap();

    assert_eq!(lab.status_json()["entries"].as_array().unwrap().len(), 1);
    lab.write_raw_config(&good);
    assert!(lab.wait_log(&["reload: +0 -0 entries, 1 enforced"], T));
    let (sent, got) = pinger.stop();
    assert!(sent > 50, "{sent}");
    assert_eq!(got, 0, "{got} of {sent} replies while the file was broken");
    assert_eq!(lab.count_log(&["reload: +0 -1"]), 0);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn bpffs_unmounted_under_the_daemon_keeps_enforcing_and_is_pinned_again() {
    let Some(mut lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    let bpffs = lab.bpffs.to_str().unwrap().to_string();
    // A plain umount is refused while the daemon holds pin_dir; a lazy one
    // detaches it from the tree anyway.
    sh(&["umount", "-l", &bpffs]);
    assert!(
        lab.wait_log(&["pin_dir", "is gone", "keeps enforcing while this daemon runs"], T),
        "{}",
        lab.syslog.lines().join("\n")
    );
    std::thread::sleep(Duration::from_millis(500));
    // Reloads go on while pin_dir is away.
    lab.write_config(&["192.0.2.10", "192.0.2.20"], "");
    assert!(lab.wait_log(&["reload: +1 -0 entries, 2 enforced"], T));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2), 0);

    sh(&["mount", "-t", "bpf", "bpf", &bpffs]);
    assert!(lab.wait_log(&["pin_dir", "is back: the filter is pinned again"], T), "{}", lab.syslog.lines().join("\n"));
    let s = lab.status_json();
    assert_eq!(s["entries"].as_array().unwrap().len(), 2);
    assert!(s["interfaces"].as_array().unwrap().iter().all(|l| l["attached"] == true), "{s}");
    // Pinned again for real: the filter outlives the daemon.
    assert_eq!(lab.stop_daemon(), Some(0));
    let (sent, got) = pinger.stop();
    assert_eq!(got, 0, "{got} of {sent} replies while bpffs was away");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0, "unpinned after the daemon stopped");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn syslog_gone_for_a_while_does_not_stop_the_filter_and_is_reconnected() {
    let Some(mut lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let away = Duration::from_secs(env_num("ICMPGUARD_SYSLOG_GONE_SECS", 5));
    lab.syslog.stop();
    let start = Instant::now();
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.05");
    while start.elapsed() < away {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (sent, got) = pinger.stop();
    assert_eq!(got, 0, "{got} of {sent} replies while syslog was gone");
    assert!(lab.daemon_stderr().contains("verdict=drop"), "events were not kept on stderr");
    lab.syslog.restart();
    assert!(
        wait_until(T, || {
            lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 1);
            lab.count_log(&["verdict=drop", "src=192.0.2.10"]) > 0
        }),
        "{}",
        lab.daemon_stderr()
    );
}
