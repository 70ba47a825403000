//! The policy's promises, proven with real packets: the allow list (allow
//! wins, both directions), "no ping except these", the per-source echo rate
//! limit, ICMP type lists, dry run, hot reload of every policy key without a
//! gap, and `status` for all of them. A daemon guards one end of a veth
//! pair in its own namespace (tests/common/lab.rs); the peer pings it with
//! the real `ping` or sends frames crafted by scapy; events are read back
//! from a private rsyslogd. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::lab::{wait_until, Lab};

const T: Duration = Duration::from_secs(5);

/// The lab with the daemon running on `block`, `allow`, the top-level
/// `extra` keys and, when not empty, a `[limit]` table.
fn lab_with(block: &[&str], allow: &[&str], extra: &str, limit: &str) -> Option<Lab> {
    if !common::require_root() {
        return None;
    }
    let mut lab = Lab::new();
    write(&lab, block, allow, extra, limit);
    lab.start_daemon();
    Some(lab)
}

/// Rewrites the config atomically (write + rename), as the other tests do.
fn write(lab: &Lab, block: &[&str], allow: &[&str], extra: &str, limit: &str) {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    let mut text = format!("allow = [{}]\n{extra}\n", allow.join(", "));
    if !limit.is_empty() {
        text.push_str(&format!("[limit]\n{limit}\n"));
    }
    lab.write_config(block, &text);
}

fn log(lab: &Lab) -> String {
    lab.syslog.lines().join("\n")
}

