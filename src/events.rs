//! Events from the ring buffer: decoding, the syslog line, and the rate
//! limit with its once-a-second summary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::addr::Prefix;
use crate::kernel::sys::from_bytes;
use crate::skel::types;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Dry run: passed, but the policy drops it.
    WouldDrop,
}

/// Why a packet was dropped, or passed although it matched an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    None,
    /// A block entry matched (`rule`).
    Block,
    /// Its source is over the echo rate limit.
    Limit,
    /// An allow entry matched (`rule`).
    Allow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// One ICMP packet the filter saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ns: u64,
    pub ifindex: u32,
    pub direction: Direction,
    pub verdict: Verdict,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub reason: Reason,
    /// The entry that matched: a block entry, or an allow entry.
    pub rule: Option<Prefix>,
}

impl Event {
    /// Decodes a ring buffer record; `None` for anything malformed (a
    /// record of another size, an unknown family or enum value).
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        let e: types::ig_event = from_bytes(bytes)?;
        let addr = |b: [u8; 16]| -> Option<IpAddr> {
            match e.family {
                4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
                6 => Some(IpAddr::V6(Ipv6Addr::from(b))),
                _ => None,
            }
        };
        let (src, dst) = (addr(e.src)?, addr(e.dst)?);
        const INGRESS: u8 = types::ig_direction::IG_INGRESS.0 as u8;
        const EGRESS: u8 = types::ig_direction::IG_EGRESS.0 as u8;
        const PASS: u8 = types::ig_verdict::IG_PASS.0 as u8;
        const DROP: u8 = types::ig_verdict::IG_DROP.0 as u8;
        const WOULD_DROP: u8 = types::ig_verdict::IG_WOULD_DROP.0 as u8;
        const R_NONE: u8 = types::ig_reason::IG_REASON_NONE.0 as u8;
        const R_BLOCK: u8 = types::ig_reason::IG_REASON_BLOCK.0 as u8;
        const R_LIMIT: u8 = types::ig_reason::IG_REASON_LIMIT.0 as u8;
        const R_ALLOW: u8 = types::ig_reason::IG_REASON_ALLOW.0 as u8;
        const NONE: u8 = types::ig_match::IG_MATCH_NONE.0 as u8;
        const SRC: u8 = types::ig_match::IG_MATCH_SRC.0 as u8;
        const DST: u8 = types::ig_match::IG_MATCH_DST.0 as u8;
        let direction = match e.direction {
            INGRESS => Direction::Ingress,
            EGRESS => Direction::Egress,
            _ => return None,
        };
        let verdict = match e.verdict {
            PASS => Verdict::Pass,
            DROP => Verdict::Drop,
            WOULD_DROP => Verdict::WouldDrop,
            _ => return None,
        };
        let reason = match e.reason {
            R_NONE => Reason::None,
            R_BLOCK => Reason::Block,
            R_LIMIT => Reason::Limit,
            R_ALLOW => Reason::Allow,
            _ => return None,
        };
        let matched = match e.r#match {
            NONE => None,
            SRC => Some(src),
            DST => Some(dst),
            _ => return None,
        };
        // The kernel reports the rule's prefix length as stored: IPv4 rules
        // count to 32 even when the packet carried an IPv4-mapped address.
        let rule = matched
            .filter(|_| matches!(reason, Reason::Block | Reason::Allow))
            .map(|a| Prefix::containing(crate::addr::canonical(a), e.rule_prefixlen));
        Some(Event {
            timestamp_ns: e.timestamp_ns,
            ifindex: e.ifindex,
            direction,
            verdict,
            icmp_type: e.icmp_type,
            icmp_code: e.icmp_code,
            src,
            dst,
            reason,
            rule,
        })
    }

    /// The syslog line with the note of the entry that matched, if it has
    /// one, last: ` note="..."`, quoted (see [`quote`]).
    pub fn line_noted(&self, iface: &str, note: Option<&str>) -> String {
        let mut line = self.line(iface);
        if let Some(n) = note {
            line.push_str(" note=");
            line.push_str(&quote(n));
        }
        line
    }

    /// The syslog line: stable, key=value, one line per packet.
    pub fn line(&self, iface: &str) -> String {
        let v6 = self.src.is_ipv6();
        format!(
            "verdict={} dir={} if={iface} proto={} type={} code={} src={} dst={} rule={} reason={}",
            match self.verdict {
                Verdict::Drop => "drop",
                Verdict::Pass => "pass",
                Verdict::WouldDrop => "would-drop",
            },
            match self.direction {
                Direction::Ingress => "in",
                Direction::Egress => "out",
            },
            if v6 { "icmpv6" } else { "icmp" },
            type_name(v6, self.icmp_type),
            self.icmp_code,
            self.src,
            self.dst,
            self.rule.map_or_else(|| "-".to_string(), |r| r.to_string()),
            match self.reason {
                Reason::None => "-",
                Reason::Block => "block",
                Reason::Limit => "limit",
                Reason::Allow => "allow",
            },
        )
    }
}

