//! An upgrade to a binary whose BPF side changed, proven with real packets:
//! the test builds a variant of icmpguard (ICMPGUARD_TEST_VARIANT: another
//! ring buffer size, so the pinned maps no longer fit), swaps the daemons
//! while a blocked address pings every 10 ms, and swaps back. Needs root,
//! and cargo for the variant build.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::lab::Lab;

const T: Duration = Duration::from_secs(10);

fn variant_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("variant");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "icmpguard", "--target-dir"])
        .arg(&target)
        .env("ICMPGUARD_BPF_CFLAGS", "-DICMPGUARD_TEST_VARIANT")
        .current_dir(root)
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the variant failed");
    target.join("debug").join("icmpguard")
}

fn link(status: &serde_json::Value, hook: &str) -> serde_json::Value {
    status["interfaces"].as_array().unwrap().iter().find(|l| l["hook"] == hook).cloned().unwrap()
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn an_upgrade_that_changes_the_programs_and_a_map_migrates_without_a_gap() {
    if !common::require_root() {
        return;
    }
    let variant = variant_binary();
    let mut lab = Lab::new();
    lab.write_config(&["192.0.2.10"], "");
    lab.start_daemon();
    let v1 = lab.status_json();
    let pinger = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    std::thread::sleep(Duration::from_millis(300));

    // Upgrade: stop the old daemon, start the new build.
    assert_eq!(lab.stop_daemon(), Some(0));
    lab.start_daemon_bin(&variant);
    assert!(lab.wait_log(&["pinned filter generation 1 cannot be reused", "migrating it"], T));
    std::thread::sleep(Duration::from_millis(300));
    let v2 = lab.status_json();

    // And back (a downgrade is the same kind of change).
    assert_eq!(lab.stop_daemon(), Some(0));
    lab.start_daemon();
    assert!(lab.wait_log(&["pinned filter generation 2 cannot be reused"], T));
    std::thread::sleep(Duration::from_millis(300));
    let v3 = lab.status_json();
    let (sent, got) = pinger.stop();

    assert!(sent > 50, "{sent}");
    assert_eq!(got, 0, "{got} of {sent} echo requests from the blocked address got a reply across the upgrades");
    assert_eq!(
        (v1["generation"].as_u64(), v2["generation"].as_u64(), v3["generation"].as_u64()),
        (Some(1), Some(2), Some(3))
    );
    for hook in ["xdp", common::egress_hook()] {
        let ids: Vec<(u64, u64)> = [&v1, &v2, &v3]
            .iter()
            .map(|s| (link(s, hook)["link_id"].as_u64().unwrap(), link(s, hook)["prog_id"].as_u64().unwrap()))
            .collect();
        assert!(ids.windows(2).all(|w| w[0].0 == w[1].0), "{hook}: the link was replaced: {ids:?}");
        assert!(ids.windows(2).all(|w| w[0].1 != w[1].1), "{hook}: the program was not swapped: {ids:?}");
    }
    // Counters moved with the rules, and only one generation is pinned.
    let drops = v3["entries"][0]["drops"].as_u64().unwrap();
    assert!(drops + 5 >= sent, "{drops} drops counted for {sent} pings");
    let gens: Vec<_> = std::fs::read_dir(&lab.pin_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen_"))
        .collect();
    assert_eq!(gens, vec!["gen_3"]);
}