/// `icmpguard status` (text or JSON) with the lab's file and pins.
fn status(lab: &Lab, json: bool) -> std::process::Output {
    let mut args = vec!["status", "-c", lab.config.to_str().unwrap(), "--pin-dir", lab.pin_dir.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    lab.icmpguard(&args)
}

/// Rewrites the config and waits until the daemon has applied it: one more
/// `reload: ` line, whose text contains every one of `expect`.
fn reload_to(lab: &Lab, block: &[&str], allow: &[&str], extra: &str, limit: &str, expect: &[&str]) {
    let before = lab.count_log(&["reload: "]);
    write(lab, block, allow, extra, limit);
    assert!(lab.wait_log_count(&["reload: "], before + 1, T), "no reload line:\n{}", log(lab));
    let lines = lab.syslog.lines();
    let last = lines.iter().rev().find(|l| l.contains("reload: ")).unwrap();
    assert!(expect.iter().all(|e| last.contains(e)), "the reload line lacks {expect:?}:\n{}", log(lab));
    assert_eq!(lab.count_log(&["reload refused"]), 0, "{}", log(lab));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn allowed_address_inside_a_blocked_prefix_answers_while_its_neighbours_do_not() {
    // 192.0.2.16/28 holds the peer's 192.0.2.20 and the two added below,
    // not the host's 192.0.2.1; the IPv6 prefix likewise.
    let Some(lab) = lab_with(&["192.0.2.16/28", "2001:db8::1:0/112"], &["192.0.2.21", "2001:db8::1:21"], "", "") else {
        return;
    };
    for a in ["192.0.2.21/24", "192.0.2.22/24", "2001:db8::1:21/64", "2001:db8::1:22/64"] {
        lab.add_peer_addr(a);
    }
    let echos = lab.snmp(&lab.host, "Icmp", "InEchos");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.21"), "192.0.2.1", 3), 3, "the allowed address");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.22"), "192.0.2.1", 3), 0, "a blocked neighbour");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 3), 0, "a blocked neighbour");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 2, "outside the prefix");
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::1:21"), "2001:db8::1", 3), 3, "the allowed address");
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::1:22"), "2001:db8::1", 3), 0, "a blocked neighbour");
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::20"), "2001:db8::1", 2), 2, "outside the prefix");
    assert!(
        lab.wait_log(
            &[
                "verdict=pass dir=in if=gh0 proto=icmp type=echo-request code=0 src=192.0.2.21 dst=192.0.2.1",
                "rule=192.0.2.21 reason=allow"
            ],
            T
        ),
        "{}",
        log(&lab)
    );
    // The reply goes to an allowed destination.
    assert!(lab.wait_log(&["verdict=pass dir=out", "type=echo-reply", "dst=192.0.2.21", "reason=allow"], T));
    assert!(lab.wait_log(
        &["verdict=drop dir=in", "type=echo-request", "src=192.0.2.22 dst=192.0.2.1 rule=192.0.2.16/28 reason=block"],
        T
    ));
    assert!(lab.wait_log(&["verdict=drop dir=in", "src=192.0.2.20 ", "rule=192.0.2.16/28 reason=block"], T));
    assert!(lab.wait_log(&["verdict=pass dir=in", "proto=icmpv6", "src=2001:db8::1:21", "reason=allow"], T));
    assert!(lab.wait_log(&["verdict=drop dir=in", "src=2001:db8::1:22", "rule=2001:db8::1:0/112 reason=block"], T));
    // 3 allowed + 2 outside the prefix reached the stack, no blocked one.
    assert_eq!(lab.snmp(&lab.host, "Icmp", "InEchos"), echos + 5);
    assert_eq!(lab.count_log(&["verdict=drop", "src=192.0.2.21 "]), 0, "{}", log(&lab));
    let s = lab.status_json();
    assert!(s["counters"]["allowed"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["counters"]["dropped"].as_u64().unwrap() >= 9, "{s}");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn no_ping_except_these_answers_the_allowed_peer_only() {
    let Some(lab) = lab_with(&["0.0.0.0/0", "::/0"], &["192.0.2.10", "2001:db8::10"], "", "") else {
        return;
    };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 3);
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::10"), "2001:db8::1", 3), 3);
    // Another destination on the host, from the allowed source: still allowed.
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "198.51.100.1", 2), 2);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("198.51.100.7"), "198.51.100.1", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::20"), "2001:db8::1", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8:dead::7"), "2001:db8:dead::1", 3), 0);
    // The guarded host itself pings only the allowed peer.
    assert_eq!(lab.ping(&lab.host, Some("192.0.2.1"), "192.0.2.10", 2), 2);
    assert_eq!(lab.ping(&lab.host, Some("192.0.2.1"), "192.0.2.20", 2), 0);
    assert!(lab.wait_log(&["verdict=drop dir=in", "src=192.0.2.20 dst=192.0.2.1 rule=0.0.0.0/0 reason=block"], T));
    assert!(lab.wait_log(&["verdict=drop dir=in", "src=2001:db8::20 dst=2001:db8::1 rule=::/0 reason=block"], T));
    assert!(
        lab.wait_log(&["verdict=pass dir=in", "src=2001:db8::10 dst=2001:db8::1 rule=2001:db8::10 reason=allow"], T)
    );
    assert!(
        lab.wait_log(&["verdict=drop dir=out", "type=echo-request", "dst=192.0.2.20 rule=0.0.0.0/0 reason=block"], T)
    );
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn allowed_destination_inside_a_blocked_prefix_is_reachable_from_the_guarded_host() {
    let Some(lab) = lab_with(&["192.0.2.16/28", "2001:db8::1:0/112"], &["192.0.2.21", "2001:db8::1:21"], "", "") else {
        return;
    };
    for a in ["192.0.2.21/24", "192.0.2.22/24", "2001:db8::1:21/64", "2001:db8::1:22/64"] {
        lab.add_peer_addr(a);
    }
    let v4 = lab.snmp(&lab.peer, "Icmp", "InEchos");
    let v6 = lab.snmp(&lab.peer, "Icmp6", "InEchos");
    assert_eq!(lab.ping(&lab.host, Some("192.0.2.1"), "192.0.2.21", 3), 3, "the allowed destination");
    assert_eq!(lab.ping(&lab.host, Some("192.0.2.1"), "192.0.2.22", 3), 0, "a blocked neighbour");
    assert_eq!(lab.ping(&lab.host, Some("2001:db8::1"), "2001:db8::1:21", 3), 3, "the allowed destination");
    assert_eq!(lab.ping(&lab.host, Some("2001:db8::1"), "2001:db8::1:22", 3), 0, "a blocked neighbour");
    assert_eq!(lab.ping(&lab.host, Some("192.0.2.1"), "192.0.2.10", 2), 2, "outside the prefix");
    assert!(lab.wait_log(
        &[
            "verdict=drop dir=out if=gh0 proto=icmp type=echo-request",
            "src=192.0.2.1 dst=192.0.2.22 rule=192.0.2.16/28 reason=block"
        ],
        T
    ));
    assert!(lab.wait_log(
        &[
            "verdict=drop dir=out",
            "proto=icmpv6 type=echo-request",
            "dst=2001:db8::1:22 rule=2001:db8::1:0/112 reason=block"
        ],
        T
    ));
    assert!(
        lab.wait_log(&["verdict=pass dir=out", "type=echo-request", "dst=192.0.2.21 rule=192.0.2.21 reason=allow"], T)
    );
    assert!(lab.wait_log(&["verdict=pass dir=in", "type=echo-reply", "src=192.0.2.21", "reason=allow"], T));
    // Egress drops never reached the peer: 3 allowed + 2 outside the prefix.
    assert_eq!(lab.snmp(&lab.peer, "Icmp", "InEchos"), v4 + 5, "an echo request to a blocked address left the host");
    assert_eq!(lab.snmp(&lab.peer, "Icmp6", "InEchos"), v6 + 3, "an echo request to a blocked address left the host");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn echo_rate_limit_admits_about_echo_per_second_from_a_flooding_source() {
    const ECHO: f64 = 20.0;
    const BURST: f64 = 2.0 * ECHO;
    let Some(lab) = lab_with(&["198.51.100.7"], &[], "", "echo = 20") else {
        return;
    };
    // A second source at a normal rate (5/s, under the limit).
    let calm = lab.pinger(&lab.peer, "192.0.2.20", "192.0.2.1", "0.2");
    let start = Instant::now();
    let out = lab.ns(&lab.peer, &["ping", "-n", "-q", "-i", "0.002", "-w", "3", "-I", "192.0.2.10", "192.0.2.1"]);
    let secs = start.elapsed().as_secs_f64();
    let (sent, got) = common::lab::ping_summary(&String::from_utf8_lossy(&out.stdout));
    let (calm_sent, calm_got) = calm.stop();
    let expected = ECHO * secs + BURST;
    eprintln!(
        "rate limit: flood sent {sent} in {secs:.2} s, {got} replies (expected about {expected:.0}); \
         calm source {calm_got} of {calm_sent}"
    );
    assert!(sent as f64 > 2.0 * expected, "the flood sent only {sent}: it proves nothing");
    assert!(
        (got as f64) >= 0.5 * expected && (got as f64) <= 1.5 * expected,
        "{got} replies from {sent} requests in {secs:.2} s; expected about {expected:.0}"
    );
    assert!(calm_sent >= 10, "the calm source sent only {calm_sent}");
    assert!(calm_got + 1 >= calm_sent, "the calm source lost replies: {calm_got} of {calm_sent}");
    assert_eq!(lab.ping(&lab.peer, Some("198.51.100.7"), "198.51.100.1", 3), 0, "the blocked source");
    assert!(lab.wait_log(
        &[
            "verdict=drop dir=in if=gh0 proto=icmp type=echo-request",
            "src=192.0.2.10 dst=192.0.2.1 rule=- reason=limit"
        ],
        T
    ));
    assert_eq!(lab.count_log(&["reason=limit", "src=192.0.2.20 "]), 0, "{}", log(&lab));
    let s = lab.status_json();
    // The blocked source's drops are counted as its entry's (its event
    // lines may fall under the event budget the flood just used up).
    let blocked = s["entries"].as_array().unwrap().iter().find(|e| e["rule"] == "198.51.100.7").cloned();
    assert_eq!(blocked.map(|e| e["drops"].clone()), Some(serde_json::json!(3)), "{s}");
    let limited = s["counters"]["limited"].as_u64().unwrap();
    assert!(s["limit"]["drops"].as_u64().unwrap() > 0, "{s}");
    assert!(limited > 0, "{s}");
    assert_eq!(s["limit"]["echo"], 20, "{s}");
    assert_eq!(s["limit"]["burst"], 40, "{s}");
    // Every request the flood lost was dropped by the limit (none was a
    // block drop: the blocked source sent 3).
    assert!(limited + 2 >= sent - got && limited <= sent - got + 2, "limited {limited}, lost {}: {s}", sent - got);
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn icmp_type_list_drops_timestamp_requests_and_lets_echo_through() {
    let Some(lab) = lab_with(&["192.0.2.10"], &[], "icmp = [\"timestamp-request\"]", "") else {
        return;
    };
    let stamps = lab.snmp(&lab.host, "Icmp", "InTimestamps");
    lab.scapy_send("IP(src='192.0.2.10', dst='192.0.2.1')/ICMP(type=13)");
    // The same request from an address not blocked arrives and is answered.
    lab.scapy_send("IP(src='192.0.2.20', dst='192.0.2.1')/ICMP(type=13)");
    assert!(
        wait_until(T, || lab.snmp(&lab.host, "Icmp", "InTimestamps") == stamps + 1),
        "the unblocked timestamp request did not arrive"
    );
    // The drop event is the barrier: XDP decided before the stack saw it.
    assert!(
        lab.wait_log(
            &[
                "verdict=drop dir=in if=gh0 proto=icmp type=timestamp-request code=0 src=192.0.2.10 dst=192.0.2.1",
                "rule=192.0.2.10 reason=block"
            ],
            T
        ),
        "{}",
        log(&lab)
    );
    // The host answered the unblocked request (this kernel counts the
    // reply in OutMsgs but not in OutTimestampReps: the egress event shows it).
    assert!(lab.wait_log(&["verdict=pass dir=out", "type=timestamp-reply", "dst=192.0.2.20"], T));
    assert_eq!(lab.snmp(&lab.host, "Icmp", "InTimestamps"), stamps + 1, "the blocked timestamp request arrived");
    assert_eq!(lab.count_log(&["type=timestamp-reply", "dst=192.0.2.10"]), 0, "the blocked source got a reply");
    // Echo is not in the list: the blocked source's ping is answered.
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 3);
    assert!(lab.wait_log(&["verdict=pass dir=in", "type=echo-request", "src=192.0.2.10 dst=192.0.2.1"], T));
    assert_eq!(lab.count_log(&["verdict=drop", "type=echo"]), 0, "{}", log(&lab));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn dry_run_answers_a_blocked_source_and_logs_would_drop() {
    let Some(lab) = lab_with(&["192.0.2.10", "2001:db8::10"], &[], "dry_run = true", "") else {
        return;
    };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 3);
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::10"), "2001:db8::1", 3), 3);
    assert!(lab.wait_log(&["started: ", "DRY RUN: nothing is dropped"], T), "{}", log(&lab));
    assert!(
        lab.wait_log(
            &[
                "verdict=would-drop dir=in if=gh0 proto=icmp type=echo-request code=0 src=192.0.2.10 dst=192.0.2.1",
                "rule=192.0.2.10 reason=block"
            ],
            T
        ),
        "{}",
        log(&lab)
    );
    assert!(lab.wait_log(&["verdict=would-drop dir=in", "src=2001:db8::10", "rule=2001:db8::10 reason=block"], T));
    assert_eq!(lab.count_log(&["verdict=drop"]), 0, "{}", log(&lab));
    let s = lab.status_json();
    assert_eq!(s["dry_run"], true, "{s}");
    assert!(s["counters"]["dropped"].as_u64().unwrap() >= 6, "{s}");
    assert_eq!(status(&lab, false).status.code(), Some(0));
    // Off again: the same source gets nothing.
    reload_to(&lab, &["192.0.2.10", "2001:db8::10"], &[], "dry_run = false", "", &["icmp = \"echo\""]);
    assert_eq!(lab.status_json()["dry_run"], false);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 0);
    assert!(lab.wait_log(&["verdict=drop dir=in", "src=192.0.2.10", "reason=block"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn blocked_source_gets_nothing_while_every_policy_key_is_reloaded_and_after_a_restart() {
    let block = ["192.0.2.10", "2001:db8::10"];
    let Some(mut lab) = lab_with(&block, &[], "", "") else {
        return;
    };
    let blocked = lab.pinger(&lab.peer, "192.0.2.10", "192.0.2.1", "0.01");
    let blocked6 = lab.pinger(&lab.peer, "2001:db8::10", "2001:db8::1", "0.01");
    // At 100/s, over the limit set below: only the allow list keeps it whole.
    let other = lab.pinger(&lab.peer, "192.0.2.20", "192.0.2.1", "0.01");
    let start = Instant::now();
    let steps: [(&[&str], &str, &str, &[&str]); 7] = [
        (&["192.0.2.20"], "", "", &["1 allowed"]),
        (&["192.0.2.20"], "icmp = [\"echo-request\", \"echo-reply\", \"timestamp-request\"]", "", &["icmp = ["]),
        (
            &["192.0.2.20"],
            "icmp = [\"echo-request\", \"echo-reply\"]",
            "echo = 10",
            &["limit 10 echo/s per source, burst 20"],
        ),
        (
            &["192.0.2.20"],
            "icmp = [\"echo-request\", \"echo-reply\"]",
            "echo = 10\nburst = 5",
            &["limit 10 echo/s per source, burst 5"],
        ),
        (&["192.0.2.20"], "icmp = \"all\"", "echo = 10\nburst = 5\nsources = 1024", &["moved to new maps"]),
        (
            &["192.0.2.20", "198.51.100.7"],
            "icmp = \"echo\"",
            "echo = 20\nsources = 1024",
            &["2 allowed", "limit 20 echo/s per source, burst 40"],
        ),
        (&["192.0.2.20"], "icmp = \"echo\"", "", &["icmp = \"echo\", 1 allowed"]),
    ];
    for (i, (allow, extra, limit, expect)) in steps.iter().enumerate() {
        reload_to(&lab, &block, allow, extra, limit, expect);
        let out = status(&lab, false);
        assert_eq!(out.status.code(), Some(0), "step {i}: {}", String::from_utf8_lossy(&out.stdout));
        // Some traffic under each configuration.
        std::thread::sleep(Duration::from_millis(400));
    }
    let lines = lab.syslog.lines();
    let last = lines.iter().rev().find(|l| l.contains("reload: ")).unwrap();
    assert!(last.ends_with("icmp = \"echo\", 1 allowed"), "the limit is still on: {last}");
    // A restart adopts what the last reload left, still without a gap.
    assert_eq!(lab.stop_daemon(), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    lab.start_daemon();
    assert!(lab.wait_log(&["adopted pinned filter generation"], T), "{}", log(&lab));
    std::thread::sleep(Duration::from_millis(300));
    let (sent, got) = blocked.stop();
    let (sent6, got6) = blocked6.stop();
    let (sent_ok, got_ok) = other.stop();
    eprintln!(
        "{:.1} s of reloads and a restart: blocked: {got} of {sent}, {got6} of {sent6}; allowed: {got_ok} of {sent_ok}",
        start.elapsed().as_secs_f64()
    );
    assert!(sent > 100 && sent6 > 100, "the blocked pingers sent only {sent} and {sent6}");
    assert_eq!(got, 0, "{got} of {sent} echo requests from the blocked address got a reply");
    assert_eq!(got6, 0, "{got6} of {sent6} echo requests from the blocked IPv6 address got a reply");
    assert!(got_ok + 2 >= sent_ok, "the allowed address lost replies: {got_ok} of {sent_ok}");
    let out = status(&lab, false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = lab.status_json();
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["daemon_pid"], lab.daemon_pid());
    assert_eq!(s["allow"], serde_json::json!([{ "rule": "192.0.2.20" }]), "{s}");
    assert_eq!(s["limit"]["echo"], 0, "{s}");
    assert_eq!(lab.count_log(&["reload refused"]), 0, "{}", log(&lab));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn status_shows_allow_policy_and_limit_and_exits_3_when_the_kernel_differs() {
    let Some(mut lab) = lab_with(
        &["192.0.2.10", "198.51.100.0/24"],
        &["192.0.2.20", "2001:db8::20"],
        "icmp = [\"echo-request\", \"timestamp-request\"]",
        "echo = 30\nburst = 5",
    ) else {
        return;
    };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0);
    let s = lab.status_json();
    assert_eq!(s["allow"], serde_json::json!([{ "rule": "192.0.2.20" }, { "rule": "2001:db8::20" }]), "{s}");
    assert_eq!(s["policy"], serde_json::json!(["echo-request", "timestamp-request"]), "{s}");
    assert_eq!(s["dry_run"], false, "{s}");
    assert_eq!(s["limit"]["echo"], 30, "{s}");
    assert_eq!(s["limit"]["burst"], 5, "{s}");
    assert_eq!(s["limit"]["sources"], 65536, "{s}");
    assert_eq!(s["limit"]["drops"], 0, "{s}");
    assert_eq!(s["healthy"], true, "{s}");
    let rules: Vec<&str> = s["entries"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["192.0.2.10", "198.51.100.0/24"], "{s}");
    assert!(s["counters"]["dropped"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(status(&lab, false).status.code(), Some(0));
    assert_eq!(status(&lab, true).status.code(), Some(0));

    // The daemon is down; the file changes; the kernel keeps the old.
    assert_eq!(lab.stop_daemon(), Some(0));
    write(
        &lab,
        &["192.0.2.10", "198.51.100.0/24"],
        &["192.0.2.20", "198.51.100.7"],
        "icmp = [\"echo-request\", \"timestamp-request\"]",
        "echo = 30\nburst = 5",
    );
    let out = status(&lab, true);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["healthy"], false, "{s}");
    assert_eq!(s["drift"]["missing_in_kernel"], serde_json::json!(["allow 198.51.100.7"]), "{s}");
    assert_eq!(s["drift"]["extra_in_kernel"], serde_json::json!(["2001:db8::20"]), "{s}");
    let text = status(&lab, false);
    assert_eq!(text.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("in the file, not in the kernel: allow 198.51.100.7"), "{stdout}");

    // A setting differs too.
    write(&lab, &["192.0.2.10", "198.51.100.0/24"], &["192.0.2.20", "2001:db8::20"], "icmp = \"echo\"", "echo = 30");
    let out = status(&lab, true);
    assert_eq!(out.status.code(), Some(3));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let differ: Vec<&str> =
        s["drift"]["settings_differ"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(differ.iter().any(|d| d.starts_with("icmp: kernel")), "{s}");
    assert!(differ.iter().any(|d| d.contains("limit: kernel echo = 30 burst = 5, file echo = 30 burst = 60")), "{s}");
    assert_eq!(s["drift"]["missing_in_kernel"].as_array().unwrap().len(), 0, "{s}");

    // The daemon back: it applies the file, and status is clean again.
    lab.start_daemon();
    assert!(wait_until(T, || status(&lab, false).status.code() == Some(0)), "{}", log(&lab));
}
