//! The daemon's lifecycle promises, proven with real packets: hot reload
//! by every common way of saving, no gap during reloads, restarts and
//! migrations, last good wins, interfaces that come and go, events under
//! load, readiness and status. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::lab::{sh, wait_until, Lab, HOST_IF, PEER_IF};

const T: Duration = Duration::from_secs(5);

fn entries(lab: &Lab) -> Vec<String> {
    lab.status_json()["entries"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap().to_string()).collect()
}

/// The ways operators and tools save a file.
#[derive(Clone, Copy, Debug)]
enum Save {
    /// `>`: truncate and write the same inode.
    InPlace,
    /// GNU sed: a new file renamed over the old one.
    SedInPlace,
    /// A new file, then `mv` over the old one.
    MvOver,
    /// vim writing into the same inode.
    VimBackupcopyYes,
    /// vim renaming the old file away and writing a new one.
    VimBackupcopyNo,
    /// Ansible's atomic_move: a `.ansible_tmp*` file in the same directory,
    /// renamed over the old one.
    Ansible,
}

/// Adds `addr` at the top of the block list, saving the way `how` does.
fn save_with(lab: &Lab, how: Save, addr: &str) {
    let path = lab.config.to_str().unwrap();
    let old = fs::read_to_string(&lab.config).unwrap();
    let new = old.replacen("block = [\n", &format!("block = [\n  \"{addr}\",\n"), 1);
    assert_ne!(old, new);
    match how {
        Save::InPlace => fs::write(&lab.config, &new).unwrap(),
        Save::SedInPlace => {
            sh(&["sed", "-i", &format!("s/^block = \\[$/block = [\\n  \"{addr}\",/"), path]);
        }
        Save::MvOver | Save::Ansible => {
            let name = match how {
                Save::Ansible => ".ansible_tmpk2x9_icmpguard.toml",
                _ => "icmpguard.toml.new",
            };
            let tmp = lab.dir.path().join(name);
            fs::write(&tmp, &new).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
            sh(&["mv", "-f", tmp.to_str().unwrap(), path]);
        }
        Save::VimBackupcopyYes | Save::VimBackupcopyNo => {
            let mode = if matches!(how, Save::VimBackupcopyYes) { "yes" } else { "no" };
            sh(&[
                "vim.tiny",
                "-u",
                "NONE",
                "-i",
                "NONE",
                "-N",
                "-n",
                "-es",
                "-c",
                &format!("set writebackup backupcopy={mode}"),
                "-c",
                &format!("%s/^block = \\[$/block = [\\r  \"{addr}\",/"),
                "-c",
                "wq",
                path,
            ]);
        }
    }
    assert_eq!(fs::read_to_string(&lab.config).unwrap(), new, "{how:?} did not save what was expected");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn each_way_of_saving_is_enforced_within_a_second_by_one_reload() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let ways = [
        (Save::InPlace, "192.0.2.31"),
        (Save::SedInPlace, "192.0.2.32"),
        (Save::MvOver, "192.0.2.33"),
        (Save::VimBackupcopyYes, "192.0.2.34"),
        (Save::VimBackupcopyNo, "192.0.2.35"),
        (Save::Ansible, "192.0.2.36"),
    ];
    for (_, addr) in ways {
        lab.add_peer_addr(&format!("{addr}/24"));
        assert_eq!(lab.ping(&lab.peer, Some(addr), "192.0.2.1", 1), 1, "{addr} answers before it is blocked");
    }
    for (how, addr) in ways {
        let reloads = lab.count_log(&["reload: "]);
        save_with(&lab, how, addr);
        let saved = Instant::now();
        // How fast is the benchmark's to measure (scripts/bench.sh, 3c);
        // here, that the save is seen at all, by one reload.
        let enforced = wait_until(Duration::from_secs(5), || entries(&lab).iter().any(|e| e == addr));
        let took = saved.elapsed();
        assert!(enforced, "{how:?}: not enforced after {took:?}");
        assert_eq!(lab.ping(&lab.peer, Some(addr), "192.0.2.1", 2), 0, "{how:?}: {addr} still answers");
        // A SIGHUP's reload is the barrier: what the save queued before it
        // has been handled by the time its line is logged.
        lab.signal(nix::sys::signal::Signal::SIGHUP);
        assert!(lab.wait_log_count(&["reload: "], reloads + 2, T), "{how:?}: no reload for the SIGHUP");
        assert_eq!(lab.count_log(&["reload: +1 -0 entries"]), ways.iter().position(|w| w.1 == addr).unwrap() + 1);
        assert_eq!(lab.count_log(&["reload: "]), reloads + 2, "{how:?}: not exactly one reload for the save");
        eprintln!("{how:?}: enforced {took:?} after the save");
    }
    assert_eq!(lab.count_log(&["reload refused"]), 0, "{}", lab.syslog.lines().join("\n"));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn blocked_address_never_passes_during_a_hundred_reloads() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let blocked = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    let allowed = lab.pinger(&lab.peer, "192.0.2.20", "192.0.2.1", "0.01");
    let others = ["198.51.100.0/24", "2001:db8:beef::/48", "203.0.113.7", "2001:db8::99"];
    for i in 0..100 {
        let mut block = vec!["192.0.2.10"];
        // Add and remove other entries: each reload changes something.
        block.extend(others.iter().enumerate().filter(|(k, _)| (i >> k) & 1 == 1).map(|(_, o)| *o));
        if i % 2 == 1 {
            block.push("192.0.2.99");
        }
        lab.write_config(&block, "");
        lab.signal(nix::sys::signal::Signal::SIGHUP);
        assert!(lab.wait_notify("READY=1", T), "reload {i} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (sent, got) = blocked.stop();
    let (sent_ok, got_ok) = allowed.stop();
    assert!(sent > 100, "the blocked pinger sent only {sent}");
    assert_eq!(got, 0, "{got} of {sent} echo requests from the blocked address got a reply");
    assert!(got_ok + 1 >= sent_ok, "the allowed address lost replies: {got_ok} of {sent_ok}");
    assert!(lab.count_log(&["reload: "]) >= 100);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn sighup_and_saves_are_bracketed_by_reloading_and_ready_notifications() {
    let Some(mut lab) = Lab::running(&["192.0.2.10"], "") else { return };
    lab.drain_notify();
    lab.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(T, || lab.count_log(&["reload: +0 -0 entries"]) == 1));
    std::thread::sleep(Duration::from_millis(100));
    let msgs = lab.drain_notify();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msgs:?}");
    let usec: u64 = msgs[0].rsplit('=').next().unwrap().trim().parse().unwrap();
    assert!(usec > 0);
    assert!(msgs[1].contains("READY=1"), "{msgs:?}");
    assert_eq!(lab.stop_daemon(), Some(0));
    assert!(lab.drain_notify().iter().any(|m| m.contains("STOPPING=1")));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn kill_9_keeps_the_filter_and_a_restart_adopts_it_without_a_gap() {
    let Some(mut lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let before = lab.status_json();
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    lab.signal(nix::sys::signal::Signal::SIGKILL);
    lab.daemon.take().unwrap().wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.status_json()["daemon_pid"], serde_json::Value::Null, "status names a dead daemon");
    lab.start_daemon();
    std::thread::sleep(Duration::from_millis(300));
    let (sent, got) = pinger.stop();
    assert!(sent > 20, "{sent}");
    assert_eq!(got, 0, "{got} of {sent} replies around kill -9 and restart");
    assert!(lab.wait_log(&["adopted pinned filter generation 1 (1 entries", "its programs, not loaded again"], T));
    let after = lab.status_json();
    assert_eq!(after["generation"], 1);
    // The same links running the same programs: the binary did not change,
    // so its pinned programs are adopted as they are, neither loaded again
    // nor swapped (an upgrade swaps them: tests/e2e_upgrade.rs).
    for hook in ["xdp", common::egress_hook()] {
        let find = |s: &serde_json::Value| {
            s["interfaces"].as_array().unwrap().iter().find(|l| l["hook"] == hook).cloned().unwrap()
        };
        assert_eq!(find(&before)["link_id"], find(&after)["link_id"], "{hook} link was replaced");
        assert_eq!(find(&before)["prog_id"], find(&after)["prog_id"], "{hook} program was loaded again");
        assert_eq!(find(&after)["attached"], true);
    }
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_restart_applies_edits_made_while_the_daemon_was_down() {
    let Some(mut lab) = Lab::running(&["192.0.2.10", "198.51.100.0/24"], "") else { return };
    assert_eq!(lab.stop_daemon(), Some(0));
    lab.write_config(&["192.0.2.10", "192.0.2.20"], "");
    lab.start_daemon();
    assert!(lab.wait_log(&["started: 2 entries enforced on gh0"], T));
    assert_eq!(entries(&lab), vec!["192.0.2.10", "192.0.2.20"]);
    assert_eq!(lab.ping(&lab.peer, Some("198.51.100.7"), "198.51.100.1", 2), 2);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2), 0);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_restart_on_the_same_file_repairs_maps_changed_behind_its_back() {
    use icmpguard::addr::Family;
    use icmpguard::kernel::Maps;
    use libbpf_rs::{MapCore, MapFlags};

    let Some(mut lab) = Lab::running(&["192.0.2.10", "198.51.100.0/24"], "") else { return };
    assert_eq!(lab.stop_daemon(), Some(0));
    // Someone empties the IPv4 address table and sets the filter to a
    // dry run while no daemon runs.
    let maps = Maps::open_pinned(&lab.pin_dir.join("current")).unwrap();
    let table = maps.table(Family::V4);
    let zero = vec![0u8; table.value_size() as usize];
    for slot in 0..table.max_entries() {
        table.update(&slot.to_ne_bytes(), &zero, MapFlags::ANY).unwrap();
    }
    let mut settings = maps.read_settings().unwrap();
    settings.dry_run = 1;
    maps.write_settings(&settings).unwrap();
    drop(maps);
    let out = lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3), "status does not see the drift");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["drift"]["missing_in_kernel"].as_array().unwrap().contains(&"192.0.2.10".into()), "{s}");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 1), 1, "the tampering did not unblock");

    // The same binary on the same file: adopted on the restart record
    // (before the block list is read), ready at once, and the maps verified
    // against the whole file and repaired right after.
    lab.start_daemon();
    assert!(lab.wait_log(&["on the restart record, the file unchanged since it was applied"], T));
    assert!(
        lab.wait_log(&["verified: the pinned maps had changed", "settings rewritten); repaired"], T),
        "{}",
        lab.daemon_stderr()
    );
    let status = lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));
    assert_eq!(entries(&lab), vec!["192.0.2.10", "198.51.100.0/24"]);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);
    assert_eq!(lab.ping(&lab.peer, Some("198.51.100.7"), "198.51.100.1", 2), 0);

    // Unchanged maps: the next restart finds nothing to repair.
    assert_eq!(lab.stop_daemon(), Some(0));
    lab.start_daemon();
    assert!(lab.wait_log(&["verified: the pinned maps hold this file's 2 entries"], T), "{}", lab.daemon_stderr());
}