/// `text` in double quotes, as one token of a key=value line: `"` and `\`
/// escaped with a backslash, control characters (which a valid note does
/// not hold, but the line must stay one line whatever it is given) as
/// `\u{..}`.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The name of an ICMP (RFC 792) or ICMPv6 (RFC 4443, 4861) type, or its
/// number.
pub fn type_name(v6: bool, t: u8) -> String {
    let name = if v6 {
        match t {
            1 => "dest-unreachable",
            2 => "packet-too-big",
            3 => "time-exceeded",
            4 => "parameter-problem",
            128 => "echo-request",
            129 => "echo-reply",
            130 => "mld-query",
            131 => "mld-report",
            132 => "mld-done",
            133 => "router-solicitation",
            134 => "router-advertisement",
            135 => "neighbour-solicitation",
            136 => "neighbour-advertisement",
            137 => "redirect",
            143 => "mldv2-report",
            _ => "",
        }
    } else {
        match t {
            0 => "echo-reply",
            3 => "dest-unreachable",
            4 => "source-quench",
            5 => "redirect",
            8 => "echo-request",
            9 => "router-advertisement",
            10 => "router-solicitation",
            11 => "time-exceeded",
            12 => "parameter-problem",
            13 => "timestamp-request",
            14 => "timestamp-reply",
            _ => "",
        }
    };
    if name.is_empty() {
        t.to_string()
    } else {
        name.to_string()
    }
}

/// At most `limit` lines a second (0: no limit); what is over is counted
/// and reported once the second is over, printk-style.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window_start: Instant,
    sent: u32,
    suppressed: u64,
}

const WINDOW: Duration = Duration::from_secs(1);

impl RateLimiter {
    pub fn new(limit: u32, now: Instant) -> RateLimiter {
        RateLimiter { limit, window_start: now, sent: 0, suppressed: 0 }
    }

    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Whether one more line may go out now.
    pub fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.sent = 0;
        }
        if self.limit != 0 && self.sent >= self.limit {
            self.suppressed += 1;
            return false;
        }
        self.sent += 1;
        true
    }

    /// The lines suppressed since the last call (the daemon asks once a
    /// second); resets the count.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Counts the kernel side adds to a summary: events over the in-kernel
/// budget and events lost to a full ring buffer, as deltas.
#[derive(Debug, Default)]
pub struct KernelLosses {
    last_suppressed: Option<u64>,
    last_lost: Option<u64>,
}

impl KernelLosses {
    /// New losses since the previous call (the first call sets the base).
    pub fn delta(&mut self, counters: &types::ig_counters) -> (u64, u64) {
        let d = |last: &mut Option<u64>, now: u64| {
            let prev = last.replace(now).unwrap_or(now);
            now.saturating_sub(prev)
        };
        (d(&mut self.last_suppressed, counters.events_suppressed), d(&mut self.last_lost, counters.events_lost))
    }
}

