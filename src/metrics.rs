//! The Prometheus text file (`[metrics] textfile`), for node_exporter's
//! textfile collector: what the filter counted, in the text exposition
//! format, named as Prometheus' conventions ask (a unit or `_total`
//! suffix, snake_case labels), and replaced atomically so that a reader
//! never sees half of it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::addr::Family;
use crate::skel::types;

/// What one file says.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Per direction: ingress, egress (enum ig_direction).
    pub counters: [types::ig_counters; 2],
    /// (list, family, entries enforced).
    pub entries: Vec<(&'static str, Family, u64)>,
    /// Entries whose `until` passed, in the file but no longer enforced.
    pub expired: u64,
    pub reloads_applied: u64,
    pub reloads_refused: u64,
    /// Unix seconds of the last reload (0: none yet).
    pub last_reload_seconds: f64,
    pub last_reload_ok: bool,
    /// Events the daemon held back over `[events] rate_limit`.
    pub events_rate_limited: u64,
    pub dry_run: bool,
}

/// A metric's HELP and TYPE lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

const DIRECTIONS: [&str; 2] = ["ingress", "egress"];

/// The file's text.
pub fn render(f: &Figures) -> String {
    let mut out = String::new();
    let mut packets = Vec::new();
    for (dir, c) in DIRECTIONS.iter().zip(&f.counters) {
        let passed = c.icmp_seen.saturating_sub(c.dropped + c.limited + c.allowed);
        for (verdict, reason, n) in [
            ("drop", "block", c.dropped),
            ("drop", "limit", c.limited),
            ("pass", "allow", c.allowed),
            ("pass", "none", passed),
        ] {
            packets.push((format!("direction=\"{dir}\",verdict=\"{verdict}\",reason=\"{reason}\""), n.to_string()));
        }
    }
    family(
        &mut out,
        "icmpguard_packets_total",
        "counter",
        "ICMP and ICMPv6 packets the filter classified, by direction, verdict and reason (block: a block entry; limit: the echo rate limit; allow: an allow entry). In a dry run, drop counts what would have been dropped.",
        &packets,
    );
    family(
        &mut out,
        "icmpguard_dry_run",
        "gauge",
        "1 when the filter drops nothing (dry_run = true).",
        &[(String::new(), u8::from(f.dry_run).to_string())],
    );
    let entries: Vec<(String, String)> = f
        .entries
        .iter()
        .map(|(list, fam, n)| {
            let fam = match fam {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            };
            (format!("list=\"{list}\",family=\"{fam}\""), n.to_string())
        })
        .collect();
    family(
        &mut out,
        "icmpguard_entries",
        "gauge",
        "Entries the kernel enforces, by list and address family.",
        &entries,
    );
    family(
        &mut out,
        "icmpguard_expired_entries",
        "gauge",
        "Entries of the files whose until has passed: no longer enforced.",
        &[(String::new(), f.expired.to_string())],
    );
    family(
        &mut out,
        "icmpguard_reloads_total",
        "counter",
        "Reloads of the configuration, by result (refused: the file was invalid and the previous state was kept).",
        &[
            ("result=\"applied\"".to_string(), f.reloads_applied.to_string()),
            ("result=\"refused\"".to_string(), f.reloads_refused.to_string()),
        ],
    );
    family(
        &mut out,
        "icmpguard_last_reload_timestamp_seconds",
        "gauge",
        "When the configuration was last reloaded, applied or refused (Unix time).",
        &[(String::new(), format!("{:.3}", f.last_reload_seconds))],
    );
    family(
        &mut out,
        "icmpguard_last_reload_success",
        "gauge",
        "1 when the last reload was applied, 0 when it was refused.",
        &[(String::new(), u8::from(f.last_reload_ok).to_string())],
    );
    let sum = |g: fn(&types::ig_counters) -> u64| -> String { f.counters.iter().map(g).sum::<u64>().to_string() };
    family(
        &mut out,
        "icmpguard_events_queued_total",
        "counter",
        "Events the filter queued for the daemon.",
        &[(String::new(), sum(|c| c.events_queued))],
    );
    family(
        &mut out,
        "icmpguard_events_lost_total",
        "counter",
        "Events lost because the ring buffer was full.",
        &[(String::new(), sum(|c| c.events_lost))],
    );
    family(
        &mut out,
        "icmpguard_events_suppressed_total",
        "counter",
        "Events not logged, by cause (budget: over the in-kernel budget, never queued; rate_limit: over [events] rate_limit).",
        &[
            ("cause=\"budget\"".to_string(), sum(|c| c.events_suppressed)),
            ("cause=\"rate_limit\"".to_string(), f.events_rate_limited.to_string()),
        ],
    );
    out
}

/// Replaces `path` with `text`: a temporary file in the same directory,
/// written and synced, then renamed over it, so that a reader sees the old
/// file or the new one, never a part. Mode 0644: node_exporter reads it.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Hidden and not *.prom: the collector never reads it.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        let mut f = Figures::default();
        f.counters[0] = types::ig_counters { icmp_seen: 10, dropped: 3, limited: 2, allowed: 1, ..Default::default() };
        f.counters[1].icmp_seen = 4;
        f.counters[1].events_queued = 7;
        f.entries = vec![("block", Family::V4, 2), ("allow", Family::V6, 1)];
        f.reloads_applied = 3;
        f.reloads_refused = 1;
        f.last_reload_seconds = 1_798_070_400.5;
        f.last_reload_ok = true;
        f
    }

    #[test]
    fn every_metric_has_help_and_type_and_counters_end_in_total() {
        let text = render(&figures());
        let mut typed = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                typed.insert(name.to_string(), kind.to_string());
                assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains_key(name), "sample before its TYPE: {line}");
            }
        }
    }

    #[test]
    fn packets_by_direction_verdict_and_reason_add_up() {
        let text = render(&figures());
        for want in [
            "icmpguard_packets_total{direction=\"ingress\",verdict=\"drop\",reason=\"block\"} 3",
            "icmpguard_packets_total{direction=\"ingress\",verdict=\"drop\",reason=\"limit\"} 2",
            "icmpguard_packets_total{direction=\"ingress\",verdict=\"pass\",reason=\"allow\"} 1",
            "icmpguard_packets_total{direction=\"ingress\",verdict=\"pass\",reason=\"none\"} 4",
            "icmpguard_packets_total{direction=\"egress\",verdict=\"pass\",reason=\"none\"} 4",
            "icmpguard_entries{list=\"block\",family=\"ipv4\"} 2",
            "icmpguard_reloads_total{result=\"refused\"} 1",
            "icmpguard_last_reload_timestamp_seconds 1798070400.500",
            "icmpguard_events_queued_total 7",
        ] {
            assert!(text.lines().any(|l| l == want), "no line {want:?} in\n{text}");
        }
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("icmpguard-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("icmpguard.prom");
        write_atomic(&path, "a 1\n").unwrap();
        write_atomic(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["icmpguard.prom"], "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