/// The hints (bpf/icmpguard.h) tell the programs where entries can be: an
/// address whose bucket lost its bit is not looked up, and gets through
/// though it is blocked. `status` must see that as an entry not enforced
/// (exit 3), and the daemon's verification of the maps must repair it.
#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_cleared_hint_lets_a_blocked_address_through_status_says_so_and_a_restart_repairs_it() {
    use icmpguard::kernel::Maps;
    use libbpf_rs::{MapCore, MapFlags};

    let Some(mut lab) = Lab::running(&["192.0.2.10", "198.51.100.0/24"], "") else { return };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 1), 0);
    assert_eq!(lab.stop_daemon(), Some(0));
    // The IPv4 bucket of 192.0.2.10 is its /16, 192.0: byte 192 % 8 of
    // word 192 / 8 of the hints.
    let maps = Maps::open_pinned(&lab.pin_dir.join("current")).unwrap();
    let bucket = usize::from(u16::from_ne_bytes([192, 0]));
    let key = u32::try_from(bucket / 8).unwrap().to_ne_bytes();
    let value = maps.hints.lookup(&key, MapFlags::ANY).unwrap().expect("the hint word");
    let word = u64::from_ne_bytes(value.as_slice().try_into().unwrap());
    let shift = bucket % 8 * 8;
    assert_ne!(word >> shift & 0xff, 0, "192.0/16 has no hint bit");
    maps.hints.update(&key, &(word & !(0xff << shift)).to_ne_bytes(), MapFlags::ANY).unwrap();
    drop(maps);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 1), 1, "the program looked without the hint");
    assert_eq!(lab.ping(&lab.peer, Some("198.51.100.7"), "198.51.100.1", 1), 0, "another entry");

    let out = lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3), "status does not see the entry unenforced");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["drift"]["missing_in_kernel"], serde_json::json!(["192.0.2.10"]), "{s}");
    assert_eq!(s["healthy"], false, "{s}");
    let text = lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(3));

    // The daemon's verification after it adopts the filter writes every
    // entry's hint again.
    lab.start_daemon();
    assert!(lab.wait_log(&["verified: the pinned maps"], T), "{}", lab.daemon_stderr());
    let status = lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);
}

