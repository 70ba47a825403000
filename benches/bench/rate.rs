//! Section 2, packet rate on a veth pair: trafgen, one process pinned to CPU 0,
//! floods ICMP echo from a blocked address; the receiving end runs each
//! filter in turn. What counts is the rate at which the filter drops
//! (the veth's XDP drop counter, or the nftables rule's counter), beside
//! the rate of a program that drops everything.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::gen::{echo_frame, Set};
use crate::table::{self, Table};
use crate::world::{self, Daemon, Pair, Sender, R};
use crate::Ctx;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    DropAll,
    Icmpguard,
    IcmpguardNoLog,
    XdpFilter,
    Nft,
}

const FILTERS: [Contender; 5] =
    [Contender::DropAll, Contender::Icmpguard, Contender::IcmpguardNoLog, Contender::XdpFilter, Contender::Nft];

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::DropAll => "drop-all XDP program",
            Contender::Icmpguard => "icmpguard (default events, daemon running)",
            Contender::IcmpguardNoLog => "icmpguard (log = \"none\")",
            Contender::XdpFilter => "xdp-filter (default features)",
            Contender::Nft => "nftables netdev ingress drop",
        }
    }
}

const NFT_TABLE: &str = "table netdev icmpbench {
  chain ingress {
    type filter hook ingress device \"bh0\" priority -500; policy accept;
    ip saddr 192.0.2.10 icmp type echo-request counter drop
  }
}
";

/// A filter attached to the host end; detached on `teardown`.
struct Attached<'a> {
    filter: Contender,
    ctx: &'a Ctx<'a>,
    daemon: Option<Daemon>,
}

impl<'a> Attached<'a> {
    fn setup(ctx: &'a Ctx<'a>, filter: Contender, floor: &Path) -> R<Attached<'a>> {
        let pair = ctx.pair;
        let mut a = Attached { filter, ctx, daemon: None };
        match filter {
            Contender::DropAll => {
                let obj = floor.to_string_lossy();
                pair.isolated(
                    &ctx.bpffs,
                    &pair.host,
                    &["ip", "link", "set", "dev", world::HOST_IF, "xdpdrv", "obj", &obj, "sec", "xdp"],
                )?;
            }
            Contender::Icmpguard | Contender::IcmpguardNoLog => {
                let events = if filter == Contender::IcmpguardNoLog { "[events]\nlog = \"none\"\n" } else { "" };
                a.daemon = Some(start_daemon(ctx, &Set::default(), &[world::BLOCKED_V4.into()], events, "rate")?);
            }
            Contender::XdpFilter => {
                pair.isolated(&ctx.bpffs, &pair.host, &["xdp-filter", "load", "-m", "native", world::HOST_IF])?;
                pair.isolated(&ctx.bpffs, &pair.host, &["xdp-filter", "ip", world::BLOCKED_V4, "-m", "src"])?;
            }
            Contender::Nft => {
                let path = ctx.dir.join("rate.nft");
                std::fs::write(&path, NFT_TABLE).map_err(|e| e.to_string())?;
                world::run(&mut pair.cmd(&pair.host, &["nft", "-f", &path.to_string_lossy()]))?;
            }
        }
        Ok(a)
    }

    /// Packets the filter dropped so far.
    fn dropped(&self) -> R<u64> {
        match self.filter {
            Contender::Nft => {
                let out = world::run(
                    &mut self.ctx.pair.cmd(&self.ctx.pair.host, &["nft", "-j", "list", "table", "netdev", "icmpbench"]),
                )?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
                Ok(find_counter(&v).unwrap_or(0))
            }
            _ => self.ctx.pair.host_stat("xdp_drops"),
        }
    }

    fn teardown(mut self) -> R<()> {
        let pair = self.ctx.pair;
        match self.filter {
            Contender::DropAll => {
                pair.isolated(
                    &self.ctx.bpffs,
                    &pair.host,
                    &["ip", "link", "set", "dev", world::HOST_IF, "xdpdrv", "off"],
                )?;
            }
            Contender::Icmpguard | Contender::IcmpguardNoLog => {
                if let Some(d) = self.daemon.take() {
                    d.stop()?;
                }
            }
            Contender::XdpFilter => {
                pair.isolated(&self.ctx.bpffs, &pair.host, &["xdp-filter", "unload", world::HOST_IF])?;
            }
            Contender::Nft => {
                world::run(&mut pair.cmd(&pair.host, &["nft", "delete", "table", "netdev", "icmpbench"]))?;
            }
        }
        Ok(())
    }
}

fn find_counter(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(p) = m.get("counter").and_then(|c| c.get("packets")).and_then(serde_json::Value::as_u64) {
                return Some(p);
            }
            m.values().find_map(find_counter)
        }
        serde_json::Value::Array(a) => a.iter().find_map(find_counter),
        _ => None,
    }
}

