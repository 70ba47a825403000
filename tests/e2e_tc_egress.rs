//! Egress on kernels without tcx (before 6.6): a tc clsact filter in
//! direct-action mode with the same promises as the tcx link. Proven here
//! on any kernel by making the daemon take that path
//! (ICMPGUARD_TEST_KERNEL_LACKS=tcx), and on the real 5.10 and 6.1 by the
//! kernel tier (scripts/kernels.sh). Needs root.

mod common;

use std::time::Duration;

use common::lab::{Lab, HOST_IF};

const T: Duration = Duration::from_secs(10);

/// Every test here runs the daemon and `status` as on a kernel before 6.6.
fn lab_without_tcx() -> Option<Lab> {
    if !common::require_root() {
        return None;
    }
    // Each test of this binary sets the same value, so tests running in
    // parallel cannot see another.
    std::env::set_var("ICMPGUARD_TEST_KERNEL_LACKS", "tcx");
    Some(Lab::new())
}

/// Starts the daemon with the unit's capabilities only (CAP_BPF and
/// CAP_NET_ADMIN: no CAP_SYS_ADMIN to look programs up by id), as on a
/// Debian 12 host, and waits until it is ready.
fn start_with_unit_caps(lab: &mut Lab) {
    lab.spawn_daemon_wrapped(
        &["setpriv", "--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all", "--"],
        std::path::Path::new(common::lab::BIN),
    );
    assert!(lab.wait_notify("READY=1", T), "not ready: {}", lab.daemon_stderr());
}