/// The restart record of the lab's file, in the runtime directory the lab
/// gives the daemon.
fn restart_record(lab: &Lab) -> std::path::PathBuf {
    let dir = lab.dir.path().join("run");
    let found: Vec<std::path::PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("restart-"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_restart_record_is_used_only_while_the_file_and_the_maps_are_what_it_says() {
    let Some(mut lab) = Lab::running(&["192.0.2.10", "198.51.100.0/24"], "") else { return };
    let on_restart_record = ["on the restart record, the file unchanged since it was applied"];
    let read_whole = ["the file is what it last applied, the maps are verified once ready"];
    let verified = ["verified: the pinned maps hold this file's 2 entries"];
    // Stops the daemon, makes `change` while it is down, starts it again;
    // whether it started on the restart record and whether it read the
    // whole file before READY=1 (adopted on the meta map's digest).
    let restart = |lab: &mut Lab, change: &dyn Fn(&Lab)| {
        let before = [lab.count_log(&on_restart_record), lab.count_log(&read_whole), lab.count_log(&verified)];
        assert_eq!(lab.stop_daemon(), Some(0));
        change(lab);
        lab.start_daemon();
        assert!(lab.wait_log_count(&verified, before[2] + 1, T), "{}", lab.syslog.lines().join("\n"));
        assert_eq!(entries(lab), vec!["192.0.2.10", "198.51.100.0/24"]);
        assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 1), 0);
        (lab.count_log(&on_restart_record) > before[0], lab.count_log(&read_whole) > before[1])
    };

    // The same file and maps: the record is used.
    assert_eq!(restart(&mut lab, &|_| {}), (true, false));
    let record = restart_record(&lab);
    let text = fs::read_to_string(&record).unwrap();
    assert!(text.starts_with("icmpguard restart record 1\n"), "{text}");
    let rewrite = |from: &str, to: &str| {
        let text = fs::read_to_string(&record).unwrap();
        let line = text.lines().find(|l| l.starts_with(from)).unwrap().to_string();
        fs::write(&record, text.replace(&line, to)).unwrap();
    };

    // A record of another state of the maps: the file is read whole first.
    assert_eq!(restart(&mut lab, &|_| rewrite("digest ", "digest 00000000000000aa")), (false, true));
    // A record whose list is not where it says: read whole.
    assert_eq!(restart(&mut lab, &|_| rewrite("block ", "block 3 9")), (false, true));
    // The file saved again with the same bytes (another inode): read
    // whole; the record follows the new version.
    let resave = |lab: &Lab| {
        let new = lab.config.with_extension("new");
        fs::write(&new, fs::read(&lab.config).unwrap()).unwrap();
        fs::set_permissions(&new, fs::Permissions::from_mode(0o600)).unwrap();
        fs::rename(&new, &lab.config).unwrap();
    };
    assert_eq!(restart(&mut lab, &resave), (false, true));
    assert_eq!(restart(&mut lab, &|_| {}), (true, false));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_blocklist_that_outgrows_the_maps_is_migrated_without_a_gap() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let capacity = lab.status_json()["capacity"].as_u64().unwrap();
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    let many: Vec<String> =
        (0..capacity + 2000).map(|i| format!("2001:db8:{:x}:{:x}::1", (i >> 16) & 0xffff, i & 0xffff)).collect();
    let mut block: Vec<&str> = many.iter().map(String::as_str).collect();
    block.push("192.0.2.10");
    lab.write_config(&block, "");
    assert!(
        lab.wait_log(&["reload: +", "moved to new maps for"], Duration::from_secs(20)),
        "{}",
        lab.syslog.lines().join("\n")
    );
    std::thread::sleep(Duration::from_millis(300));
    let (sent, got) = pinger.stop();
    assert_eq!(got, 0, "{got} of {sent} replies during the migration");
    let status = lab.status_json();
    assert_eq!(status["generation"], 2);
    assert!(status["capacity"].as_u64().unwrap() >= block.len() as u64);
    // A short list: a drop-counter slot per possible CPU.
    let cpus = libbpf_rs::num_possible_cpus().unwrap() as u64;
    assert_eq!(status["drop_counters"], serde_json::json!({ "slots": cpus, "cpus": cpus }), "{status}");
    assert_eq!(status["entries"].as_array().unwrap().len(), block.len());
    assert_eq!(status["drift"]["missing_in_kernel"].as_array().unwrap().len(), 0);
    // The drop counter of the rule that stayed came along.
    let rule = status["entries"].as_array().unwrap().iter().find(|e| e["rule"] == "192.0.2.10").unwrap().clone();
    assert!(rule["drops"].as_u64().unwrap() >= sent - 1, "{rule}");
    assert!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2) == 2);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn an_invalid_edit_keeps_the_previous_blocklist_and_logs_line_and_column() {
    let Some(lab) = Lab::running(&["192.0.2.10", "198.51.100.0/24"], "") else { return };
    let text = fs::read_to_string(&lab.config).unwrap();
    let broken = text.replacen("block = [\n", "block = [\n  \"192.0.2.300\",\n", 1).replace("\"192.0.2.10\",\n", "");
    lab.write_raw_config(&broken);
    let place = format!("{}:3:3: \"192.0.2.300\" is not an IPv4 or IPv6 address", lab.config.display());
    assert!(
        lab.wait_log(&["reload refused, still enforcing the previous blocklist (2 entries)", &place], T),
        "{}",
        lab.syslog.lines().join("\n")
    );
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0, "the previous blocklist was dropped");
    let status = lab.status_json();
    assert_eq!(status["last_reload"]["ok"], false);
    assert_eq!(entries(&lab), vec!["192.0.2.10", "198.51.100.0/24"]);
    // Fixing the file applies it.
    lab.write_config(&["198.51.100.0/24"], "");
    assert!(lab.wait_log(&["reload: +0 -1 entries, 1 enforced"], T));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 2);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_briefly_missing_emptied_or_half_written_file_never_unblocks() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    let good = fs::read_to_string(&lab.config).unwrap();
    // Deleted, then back.
    fs::remove_file(&lab.config).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    lab.write_raw_config(&good);
    std::thread::sleep(Duration::from_millis(600));
    // Emptied, then written.
    fs::write(&lab.config, "").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    fs::write(&lab.config, &good).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // Written in two halves, the first ending inside the block list.
    let cut = good.find("192.0.2.10").unwrap();
    {
        use std::io::Write;
        let mut f = fs::File::create(&lab.config).unwrap();
        f.write_all(&good.as_bytes()[..cut]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        f.write_all(&good.as_bytes()[cut..]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(600));
    // Deleted for good: reported, and still enforced.
    fs::remove_file(&lab.config).unwrap();
    assert!(lab.wait_log(&["reload refused", "cannot read"], T), "{}", lab.syslog.lines().join("\n"));
    let (sent, got) = pinger.stop();
    assert!(sent > 150);
    assert_eq!(got, 0, "{got} of {sent} replies while the file was missing, empty or half-written");
    assert_eq!(entries(&lab), vec!["192.0.2.10"]);
    assert_eq!(lab.count_log(&["reload: +0 -1"]), 0, "the entry was removed at some point");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn interfaces_follow_the_file() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else { return };
    let text = fs::read_to_string(&lab.config).unwrap();
    lab.write_raw_config(&text.replace(&format!("interfaces = [\"{HOST_IF}\"]"), "interfaces = []"));
    assert!(lab.wait_log(&["interface gh0: detached"], T));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 2, "still filtered without an interface");
    assert!(lab.status_json()["interfaces"].as_array().unwrap().is_empty());
    lab.write_raw_config(&text);
    let attached = format!("interface gh0: attached (xdp native, {})", common::egress_hook().replace('_', " "));
    assert!(lab.wait_log_count(&[&attached], 2, T));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);
}