/// Starts the daemon on the host end with `set` plus `extra` blocked, the
/// private rsyslogd and a pin directory of its own; waits for READY=1.
pub fn start_daemon(ctx: &Ctx<'_>, set: &Set, extra: &[String], events: &str, tag: &str) -> R<Daemon> {
    let pin_dir = ctx.bpffs.join(format!("icmpguard-{tag}"));
    let config = ctx.dir.join(format!("{tag}.toml"));
    let text = set.toml(extra, &pin_dir.to_string_lossy(), &ctx.syslog.socket.to_string_lossy(), events);
    world::write_atomic(&config, &text)?;
    let mut d = Daemon::spawn(ctx.pair, &ctx.dir, &config, &pin_dir)?;
    d.ready(&ctx.dir, Duration::from_secs(120))?;
    Ok(d)
}

/// Packets the peer end sent so far.
fn sent(pair: &Pair) -> R<u64> {
    let out = world::sh(&["ip", "-n", &pair.peer, "-j", "-s", "link", "show", world::PEER_IF])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0))
}

struct Sample {
    dropped_pps: f64,
    sent_pps: f64,
    cpu: Option<f64>,
}

fn one(ctx: &Ctx<'_>, filter: Contender, floor: &Path, frame: &[u8], window: Duration) -> R<Sample> {
    let a = Attached::setup(ctx, filter, floor)?;
    let sender = Sender::start(ctx.pair, &ctx.dir, frame, None, 0)?;
    std::thread::sleep(Duration::from_millis(500));
    let (d0, s0, c0, t0) = (a.dropped()?, sent(ctx.pair)?, a.daemon.as_ref().map(Daemon::cpu_ticks), Instant::now());
    std::thread::sleep(window);
    let (d1, s1, c1, t1) = (a.dropped()?, sent(ctx.pair)?, a.daemon.as_ref().map(Daemon::cpu_ticks), Instant::now());
    sender.stop();
    a.teardown()?;
    let secs = (t1 - t0).as_secs_f64();
    Ok(Sample {
        dropped_pps: (d1 - d0) as f64 / secs,
        sent_pps: (s1 - s0) as f64 / secs,
        cpu: c0.zip(c1).map(|(a, b)| (b - a) as f64 / world::ticks_per_second() / secs * 100.0),
    })
}

pub fn measure(ctx: &Ctx<'_>) -> R<Vec<Table>> {
    let floor = crate::datapath::build_floor(&ctx.dir)?;
    let frame =
        echo_frame(ctx.pair.host_mac_bytes()?, world::BLOCKED_V4.parse().unwrap(), world::HOST_V4.parse().unwrap());
    let (rounds, window) = if ctx.quick { (1, Duration::from_millis(1500)) } else { (5, Duration::from_secs(4)) };
    let mut samples: Vec<Vec<Sample>> = FILTERS.iter().map(|_| Vec::new()).collect();
    // Rounds interleave the filters, so that a noisy moment spreads over all.
    for _ in 0..rounds {
        for (i, f) in FILTERS.iter().enumerate() {
            samples[i].push(one(ctx, *f, &floor, &frame, window)?);
        }
    }
    let med = |i: usize, f: &dyn Fn(&Sample) -> f64| table::median(&samples[i].iter().map(f).collect::<Vec<_>>());
    let floor_pps = med(0, &|s| s.dropped_pps);
    let mut t = Table::new(
        "2. Packet rate: ICMP echo flood from a blocked address over a veth, native XDP",
        &["filter on the receiving end", "dropped", "÷ drop-all", "sent by trafgen", "daemon CPU", "target"],
    );
    for (i, f) in FILTERS.iter().enumerate() {
        let pps = med(i, &|s| s.dropped_pps);
        let cpu = if samples[i][0].cpu.is_some() {
            format!("{:.1}%", med(i, &|s| s.cpu.unwrap_or(0.0)))
        } else {
            "—".into()
        };
        let target = match f {
            Contender::Icmpguard => format!("≥ 0.9× drop-all: {}", table::verdict(pps >= 0.9 * floor_pps)),
            _ => "—".into(),
        };
        t.row(vec![
            f.label().into(),
            table::rate(pps),
            table::ratio(pps, floor_pps),
            table::rate(med(i, &|s| s.sent_pps)),
            cpu,
            target,
        ]);
    }
    t.note(format!(
        "trafgen 60-byte frames, one process on CPU 0 (qdisc bypassed); {rounds} round(s) of {:.1} s per filter, interleaved; median. On a veth the receiving XDP program runs in the sender's softirq on the same CPU, so the rates measure sender plus filter: compare them, not their absolute value.",
        window.as_secs_f64()
    ));
    t.note("xdp-filter is loaded with `xdp-filter load -m native` (through libxdp's dispatcher, as shipped) and `xdp-filter ip 192.0.2.10 -m src`; nftables runs one rule in a netdev ingress chain (no XDP: the packet becomes an skb first).");
    Ok(vec![t])
}