/// The summary line, or `None` when nothing was lost.
/// Events held back since the last summary line, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Suppressed {
    /// Over `[events] rate_limit`, in user space.
    pub rate_limited: u64,
    /// Over the in-kernel budget: never queued.
    pub over_budget: u64,
    /// Lost to a full ring buffer.
    pub ring_full: u64,
    /// Refused by a busy syslog socket.
    pub syslog_busy: u64,
}

/// The once-a-second line that accounts for suppressed events; `None`
/// when there were none.
pub fn summary(s: &Suppressed) -> Option<String> {
    let Suppressed { rate_limited, over_budget, ring_full, syslog_busy } = *s;
    let total = rate_limited + over_budget + ring_full + syslog_busy;
    if total == 0 {
        return None;
    }
    let mut parts = Vec::new();
    if rate_limited > 0 {
        parts.push(format!("{rate_limited} over rate_limit"));
    }
    if over_budget > 0 {
        parts.push(format!("{over_budget} over the in-kernel budget"));
    }
    if ring_full > 0 {
        parts.push(format!("{ring_full} lost to a full ring buffer"));
    }
    if syslog_busy > 0 {
        parts.push(format!("{syslog_busy} refused by a busy syslog socket"));
    }
    Some(format!("{total} events suppressed ({})", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sys::bytes_of;

    fn raw(family: u8, src: &str, dst: &str) -> types::ig_event {
        let mut e = types::ig_event { family, icmp_type: 8, ..Default::default() };
        let put = |s: &str, out: &mut [u8; 16]| match s.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => *out = a.octets(),
        };
        put(src, &mut e.src);
        put(dst, &mut e.dst);
        e
    }

    #[test]
    fn dropped_ipv4_echo_names_interface_addresses_and_rule() {
        let mut e = raw(4, "198.51.100.7", "192.0.2.1");
        e.verdict = 1;
        e.r#match = 1;
        e.reason = 1;
        e.rule_prefixlen = 24;
        let ev = Event::decode(bytes_of(&e)).unwrap();
        assert_eq!(
            ev.line("veth0"),
            "verdict=drop dir=in if=veth0 proto=icmp type=echo-request code=0 src=198.51.100.7 dst=192.0.2.1 rule=198.51.100.0/24 reason=block"
        );
    }

    #[test]
    fn rate_limited_allowed_and_dry_run_lines_say_why() {
        let mut e = raw(4, "198.51.100.7", "192.0.2.1");
        e.verdict = types::ig_verdict::IG_DROP.0 as u8;
        e.r#match = 1;
        e.reason = types::ig_reason::IG_REASON_LIMIT.0 as u8;
        e.rule_prefixlen = 7; // ignored: a limit names no entry
        let line = Event::decode(bytes_of(&e)).unwrap().line("gh0");
        assert!(line.starts_with("verdict=drop dir=in"), "{line}");
        assert!(line.ends_with("rule=- reason=limit"), "{line}");

        e.verdict = types::ig_verdict::IG_PASS.0 as u8;
        e.reason = types::ig_reason::IG_REASON_ALLOW.0 as u8;
        e.rule_prefixlen = 24;
        let line = Event::decode(bytes_of(&e)).unwrap().line("gh0");
        assert!(line.ends_with("rule=198.51.100.0/24 reason=allow"), "{line}");

        e.verdict = types::ig_verdict::IG_WOULD_DROP.0 as u8;
        e.reason = types::ig_reason::IG_REASON_BLOCK.0 as u8;
        let line = Event::decode(bytes_of(&e)).unwrap().line("gh0");
        assert!(line.starts_with("verdict=would-drop "), "{line}");
        assert!(line.ends_with("rule=198.51.100.0/24 reason=block"), "{line}");
    }

    #[test]
    fn passed_ipv6_egress_has_no_rule() {
        let mut e = raw(6, "2001:db8::1", "2001:db8::2");
        e.direction = 1;
        e.icmp_type = 129;
        let ev = Event::decode(bytes_of(&e)).unwrap();
        assert_eq!(
            ev.line("eth0"),
            "verdict=pass dir=out if=eth0 proto=icmpv6 type=echo-reply code=0 src=2001:db8::1 dst=2001:db8::2 rule=- reason=-"
        );
    }

    #[test]
    fn v4_mapped_match_names_the_ipv4_rule() {
        let mut e = raw(6, "2001:db8::1", "::ffff:192.0.2.10");
        e.verdict = 1;
        e.r#match = 2;
        e.reason = 1;
        e.rule_prefixlen = 32;
        let ev = Event::decode(bytes_of(&e)).unwrap();
        assert_eq!(ev.rule, Some("192.0.2.10".parse().unwrap()));
    }

    #[test]
    fn malformed_records_are_refused() {
        let good = raw(4, "192.0.2.1", "192.0.2.2");
        assert!(Event::decode(&bytes_of(&good)[..55]).is_none());
        for bad in [
            types::ig_event { family: 5, ..good },
            types::ig_event { direction: 2, ..good },
            types::ig_event { verdict: 9, ..good },
            types::ig_event { r#match: 3, ..good },
            types::ig_event { reason: 4, ..good },
        ] {
            assert!(Event::decode(bytes_of(&bad)).is_none());
        }
    }

    #[test]
    fn notes_are_quoted_as_one_token() {
        let mut e = raw(4, "203.0.113.7", "192.0.2.1");
        e.verdict = 1;
        e.r#match = 1;
        e.reason = 1;
        e.rule_prefixlen = 32;
        let line = Event::decode(bytes_of(&e)).unwrap().line_noted("gh0", Some("scanner, \"ticket\" 4711"));
        assert!(line.ends_with(r#"reason=block note="scanner, \"ticket\" 4711""#), "{line}");
        assert_eq!(quote("a\\b\nc\u{1b}"), r#""a\\b\u{a}c\u{1b}""#);
    }

    #[test]
    fn unknown_types_print_as_numbers() {
        assert_eq!(type_name(false, 42), "42");
        assert_eq!(type_name(true, 2), "packet-too-big");
    }

    #[test]
    fn rate_limit_admits_the_limit_then_counts_and_reports_once() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(3, t0);
        let admitted = (0..10).filter(|_| rl.admit(t0)).count();
        assert_eq!(admitted, 3);
        assert_eq!(rl.take_suppressed(), 7);
        assert_eq!(rl.take_suppressed(), 0);
        assert!(!rl.admit(t0 + Duration::from_millis(999)), "same second");
        assert!(rl.admit(t0 + Duration::from_millis(1000)), "next second");
        assert_eq!(rl.take_suppressed(), 1);
    }

    #[test]
    fn zero_means_no_limit() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(0, t0);
        assert!((0..100_000).all(|_| rl.admit(t0)));
    }

    #[test]
    fn summary_totals_every_kind_of_loss() {
        assert_eq!(summary(&Suppressed::default()), None);
        assert_eq!(
            summary(&Suppressed { rate_limited: 5, over_budget: 2, ring_full: 1, syslog_busy: 0 }).unwrap(),
            "8 events suppressed (5 over rate_limit, 2 over the in-kernel budget, 1 lost to a full ring buffer)"
        );
    }

    #[test]
    fn kernel_losses_are_deltas() {
        let mut k = KernelLosses::default();
        let c = |s, l| types::ig_counters { events_suppressed: s, events_lost: l, ..Default::default() };
        assert_eq!(k.delta(&c(10, 3)), (0, 0));
        assert_eq!(k.delta(&c(15, 3)), (5, 0));
        assert_eq!(k.delta(&c(15, 7)), (0, 4));
    }
}
