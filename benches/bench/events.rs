//! Section 4, events: the daemon's CPU under floods with default settings, and,
//! with rate limiting off, the highest event rate it forwards to syslog
//! without losing count: events the kernel queued, lines the private
//! rsyslogd received, losses the daemon reported, at increasing rates.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use icmpguard::kernel::Maps;

use crate::gen::{echo_frame, Set};
use crate::rate::start_daemon;
use crate::table::{self, Table};
use crate::world::{self, Daemon, Sender, R};
use crate::Ctx;

fn counters(pin_dir: &Path) -> R<icmpguard::skel::types::ig_counters> {
    let maps = Maps::open_pinned(&pin_dir.join("current")).map_err(|e| e.to_string())?;
    Ok(maps.read_counters())
}

/// What syslog received: event lines, and the losses the daemon reported
/// in its `N events suppressed (A reason, B reason)` lines, by reason.
#[derive(Default)]
struct Tally {
    lines: u64,
    /// When the last text arrived.
    last: Option<Instant>,
    reported: u64,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, text: &str) {
        for l in text.lines() {
            if l.contains("verdict=") && l.contains(" dir=") {
                self.lines += 1;
            } else if let Some(i) = l.find(" events suppressed (") {
                let n = l[..i].rsplit(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
                self.reported += n.parse::<u64>().unwrap_or(0);
                let parts = l[i + " events suppressed (".len()..].trim_end().trim_end_matches(')');
                for part in parts.split(", ") {
                    if let Some((n, reason)) = part.split_once(' ') {
                        *self.reasons.entry(reason.to_string()).or_default() += n.parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
    }

    fn reasons(&self) -> String {
        if self.reasons.is_empty() {
            return "—".into();
        }
        self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect::<Vec<_>>().join(", ")
    }
}

/// Reads syslog until nothing new came for `quiet`; the tally of it.
fn settle(ctx: &Ctx<'_>, from: &mut u64, quiet: Duration) -> Tally {
    let mut t = Tally::default();
    let mut last = Instant::now();
    let end = Instant::now() + Duration::from_secs(60);
    while last.elapsed() < quiet && Instant::now() < end {
        let text = ctx.syslog.tail(from);
        if !text.is_empty() {
            t.add(&text);
            last = Instant::now();
            t.last = Some(last);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    t
}

/// The sink's own capacity: lines per second the private rsyslogd takes
/// from a plain blocking sender of lines like the daemon's, for `window`.
fn rsyslog_capacity(ctx: &Ctx<'_>, window: Duration) -> R<f64> {
    let mut from = std::fs::metadata(&ctx.syslog.output).map_or(0, |m| m.len());
    settle(ctx, &mut from, Duration::from_millis(300));
    let sock = std::os::unix::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
    sock.connect(&ctx.syslog.socket).map_err(|e| e.to_string())?;
    let line = "<30>Jan  1 00:00:00 icmpguard[1]: verdict=drop dir=in if=bh0 proto=icmp type=echo-request code=0 src=192.0.2.10 dst=192.0.2.1 rule=192.0.2.10";
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < window {
        for _ in 0..100 {
            sock.send(line.as_bytes()).map_err(|e| e.to_string())?;
        }
        sent += 100;
    }
    let t = settle(ctx, &mut from, Duration::from_millis(1000));
    if t.lines < sent {
        return Err(format!("rsyslogd kept {} of {sent} lines from a blocking sender", t.lines));
    }
    Ok(sent as f64 / start.elapsed().as_secs_f64())
}

fn cpu_percent(d: &Daemon, ticks0: u64, t0: Instant) -> f64 {
    (d.cpu_ticks() - ticks0) as f64 / world::ticks_per_second() / t0.elapsed().as_secs_f64() * 100.0
}

/// Parses ping's "N packets transmitted".
fn transmitted(out: &str) -> u64 {
    out.lines()
        .find(|l| l.contains(" packets transmitted"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn under_load(ctx: &Ctx<'_>, window: Duration) -> R<Table> {
    let d = start_daemon(ctx, &Set::default(), &[world::BLOCKED_V4.into()], "", "events-default")?;
    let mut t = Table::new(
        "4a. Events: the daemon's CPU with default settings (log = \"all\", rate_limit = 100)",
        &["load", "ICMP packets/s", "daemon CPU", "syslog lines/s"],
    );
    let mut log_from = std::fs::metadata(&ctx.syslog.output).map_or(0, |m| m.len());
    settle(ctx, &mut log_from, Duration::from_millis(500));
    let secs = window.as_secs_f64();

    // Idle: the floor of the daemon's own cost.
    let (c0, t0) = (d.cpu_ticks(), Instant::now());
    std::thread::sleep(window);
    let cpu = cpu_percent(&d, c0, t0);
    let lines = settle(ctx, &mut log_from, Duration::from_millis(300)).lines;
    t.row(vec!["idle".into(), "0".into(), format!("{cpu:.1}%"), format!("{:.0}", lines as f64 / secs)]);

    // ping -f from an address that is not blocked: replies come back, so it
    // floods; requests and replies are both events (ingress and egress).
    let (c0, t0) = (d.cpu_ticks(), Instant::now());
    let pair = ctx.pair;
    let deadline = format!("{}", window.as_secs().max(1));
    let out = world::run(
        &mut pair
            .cmd(&pair.peer, &["ping", "-f", "-q", "-n", "-I", world::NEIGHBOUR_V4, "-w", &deadline, world::HOST_V4]),
    )?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_percent(&d, c0, t0);
    let sent = transmitted(&String::from_utf8_lossy(&out.stdout));
    let lines = settle(ctx, &mut log_from, Duration::from_millis(1500)).lines;
    t.row(vec![
        "ping -f from a neighbour (passed; request in + reply out)".into(),
        format!("{:.0}", 2.0 * sent as f64 / elapsed),
        format!("{cpu:.1}%"),
        format!("{:.0}", lines as f64 / elapsed),
    ]);

    // trafgen flood from the blocked address (as in table 2).
    let frame = echo_frame(pair.host_mac_bytes()?, world::BLOCKED_V4.parse().unwrap(), world::HOST_V4.parse().unwrap());
    let drops0 = pair.host_stat("xdp_drops")?;
    let sender = Sender::start(pair, &ctx.dir, &frame, None, 0)?;
    let (c0, t0) = (d.cpu_ticks(), Instant::now());
    std::thread::sleep(window);
    let cpu = cpu_percent(&d, c0, t0);
    let elapsed = t0.elapsed().as_secs_f64();
    sender.stop();
    let drops = pair.host_stat("xdp_drops")? - drops0;
    let lines = settle(ctx, &mut log_from, Duration::from_millis(1500)).lines;
    t.row(vec![
        "trafgen flood from the blocked address (dropped)".into(),
        format!("{:.0}", drops as f64 / elapsed),
        format!("{cpu:.1}%"),
        format!("{:.0}", lines as f64 / elapsed),
    ]);
    d.stop()?;
    t.note("CPU: the daemon's user + system time over the window, in % of one CPU. Lines per second include the once-a-second `N events suppressed` summaries.");
    Ok(t)
}

struct Step {
    offered: u64,
    seen: u64,
    queued: u64,
    lost: u64,
    lines: u64,
    reported: u64,
    reasons: String,
    cpu: f64,
    secs: f64,
}

fn unlimited(ctx: &Ctx<'_>) -> R<(Table, Option<u64>)> {
    let (rates, secs): (&[u64], u64) = if ctx.quick {
        (&[5_000, 20_000], 1)
    } else {
        (&[2_000, 5_000, 10_000, 15_000, 20_000, 50_000, 100_000, 200_000], 3)
    };
    let tag = "events-unlimited";
    let pin_dir = ctx.bpffs.join(format!("icmpguard-{tag}"));
    let capacity_before = rsyslog_capacity(ctx, Duration::from_secs(secs))?;
    let d = start_daemon(ctx, &Set::default(), &[world::BLOCKED_V4.into()], "[events]\nrate_limit = 0\n", tag)?;
    let pair = ctx.pair;
    let frame = echo_frame(pair.host_mac_bytes()?, world::BLOCKED_V4.parse().unwrap(), world::HOST_V4.parse().unwrap());
    let mut log_from = std::fs::metadata(&ctx.syslog.output).map_or(0, |m| m.len());
    settle(ctx, &mut log_from, Duration::from_millis(1200));
    let mut steps = Vec::new();
    for &rate in rates {
        let before = counters(&pin_dir)?;
        let (c0, t0) = (d.cpu_ticks(), Instant::now());
        let sender = Sender::start(pair, &ctx.dir, &frame, Some(rate), rate * secs)?;
        sender.wait(Duration::from_secs(secs * 3 + 10))?;
        let got = settle(ctx, &mut log_from, Duration::from_millis(2000));
        let after = counters(&pin_dir)?;
        steps.push(Step {
            offered: rate,
            seen: after.icmp_seen - before.icmp_seen,
            queued: after.events_queued - before.events_queued,
            lost: (after.events_lost - before.events_lost) + (after.events_suppressed - before.events_suppressed),
            lines: got.lines,
            reported: got.reported,
            reasons: got.reasons(),
            cpu: cpu_percent(&d, c0, t0),
            // Until the last line came: a daemon that falls behind forwards
            // after the sender stopped.
            secs: got.last.map_or(secs as f64, |l| (l - t0).as_secs_f64().max(secs as f64)),
        });
    }
    d.stop()?;
    let mut t = Table::new(
        "4b. Events with rate_limit = 0: forwarded to syslog, and accounted for",
        &[
            "offered",
            "ICMP seen",
            "events queued",
            "lost in kernel",
            "lines received",
            "losses reported",
            "lines + reported = seen",
            "forwarded/s",
            "÷ rsyslogd's capacity",
            "daemon CPU",
            "losses by reason",
        ],
    );
    // Measured before and after the steps (the machine is shared): the
    // better of the two.
    let capacity = capacity_before.max(rsyslog_capacity(ctx, Duration::from_secs(secs))?);
    let mut best = None;
    for s in &steps {
        let accounted = s.lines + s.reported == s.seen;
        if s.lines == s.seen && s.seen > 0 {
            best = Some(s.offered);
        }
        t.row(vec![
            format!("{}/s", table::count(s.offered)),
            s.seen.to_string(),
            s.queued.to_string(),
            s.lost.to_string(),
            s.lines.to_string(),
            s.reported.to_string(),
            if accounted {
                "yes".into()
            } else {
                format!("NO ({:+})", s.lines as i64 + s.reported as i64 - s.seen as i64)
            },
            format!("{:.0}", s.lines as f64 / s.secs),
            table::ratio(s.lines as f64 / s.secs, capacity),
            format!("{:.0}%", s.cpu),
            s.reasons.clone(),
        ]);
    }
    t.note(format!(
        "trafgen at a fixed rate for {secs} s per step, ICMP echo from the blocked address, log = \"all\"; lines counted in the private rsyslogd's output once it went quiet; losses reported = the sum of the daemon's `N events suppressed` lines. Highest rate forwarded without loss: {}. rsyslogd's socket queues {} datagrams (net.unix.max_dgram_qlen as systemd sets it).",
        best.map_or("none of the rates".into(), |b| format!("{}/s", table::count(b))),
        world::SYSLOG_QLEN
    ));
    t.note(format!(
        "rsyslogd's capacity, the ceiling of this figure: {capacity:.0} lines/s taken from a plain blocking sender of the same lines, without loss (the better of a measure before and after the steps). Forwarded/s counts until the last line arrived."
    ));
    Ok((t, best))
}

pub fn measure(ctx: &Ctx<'_>) -> R<Vec<Table>> {
    let window = if ctx.quick { Duration::from_secs(2) } else { Duration::from_secs(5) };
    let a = under_load(ctx, window)?;
    let (b, _) = unlimited(ctx)?;
    Ok(vec![a, b])
}