fn recreate_veth(lab: &Lab, host_if: &str, peer_if: &str) {
    sh(&[
        "ip", "link", "add", host_if, "netns", &lab.host, "type", "veth", "peer", "name", peer_if, "netns", &lab.peer,
    ]);
    sh(&["ip", "-n", &lab.host, "addr", "add", "192.0.2.1/24", "dev", host_if]);
    sh(&["ip", "-n", &lab.peer, "addr", "add", "192.0.2.10/24", "dev", peer_if]);
    sh(&["ip", "-n", &lab.peer, "addr", "add", "192.0.2.20/24", "dev", peer_if]);
    sh(&["ip", "-n", &lab.host, "link", "set", host_if, "up"]);
    sh(&["ip", "-n", &lab.peer, "link", "set", peer_if, "up"]);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn an_interface_that_disappears_and_comes_back_is_guarded_again() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else { return };
    sh(&["ip", "-n", &lab.host, "link", "del", HOST_IF]);
    std::thread::sleep(Duration::from_millis(1500));
    let gone = lab.status_json();
    assert!(gone["interfaces"].as_array().unwrap().iter().all(|l| l["attached"] == false), "{gone}");
    recreate_veth(&lab, HOST_IF, PEER_IF);
    assert!(lab.wait_log_count(&["interface gh0: attached"], 2, T), "{}", lab.syslog.lines().join("\n"));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2), 2);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_missing_interface_is_reported_and_guarded_once_it_appears() {
    if !common::require_root() {
        return;
    }
    let mut lab = Lab::new();
    // Only gh9 will connect the namespaces.
    sh(&["ip", "-n", &lab.host, "link", "del", HOST_IF]);
    lab.write_config(&["192.0.2.10"], "");
    let text = fs::read_to_string(&lab.config).unwrap();
    lab.write_raw_config(&text.replace(&format!("[\"{HOST_IF}\"]"), "[\"gh9\"]"));
    lab.start_daemon();
    assert!(lab.wait_log(&["interface gh9: no such interface; it is attached when it appears"], T));
    recreate_veth(&lab, "gh9", "gp9");
    assert!(lab.wait_log(&["interface gh9: attached"], T));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 0);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn events_resume_after_rsyslogd_restarts() {
    let Some(mut lab) = Lab::running(&["192.0.2.10"], "") else { return };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 1), 0);
    assert!(lab.wait_log(&["verdict=drop", "src=192.0.2.10"], T));
    lab.syslog.restart();
    let before = lab.count_log(&["verdict=drop", "src=192.0.2.10"]);
    // Events of the moment syslog was away go to stderr; once the daemon
    // has reconnected (within a second or two), they go to syslog again.
    assert!(
        wait_until(T, || {
            assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 1), 0);
            lab.count_log(&["verdict=drop", "src=192.0.2.10"]) > before
        }),
        "no events after the restart:\n{}\n{}",
        lab.syslog.lines().join("\n"),
        lab.daemon_stderr()
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn a_flood_is_rate_limited_counted_and_cheap() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "[events]\nrate_limit = 50") else { return };
    let clk = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
    let cpu0 = lab.daemon_cpu_ticks();
    let start = Instant::now();
    // `ping -f` alongside, as an operator would try; the packet socket makes
    // it a real flood (ping waits for replies that never come).
    let ping_f = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0");
    let flood = lab.flood("192.0.2.10", "192.0.2.1", 3.0);
    let (ping_sent, ping_got) = ping_f.stop();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (lab.daemon_cpu_ticks() - cpu0) as f64 / clk / elapsed;
    let sent = flood + ping_sent;
    assert_eq!(ping_got, 0);
    assert!(flood > 20_000, "not a flood: {flood} packets in 3 s");
    std::thread::sleep(Duration::from_millis(1500));
    let lines = lab.syslog.lines();
    // Event lines per second of syslog time. The daemon's one-second
    // windows need not align with syslog's seconds: a calendar second sees
    // at most two windows' worth.
    let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
    for l in lines.iter().filter(|l| l.contains("verdict=drop")) {
        *per_second.entry(l.split(' ').next().unwrap().parse().unwrap()).or_default() += 1;
    }
    assert!(per_second.values().all(|&n| n <= 2 * 50), "{per_second:?}");
    let logged: usize = per_second.values().sum();
    assert!(logged as f64 <= 50.0 * (elapsed.ceil() + 2.0), "{logged} lines in {elapsed:.1} s");
    let suppressed: u64 = lines
        .iter()
        .filter(|l| l.contains(" events suppressed ("))
        .map(|l| l.split(" events suppressed").next().unwrap().rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let status = lab.status_json();
    let c = &status["counters"];
    assert!(c["events_suppressed"].as_u64().unwrap() > 0, "no in-kernel budget at work: {c}");
    assert!(c["dropped"].as_u64().unwrap() >= sent, "{c}");
    // Every dropped packet is either a line or counted in a summary (which
    // also counts the few neighbour-discovery events of the moment).
    let accounted = logged as u64 + suppressed;
    assert!(
        sent <= accounted && accounted <= sent + 50,
        "logged {logged} + suppressed {suppressed} vs sent {sent}; counters {c}\n{}",
        lines.iter().filter(|l| !l.contains("verdict=")).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(cpu < 0.25, "the daemon used {:.0}% of a CPU during the flood", cpu * 100.0);
    eprintln!(
        "flood: {sent} packets in {elapsed:.1} s, {logged} lines, {suppressed} suppressed, daemon CPU {:.1}%",
        cpu * 100.0
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn status_json_matches_the_file() {
    let Some(lab) = Lab::running(
        &["192.0.2.10", "::ffff:192.0.2.10", "198.51.100.0/24", "2001:db8::10", "2001:db8:dead::/48"],
        "icmp = \"all\"",
    ) else {
        return;
    };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 0);
    let s = lab.status_json();
    assert_eq!(s["loaded"], true);
    assert_eq!(s["policy"], "all");
    assert_eq!(s["log"], "all");
    assert_eq!(s["rate_limit"], 100);
    assert_eq!(s["daemon_pid"], lab.daemon_pid());
    assert_eq!(entries(&lab), vec!["192.0.2.10", "198.51.100.0/24", "2001:db8::10", "2001:db8:dead::/48"]);
    let drops = s["entries"][0]["drops"].as_u64().unwrap();
    assert_eq!(drops, 3, "{s}");
    let hooks: Vec<(String, String, bool)> = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["interface"].as_str().unwrap().into(),
                l["hook"].as_str().unwrap().into(),
                l["attached"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut want = vec![("gh0".into(), common::egress_hook().into(), true), ("gh0".into(), "xdp".into(), true)];
    want.sort();
    assert_eq!(hooks, want);
    assert!(s["counters"]["dropped"].as_u64().unwrap() >= 3);
    assert_eq!(s["last_reload"]["ok"], true);
    assert_eq!(s["healthy"], true, "{s}");
    let healthy =
        lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap(), "--pin-dir", lab.pin_dir.to_str().unwrap()]);
    assert_eq!(healthy.status.code(), Some(0), "{}", String::from_utf8_lossy(&healthy.stderr));
    let d = &s["drift"];
    for k in
        ["missing_in_kernel", "extra_in_kernel", "interfaces_not_attached", "interfaces_not_in_file", "settings_differ"]
    {
        assert_eq!(d[k].as_array().unwrap().len(), 0, "{k}: {d}");
    }
    // Drift: an entry in the file the daemon has not applied (SIGSTOP
    // keeps it from reloading).
    lab.signal(nix::sys::signal::Signal::SIGSTOP);
    lab.write_config(&["192.0.2.10", "203.0.113.9"], "icmp = \"all\"");
    let s = lab.status_json();
    // Both readings before the daemon runs again: it reloads at once.
    let text = lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap()]);
    lab.signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(s["drift"]["missing_in_kernel"], serde_json::json!(["203.0.113.9"]));
    assert_eq!(
        s["drift"]["extra_in_kernel"],
        serde_json::json!(["198.51.100.0/24", "2001:db8::10", "2001:db8:dead::/48"])
    );
    // A monitoring check: anything in the file not enforced is exit 3.
    assert_eq!(text.status.code(), Some(3), "status with drift");
    assert!(String::from_utf8_lossy(&text.stderr).contains("in the file, not in the kernel: 203.0.113.9"));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("in the file, not in the kernel: 203.0.113.9"), "{text}");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn run_refuses_an_invalid_file_a_pin_dir_off_bpffs_and_a_second_daemon() {
    if !common::require_root() {
        return;
    }
    let mut lab = Lab::new();
    lab.write_raw_config(&lab.with_syslog("interfaces = [\"gh0\"]\nblock = [\"192.0.2.1/24\"]\n"));
    let out = lab.icmpguard(&["run", "-c", lab.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:10: \"192.0.2.1/24\" has host bits set", lab.config.display())), "{err}");

    let off = lab.dir.path().join("not-bpffs");
    lab.write_raw_config(
        &lab.with_syslog(&format!("interfaces = [\"gh0\"]\nblock = []\npin_dir = \"{}\"\n", off.display())),
    );
    let out = lab.icmpguard(&["run", "-c", lab.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not on a bpffs") && err.contains("mount -t bpf bpf"), "{err}");
    assert!(!off.exists(), "created a directory off bpffs");

    lab.write_config(&["192.0.2.10"], "");
    lab.start_daemon();
    let out = lab.icmpguard(&["run", "-c", lab.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("another icmpguard daemon (pid {}) is using it", lab.daemon_pid())), "{err}");
    let out = lab.unload();
    assert_eq!(out.status.code(), Some(3), "unload while the daemon runs");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0, "the second daemon broke the first");

    let missing = lab.dir.path().join("missing.toml");
    let out = lab.icmpguard(&["run", "-c", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
