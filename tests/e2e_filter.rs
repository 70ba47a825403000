//! The filter's promises, proven with real packets: a daemon guarding one
//! end of a veth pair in its own namespace, the real `ping`, crafted frames
//! from scapy, and the events read back from a private rsyslogd.
//! Needs root.

mod common;

use std::time::Duration;

use common::lab::{Lab, HOST_IF};

const T: Duration = Duration::from_secs(5);

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn blocked_ipv4_address_gets_no_replies_while_a_neighbour_keeps_answering() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "") else {
        return;
    };
    let before = lab.snmp(&lab.host, "Icmp", "InEchos");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 0);
    assert_eq!(lab.snmp(&lab.host, "Icmp", "InEchos"), before, "the host's stack saw the blocked echo");
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 3), 3);
    assert!(lab.wait_log(
        &["icmpguard[", "verdict=drop dir=in if=gh0 proto=icmp type=echo-request code=0 src=192.0.2.10 dst=192.0.2.1 rule=192.0.2.10"],
        T
    ), "no drop event in syslog:\n{}", lab.syslog.lines().join("\n"));
    assert!(lab.wait_log(&["verdict=pass dir=in", "src=192.0.2.20 dst=192.0.2.1 rule=-"], T));
    assert!(lab.wait_log(&["verdict=pass dir=out", "type=echo-reply", "src=192.0.2.1 dst=192.0.2.20"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn address_inside_a_blocked_ipv4_prefix_gets_no_replies() {
    let Some(lab) = Lab::running(&["198.51.100.0/24"], "") else {
        return;
    };
    assert_eq!(lab.ping(&lab.peer, Some("198.51.100.7"), "198.51.100.1", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 2, "outside the prefix");
    assert!(lab.wait_log(&["verdict=drop", "src=198.51.100.7", "rule=198.51.100.0/24"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn blocked_ipv6_address_and_prefix_get_no_replies_while_a_neighbour_keeps_answering() {
    let Some(lab) = Lab::running(&["2001:db8::10", "2001:db8:dead::/48"], "") else {
        return;
    };
    let before = lab.snmp(&lab.host, "Icmp6", "InEchos");
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::10"), "2001:db8::1", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8:dead::7"), "2001:db8:dead::1", 3), 0);
    assert_eq!(lab.snmp(&lab.host, "Icmp6", "InEchos"), before);
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::20"), "2001:db8::1", 3), 3);
    assert!(lab.wait_log(
        &["verdict=drop dir=in", "proto=icmpv6 type=echo-request", "src=2001:db8::10", "rule=2001:db8::10"],
        T
    ));
    assert!(lab.wait_log(&["verdict=drop dir=in", "src=2001:db8:dead::7", "rule=2001:db8:dead::/48"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn echo_to_a_blocked_destination_is_dropped() {
    // The guarded host's own second address is blocked: nobody may ping it.
    let Some(lab) = Lab::running(&["192.0.2.2", "2001:db8::2"], "") else {
        return;
    };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.2", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("2001:db8::20"), "2001:db8::2", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2), 2);
    assert!(lab.wait_log(&["verdict=drop dir=in", "src=192.0.2.20 dst=192.0.2.2 rule=192.0.2.2"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn guarded_hosts_own_ping_to_a_blocked_address_never_leaves_it() {
    let Some(lab) = Lab::running(&["192.0.2.10", "2001:db8::10"], "") else {
        return;
    };
    let v4 = lab.snmp(&lab.peer, "Icmp", "InEchos");
    let v6 = lab.snmp(&lab.peer, "Icmp6", "InEchos");
    assert_eq!(lab.ping(&lab.host, None, "192.0.2.10", 3), 0);
    assert_eq!(lab.ping(&lab.host, None, "2001:db8::10", 3), 0);
    assert_eq!(lab.snmp(&lab.peer, "Icmp", "InEchos"), v4, "an echo request reached the blocked peer");
    assert_eq!(lab.snmp(&lab.peer, "Icmp6", "InEchos"), v6, "an echo request reached the blocked peer");
    assert_eq!(lab.ping(&lab.host, None, "192.0.2.20", 2), 2);
    assert!(lab
        .wait_log(&["verdict=drop dir=out if=gh0 proto=icmp type=echo-request", "dst=192.0.2.10 rule=192.0.2.10"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn pmtu_signals_from_a_blocked_address_still_arrive_with_icmp_echo() {
    let Some(lab) = Lab::running(&["192.0.2.10", "2001:db8::10"], "icmp = \"echo\"") else {
        return;
    };
    let unreach = lab.snmp(&lab.host, "Icmp", "InDestUnreachs");
    lab.scapy_send(
        "IP(src='192.0.2.10', dst='192.0.2.1')/ICMP(type=3, code=4, nexthopmtu=1400)/IP(src='192.0.2.1', dst='192.0.2.10')/UDP(sport=4000, dport=5000)",
    );
    let ptb = lab.snmp(&lab.host, "Icmp6", "InPktTooBigs");
    lab.scapy_send(
        "IPv6(src='2001:db8::10', dst='2001:db8::1')/ICMPv6PacketTooBig(mtu=1280)/IPv6(src='2001:db8::1', dst='2001:db8::10')/UDP(sport=4000, dport=5000)/Raw(b'x'*64)",
    );
    // The same path carries a crafted echo request, which must not arrive.
    let echos = lab.snmp(&lab.host, "Icmp", "InEchos");
    lab.scapy_send("IP(src='192.0.2.10', dst='192.0.2.1')/ICMP(type=8)");
    assert!(common::lab::wait_until(T, || lab.snmp(&lab.host, "Icmp", "InDestUnreachs") == unreach + 1));
    assert!(common::lab::wait_until(T, || lab.snmp(&lab.host, "Icmp6", "InPktTooBigs") == ptb + 1));
    // The filter's own event for the crafted echo: by then XDP has decided,
    // before the stack could count it.
    assert!(lab.wait_log(&["verdict=drop dir=in", "type=echo-request code=0 src=192.0.2.10 dst=192.0.2.1"], T));
    assert_eq!(lab.snmp(&lab.host, "Icmp", "InEchos"), echos, "crafted echo from the blocked address arrived");
    assert!(lab.wait_log(&["verdict=pass dir=in", "type=dest-unreachable code=4 src=192.0.2.10"], T));
    assert!(lab.wait_log(&["verdict=pass dir=in", "type=packet-too-big code=0 src=2001:db8::10"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn icmp_all_drops_other_messages_but_keeps_pmtu_signals() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "icmp = \"all\"") else {
        return;
    };
    let unreach = lab.snmp(&lab.host, "Icmp", "InDestUnreachs");
    let stamps = lab.snmp(&lab.host, "Icmp", "InTimestamps");
    lab.scapy_send("IP(src='192.0.2.10', dst='192.0.2.1')/ICMP(type=13)");
    lab.scapy_send(
        "IP(src='192.0.2.10', dst='192.0.2.1')/ICMP(type=3, code=4, nexthopmtu=1400)/IP(src='192.0.2.1', dst='192.0.2.10')/UDP(sport=4000, dport=5000)",
    );
    assert!(common::lab::wait_until(T, || lab.snmp(&lab.host, "Icmp", "InDestUnreachs") == unreach + 1));
    // The drop event is the barrier: XDP decided before the stack saw it.
    assert!(lab.wait_log(&["verdict=drop dir=in", "type=timestamp-request", "rule=192.0.2.10"], T));
    assert_eq!(lab.snmp(&lab.host, "Icmp", "InTimestamps"), stamps, "timestamp request from a blocked address arrived");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn ipv6_neighbour_discovery_with_a_blocked_address_keeps_working() {
    let Some(lab) = Lab::running(&["2001:db8::10"], "icmp = \"all\"") else {
        return;
    };
    // The neighbour that is not blocked answers (and the link is up).
    assert_eq!(lab.ping(&lab.host, None, "2001:db8::20", 2), 2);
    common::lab::sh(&["ip", "-n", &lab.host, "-6", "neigh", "flush", "dev", HOST_IF]);
    // The echo itself is dropped on egress, but only after the host has
    // resolved the blocked neighbour: a solicitation out, an advertisement
    // from the blocked address in.
    assert_eq!(lab.ping(&lab.host, None, "2001:db8::10", 1), 0);
    let neigh = || {
        let out = common::lab::sh(&["ip", "-n", &lab.host, "-6", "neigh", "show", "2001:db8::10", "dev", HOST_IF]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let resolved = common::lab::wait_until(T, || {
        let state = neigh();
        state.contains("lladdr") && !state.contains("FAILED") && !state.contains("INCOMPLETE")
    });
    assert!(resolved, "neighbour entry: {:?}\n{}", neigh(), lab.syslog.lines().join("\n"));
    assert!(lab.wait_log(&["verdict=pass dir=in", "type=neighbour-advertisement", "src=2001:db8::10"], T));
    assert!(lab.wait_log(&["verdict=drop dir=out", "type=echo-request", "dst=2001:db8::10"], T));
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn generic_xdp_mode_blocks_too() {
    let Some(lab) = Lab::running(&["192.0.2.10"], "mode = \"generic\"") else {
        return;
    };
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 0);
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.20"), "192.0.2.1", 2), 2);
    let status = lab.status_json();
    let xdp = status["interfaces"].as_array().unwrap().iter().find(|l| l["hook"] == "xdp").cloned().unwrap();
    assert_eq!(xdp["mode"], "generic");
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn without_a_syslog_socket_events_go_to_stderr_and_the_filter_is_unaffected() {
    if !common::require_root() {
        return;
    }
    let mut lab = Lab::new();
    let missing = lab.dir.path().join("no-such.sock");
    lab.write_config(&["192.0.2.10"], &format!("[syslog]\nsocket = \"{}\"", missing.display()));
    lab.start_daemon();
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 3), 0);
    assert!(common::lab::wait_until(T, || lab.daemon_stderr().contains("verdict=drop dir=in")));
    assert!(lab.daemon_stderr().contains("unavailable"), "{}", lab.daemon_stderr());
}

#[test]
#[cfg_attr(icmpguard_skip_privileged, ignore = "needs root; ICMPGUARD_SKIP_PRIVILEGED is set")]
fn sigterm_leaves_the_filter_enforcing_and_unload_removes_it() {
    let Some(mut lab) = Lab::running(&["192.0.2.10"], "") else {
        return;
    };
    assert_eq!(lab.stop_daemon(), Some(0));
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 0, "the filter went away with the daemon");
    let out = lab.unload();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!lab.pin_dir.exists());
    assert_eq!(lab.ping(&lab.peer, Some("192.0.2.10"), "192.0.2.1", 2), 2, "still blocked after unload");
    let again = lab.unload();
    assert!(again.status.success(), "unload is idempotent");
}