fn tc(lab: &Lab, args: &[&str]) -> String {
    let mut full = vec!["tc"];
    full.extend_from_slice(args);
    let out = lab.ns(&lab.host, &full);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn status_code(lab: &Lab) -> Option<i32> {
    let pins = lab.pin_dir.to_str().unwrap();
    lab.icmpguard(&["status", "-c", lab.config.to_str().unwrap(), "--pin-dir", pins]).status.code()
}

fn egress_prog_id(lab: &Lab) -> Option<u64> {
    let s = lab.status_json();
    s["interfaces"].as_array()?.iter().find(|l| l["hook"] == "tc_egress" && l["attached"] == true)?["prog_id"].as_u64()
}

/// Echo requests from the guarded host to `dst` that reached the peer.
fn echos_reaching_peer(lab: &Lab, dst: &str) -> u64 {
    let group = if dst.contains(':') { "Icmp6" } else { "Icmp" };
    let before = lab.snmp(&lab.peer, group, "InEchos");
    lab.ping(&lab.host, None, dst, 3);
    lab.snmp(&lab.peer, group, "InEchos") - before
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn egress_is_a_tc_filter_that_outlives_the_daemon_and_unload_removes_it_with_its_qdisc() {
    let Some(mut lab) = lab_without_tcx() else { return };
    lab.write_config(&["192.0.2.10", "2001:db8::10"], "");
    start_with_unit_caps(&mut lab);
    assert!(lab.wait_log(&["started:", "gh0: ingress xdp", "egress tc egress"], T), "{}", lab.daemon_stderr());
    assert!(lab.wait_log(&["egress through tc clsact"], T));
    assert_eq!(status_code(&lab), Some(0));
    assert_eq!(lab.status_json()["kernel"]["egress"], "tc");
    let filters = tc(&lab, &["filter", "show", "dev", HOST_IF, "egress"]);
    assert!(filters.contains("icmpguard_tcx") && filters.contains("direct-action"), "{filters}");

    assert_eq!(echos_reaching_peer(&lab, "192.0.2.10"), 0, "an echo request left for the blocked address");
    assert_eq!(echos_reaching_peer(&lab, "2001:db8::10"), 0, "an echo request left for the blocked address");
    assert_eq!(echos_reaching_peer(&lab, "192.0.2.20"), 3, "the allowed neighbour was not reached");
    assert!(lab.wait_log(&["verdict=drop dir=out if=gh0", "dst=192.0.2.10 rule=192.0.2.10"], T));

    // kill -9: the filter stays; a new daemon of the same binary adopts it
    // with its program in the same slot (an upgrade swaps it there:
    // e2e_upgrade on this path).
    let before = egress_prog_id(&lab).expect("tc egress attached");
    lab.signal(nix::sys::signal::Signal::SIGKILL);
    lab.daemon.take().unwrap().wait().unwrap();
    assert_eq!(echos_reaching_peer(&lab, "192.0.2.10"), 0, "egress open without the daemon");
    let pinger = lab.pinger(&lab.host, "192.0.2.1", "192.0.2.10", "0.01");
    let reached = lab.snmp(&lab.peer, "Icmp", "InEchos");
    start_with_unit_caps(&mut lab);
    assert!(lab.wait_log(&["adopted pinned filter generation 1", "its programs, not loaded again"], T));
    assert_eq!(status_code(&lab), Some(0), "the adopted filter is not reported healthy");
    assert_eq!(egress_prog_id(&lab), Some(before), "the same program stays in the slot");
    std::thread::sleep(Duration::from_millis(300));
    pinger.stop();
    assert_eq!(lab.snmp(&lab.peer, "Icmp", "InEchos"), reached, "an echo request left during the restart");
    let filters = tc(&lab, &["filter", "show", "dev", HOST_IF, "egress"]);
    assert_eq!(filters.matches("handle 0x1c3d0001").count(), 1, "{filters}");

    assert_eq!(lab.stop_daemon(), Some(0));
    let out = lab.unload();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let qdiscs = tc(&lab, &["qdisc", "show", "dev", HOST_IF]);
    assert!(!qdiscs.contains("clsact"), "the clsact qdisc icmpguard added stayed: {qdiscs}");
    assert_eq!(echos_reaching_peer(&lab, "192.0.2.10"), 3);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn unload_leaves_a_clsact_qdisc_and_the_filters_someone_else_put_there() {
    let Some(mut lab) = lab_without_tcx() else { return };
    // The admin's own qdisc and filter (a classic BPF filter that matches
    // nothing), there before icmpguard.
    tc(&lab, &["qdisc", "add", "dev", HOST_IF, "clsact"]);
    let theirs = tc(&lab, &["filter", "add", "dev", HOST_IF, "egress", "prio", "100", "bpf", "bytecode", "1,6 0 0 0"]);
    assert!(!tc(&lab, &["filter", "show", "dev", HOST_IF, "egress"]).is_empty(), "{theirs}");
    lab.write_config(&["192.0.2.10"], "");
    lab.start_daemon();
    assert!(lab.wait_log(&["started:", "egress tc egress"], T));
    assert_eq!(echos_reaching_peer(&lab, "192.0.2.10"), 0);
    assert_eq!(lab.stop_daemon(), Some(0));
    assert_eq!(lab.unload().status.code(), Some(0));
    let filters = tc(&lab, &["filter", "show", "dev", HOST_IF, "egress"]);
    assert!(!filters.contains("icmpguard_tcx"), "{filters}");
    assert!(filters.contains("pref 100 bpf"), "the admin's filter went: {filters}");
    assert!(tc(&lab, &["qdisc", "show", "dev", HOST_IF]).contains("clsact"));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn someone_elses_filter_in_the_slot_is_never_replaced_and_status_says_egress_is_not_guarded() {
    let Some(mut lab) = lab_without_tcx() else { return };
    tc(&lab, &["qdisc", "add", "dev", HOST_IF, "clsact"]);
    tc(
        &lab,
        &[
            "filter",
            "add",
            "dev",
            HOST_IF,
            "egress",
            "prio",
            "1",
            "handle",
            "0x1c3d0001",
            "bpf",
            "bytecode",
            "1,6 0 0 0",
        ],
    );
    lab.write_config(&["192.0.2.10"], "");
    lab.start_daemon();
    assert!(
        lab.wait_log(&["started:", "gh0: ingress xdp", "egress NOT guarded"], T),
        "{}",
        lab.syslog.lines().join("\n")
    );
    assert!(lab.wait_log(&["cannot attach tc egress", "another program's"], T), "{}", lab.syslog.lines().join("\n"));
    assert_eq!(status_code(&lab), Some(3), "status says healthy with egress unguarded");
    let s = lab.status_json();
    assert_eq!(s["healthy"], false);
    assert_eq!(s["drift"]["interfaces_not_attached"], serde_json::json!(["gh0 (egress)"]));
    // Ingress is guarded all the same.
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);

    // Once the slot is free, the daemon's retry takes it.
    tc(&lab, &["filter", "del", "dev", HOST_IF, "egress", "prio", "1", "handle", "0x1c3d0001", "bpf"]);
    assert!(lab.wait_log(&["interface gh0: attached (tc egress)"], T), "{}", lab.syslog.lines().join("\n"));
    assert_eq!(status_code(&lab), Some(0));
    assert_eq!(echos_reaching_peer(&lab, "192.0.2.10"), 0);
}
