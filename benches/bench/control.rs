//! Section 3, control plane: a cold start to READY=1 on large files, beside
//! `nft -f` and `ipset restore` loading the same sets; peak and steady
//! memory; and the time from a one-line edit of the file to the new entry
//! being in the kernel.

use std::net::Ipv4Addr;
use std::time::Duration;

use icmpguard::kernel::{sys, LinkTarget, PinnedLink};

use crate::gen::Set;
use crate::rate::start_daemon;
use crate::table::{self, Table};
use crate::world::{self, Daemon, Usage, R};
use crate::Ctx;

struct Cold {
    ready: Duration,
    peak_kb: u64,
    steady_kb: u64,
}

struct Peers {
    nft: Usage,
    ipset: Usage,
    check: Usage,
}

fn cold_start(ctx: &Ctx<'_>, set: &Set, tag: &str, settle: Duration) -> R<(Daemon, Cold)> {
    let d = start_daemon(ctx, set, &[], EVENTS, tag)?;
    let ready = d.spawned.elapsed();
    let peak_kb = d.status_kb("VmHWM");
    std::thread::sleep(settle);
    let steady_kb = d.status_kb("VmRSS");
    Ok((d, Cold { ready, peak_kb, steady_kb }))
}

fn peers(ctx: &Ctx<'_>, set: &Set, tag: &str) -> R<Peers> {
    let pair = ctx.pair;
    let nft_file = ctx.dir.join(format!("{tag}.nft"));
    let ipset_file = ctx.dir.join(format!("{tag}.ipset"));
    if !nft_file.exists() {
        std::fs::write(&nft_file, set.nft()).map_err(|e| e.to_string())?;
        std::fs::write(&ipset_file, set.ipset()).map_err(|e| e.to_string())?;
    }
    let netns = format!("--net=/run/netns/{}", pair.host);
    let nft = world::measure(&["nsenter", &netns, "nft", "-f", &nft_file.to_string_lossy()], None)?;
    world::run(&mut pair.cmd(&pair.host, &["nft", "delete", "table", "inet", "icmpbench"]))?;
    let ipset = world::measure(&["nsenter", &netns, "ipset", "restore"], Some(&ipset_file))?;
    world::run(&mut pair.cmd(&pair.host, &["ipset", "destroy"]))?;
    let config = ctx.dir.join(format!("{tag}.toml"));
    let check = world::measure(&[world::BIN, "check", "-c", &config.to_string_lossy()], None)?;
    Ok(Peers { nft, ipset, check })
}

/// How long one edit took to be enforced and to READY=1, and what
/// the daemon logged as its own reload time.
pub struct Edit {
    /// The rename of the save (before the times below start).
    pub rename: Duration,
    pub to_enforced: Duration,
    pub to_ready: Duration,
    pub logged_ms: Option<u64>,
}

/// Events for drops only: the probe below runs the daemon's program, and
/// its passes would otherwise become syslog lines.
pub const EVENTS: &str = "[events]\nlog = \"blocked\"\n";

/// Whether the XDP program attached to the host end now drops `frame`:
/// the datapath's own answer, whatever the maps look like inside.
fn drops(pin_dir: &std::path::Path, frame: &[u8]) -> bool {
    let links = pin_dir.join("links").join(world::HOST_IF);
    [("xdp_native", LinkTarget::XdpNative), ("xdp_generic", LinkTarget::XdpGeneric)].iter().any(|(file, target)| {
        let Ok(link) = PinnedLink::open(&links.join(file), *target, None) else { return false };
        let Ok(prog) = libbpf_rs::Program::fd_from_id(link.prog_id) else { return false };
        sys::prog_test_run(std::os::fd::AsFd::as_fd(&prog), frame, 1).is_ok_and(|r| r.retval == 1)
    })
}

fn edit(ctx: &Ctx<'_>, d: &Daemon, set: &Set, extra: &[String], tag: &str) -> R<Edit> {
    let pin_dir = ctx.bpffs.join(format!("icmpguard-{tag}"));
    let new: Ipv4Addr = extra.last().ok_or("no edit")?.parse().map_err(|_| "edit is not an IPv4 address")?;
    let text = set.toml(extra, &pin_dir.to_string_lossy(), &ctx.syslog.socket.to_string_lossy(), EVENTS);
    edit_to(ctx, d, &text, new, tag, Duration::from_micros(200))
}

/// Saves `text` (which adds `new`) as the file of the daemon `tag` by
/// write + rename, and measures from the rename's return until the
/// attached program drops an echo from `new` (probed every `poll`) and
/// until READY=1.
pub fn edit_to(ctx: &Ctx<'_>, d: &Daemon, text: &str, new: Ipv4Addr, tag: &str, poll: Duration) -> R<Edit> {
    let config = ctx.dir.join(format!("{tag}.toml"));
    let pin_dir = ctx.bpffs.join(format!("icmpguard-{tag}"));
    let frame = crate::packet::Packet::echo(&new.to_string(), world::HOST_V4).bytes();
    if drops(&pin_dir, &frame) {
        return Err(format!("{tag}: {new} is dropped before the edit"));
    }
    let mut log_from = std::fs::metadata(&ctx.syslog.output).map_or(0, |m| m.len());
    d.drain_notify();
    let (at, rename) = world::write_atomic_timed(&config, text)?;
    let (mut to_enforced, mut to_ready, mut reloading) = (None, None, false);
    while to_enforced.is_none() || to_ready.is_none() {
        if at.elapsed() > Duration::from_secs(30) {
            return Err(format!("{tag}: the edit was not enforced within 30 s"));
        }
        if to_enforced.is_none() && drops(&pin_dir, &frame) {
            to_enforced = Some(at.elapsed());
        }
        for n in d.drain_notify() {
            reloading |= n.contains("RELOADING=1");
            if reloading && n.contains("READY=1") && to_ready.is_none() {
                to_ready = Some(at.elapsed());
            }
        }
        std::thread::sleep(poll);
    }
    // "reload: +1 -0 entries, N enforced (M ms)"
    let mut logged_ms = None;
    world::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        logged_ms = ctx.syslog.tail(&mut log_from).lines().find_map(|l| {
            let rest = l.split("reload: ").nth(1)?;
            rest.rsplit('(').next()?.split_whitespace().next()?.parse().ok()
        });
        logged_ms.is_some()
    });
    Ok(Edit { rename, to_enforced: to_enforced.unwrap_or_default(), to_ready: to_ready.unwrap_or_default(), logged_ms })
}

pub fn measure(ctx: &Ctx<'_>) -> R<Vec<Table>> {
    let (big, mixed, rounds, edits): (u32, u32, usize, usize) =
        if ctx.quick { (100_000, 20_000, 1, 2) } else { (1_000_000, 100_000, 3, 5) };
    let settle = if ctx.quick { Duration::from_secs(1) } else { Duration::from_secs(3) };
    let files = [
        (format!("{} IPv4 addresses", table::count(u64::from(big))), Set::exact_v4(big), "big"),
        (format!("{} mixed (IPv4, IPv6, prefixes)", table::count(u64::from(mixed))), Set::mixed(mixed), "mixed"),
        ("10k IPv4 addresses".to_string(), Set::exact_v4(10_000), "small"),
    ];
    let mut start = Table::new(
        "3a. Control plane: cold start until the file is enforced",
        &[
            "file",
            "icmpguard to READY=1",
            "nft -f",
            "÷ nft -f",
            "ipset restore",
            "icmpguard check (parse only)",
            "target ≤ 0.25× nft -f",
        ],
    );
    let mut memory = Table::new(
        "3b. Control plane: memory",
        &[
            "file",
            "icmpguard peak RSS",
            "nft -f peak",
            "÷ nft -f",
            "ipset restore peak",
            "icmpguard check peak",
            "icmpguard steady RSS",
            "targets: peak ≤ 0.5× nft, steady ≤ 64 MB",
        ],
    );
    let mut edit_table = Table::new(
        "3c. Control plane: one-line edit of the file (add an address), daemon running",
        &["file", "save → enforced (XDP drops it)", "save → READY=1", "daemon's own reload time", "target"],
    );
    for (label, set, tag) in &files {
        let mut colds = Vec::new();
        let mut ps = Vec::new();
        let mut eds = Vec::new();
        for round in 0..rounds {
            let (d, cold) = cold_start(ctx, set, tag, settle)?;
            colds.push(cold);
            // Edits on the first round only: each adds one more address.
            if round == 0 && *tag != "mixed" {
                let mut extra = Vec::new();
                for i in 0..edits {
                    extra.push(format!("203.0.113.{}", i + 1));
                    eds.push(edit(ctx, &d, set, &extra, tag)?);
                    std::thread::sleep(Duration::from_millis(300));
                }
                // The next cold start reads the file without the edits.
                world::write_atomic(
                    &ctx.dir.join(format!("{tag}.toml")),
                    &set.toml(
                        &[],
                        &ctx.bpffs.join(format!("icmpguard-{tag}")).to_string_lossy(),
                        &ctx.syslog.socket.to_string_lossy(),
                        EVENTS,
                    ),
                )?;
            }
            d.stop()?;
            ps.push(peers(ctx, set, tag)?);
        }
        let med = |v: Vec<Duration>| table::median_duration(&v);
        let medk = |v: Vec<u64>| table::median(&v.iter().map(|&k| k as f64).collect::<Vec<_>>()) as u64;
        let ready = med(colds.iter().map(|c| c.ready).collect());
        let nft = med(ps.iter().map(|p| p.nft.wall).collect());
        let ipset = med(ps.iter().map(|p| p.ipset.wall).collect());
        let check = med(ps.iter().map(|p| p.check.wall).collect());
        let peak = medk(colds.iter().map(|c| c.peak_kb).collect());
        let steady = medk(colds.iter().map(|c| c.steady_kb).collect());
        let nft_peak = medk(ps.iter().map(|p| p.nft.max_rss_kb).collect());
        let ipset_peak = medk(ps.iter().map(|p| p.ipset.max_rss_kb).collect());
        let check_peak = medk(ps.iter().map(|p| p.check.max_rss_kb).collect());
        let measured = *tag != "small";
        start.row(vec![
            label.clone(),
            table::ms(ready),
            table::ms(nft),
            table::ratio(ready.as_secs_f64(), nft.as_secs_f64()),
            table::ms(ipset),
            table::ms(check),
            if measured {
                table::verdict(ready.as_secs_f64() <= 0.25 * nft.as_secs_f64()).into()
            } else {
                "—".into()
            },
        ]);
        memory.row(vec![
            label.clone(),
            table::mb(peak),
            table::mb(nft_peak),
            table::ratio(peak as f64, nft_peak as f64),
            table::mb(ipset_peak),
            table::mb(check_peak),
            table::mb(steady),
            if measured {
                format!(
                    "{} / {}",
                    table::verdict(peak as f64 <= 0.5 * nft_peak as f64),
                    table::verdict(steady <= 64 * 1024)
                )
            } else {
                "—".into()
            },
        ]);
        if !eds.is_empty() {
            let to_enforced = med(eds.iter().map(|e| e.to_enforced).collect());
            let to_ready = med(eds.iter().map(|e| e.to_ready).collect());
            let logged: Vec<f64> = eds.iter().filter_map(|e| e.logged_ms).map(|m| m as f64).collect();
            let limit = if *tag == "big" { Duration::from_millis(500) } else { Duration::from_millis(50) };
            edit_table.row(vec![
                label.clone(),
                table::ms(to_enforced),
                table::ms(to_ready),
                if logged.is_empty() { "—".into() } else { format!("{:.0} ms", table::median(&logged)) },
                format!("≤ {}: {}", table::ms(limit), table::verdict(to_enforced <= limit)),
            ]);
        }
    }
    start.note(format!(
        "Median of {rounds} cold start(s): from spawning `icmpguard run` (no pinned state, one interface to attach) to READY=1 on NOTIFY_SOCKET. nft -f loads the same addresses into sets of a table with the rules that use them, ipset restore into hash:ip (hash:net with prefixes) sets, each in the bench's namespace. `icmpguard check` is the parse of the same file alone."
    ));
    memory.note("Peak RSS: VmHWM of the daemon at READY=1; ru_maxrss (wait4) of nft, ipset and check. Steady: the daemon's VmRSS a few seconds after READY=1.");
    edit_table.note(format!(
        "Median of {edits} edits, each saved by write + rename; the time runs from the rename's return (the save is complete) to the attached XDP program dropping an echo from the new address (BPF_PROG_TEST_RUN on it every 0.2 ms), and to READY=1 after RELOADING=1. These daemons log drops only (`log = \"blocked\"`), so that the probe's passes are not events. The daemon's own time is the `reload: ... (N ms)` line it logs."
    ));
    Ok(vec![start, memory, edit_table, measure_starts(ctx)?])
}

/// The numbers of a start line: `started: N entries enforced on IFACE
/// (T ms: map creation M, load and verify A, fill B, attach C); ...`.
#[derive(Clone, Copy, Default)]
pub struct StartLine {
    pub total_ms: f64,
    pub parts: Option<[f64; 4]>,
}

fn parse_start_line(line: &str) -> Option<StartLine> {
    let rest = &line[line.find("started: ")?..];
    // The first "(T ms" whose T is a number: the interface description
    // before it may hold parentheses of its own.
    for (i, _) in rest.match_indices('(') {
        let after = &rest[i + 1..];
        let Some((num, tail)) = after.split_once(" ms") else { continue };
        let Ok(total_ms) = num.trim().parse::<f64>() else { continue };
        if tail.starts_with(')') {
            return Some(StartLine { total_ms, parts: None });
        }
        let body = tail.strip_prefix(": ")?;
        let body = &body[..body.find(')')?];
        let part = |name: &str| -> Option<f64> {
            let v = body.split(", ").find_map(|p| p.strip_prefix(name))?;
            v.trim().trim_end_matches("ms").trim().parse().ok()
        };
        return Some(StartLine {
            total_ms,
            parts: Some([part("map creation ")?, part("load and verify ")?, part("fill ")?, part("attach ")?]),
        });
    }
    None
}

/// The start line the daemon logged after `from` in the private syslog.
pub fn start_line(ctx: &Ctx<'_>, from: &mut u64) -> Option<StartLine> {
    let mut found = None;
    world::wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
        found = ctx.syslog.tail(from).lines().find_map(parse_start_line);
        found.is_some()
    });
    found
}

/// The time of the verification that follows a restart on the record
/// (`verified: ... (N ms)`), logged after `from`.
fn verify_ms(ctx: &Ctx<'_>, from: &mut u64) -> Option<f64> {
    let mut found = None;
    world::wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
        found = ctx.syslog.tail(from).lines().filter(|l| l.contains("verified: ")).find_map(|l| {
            let (_, tail) = l.rsplit_once(" (")?;
            tail.strip_suffix(" ms)")?.trim().parse::<f64>().ok()
        });
        found.is_some()
    });
    found
}

pub fn syslog_len(ctx: &Ctx<'_>) -> u64 {
    std::fs::metadata(&ctx.syslog.output).map_or(0, |m| m.len())
}

/// `nft -f` of `set` in the bench's namespace: wall time.
fn nft_load(ctx: &Ctx<'_>, set: &Set, tag: &str) -> R<Duration> {
    let pair = ctx.pair;
    let nft_file = ctx.dir.join(format!("{tag}.nft"));
    if !nft_file.exists() {
        std::fs::write(&nft_file, set.nft()).map_err(|e| e.to_string())?;
    }
    let netns = format!("--net=/run/netns/{}", pair.host);
    let nft = world::measure(&["nsenter", &netns, "nft", "-f", &nft_file.to_string_lossy()], None)?;
    world::run(&mut pair.cmd(&pair.host, &["nft", "delete", "table", "inet", "icmpbench"]))?;
    Ok(nft.wall)
}

/// 3d: cold start beside `nft -f` from 10 entries up, with the parts the
/// daemon's start line names, and a restart on the same file and pinned
/// state.
pub fn measure_starts(ctx: &Ctx<'_>) -> R<Table> {
    let sizes: &[u32] = if ctx.quick { &[10, 1000, 10_000, 100_000] } else { &[10, 1000, 10_000, 100_000, 1_000_000] };
    let mut t = Table::new(
        "3d. Control plane: cold start's parts beside nft -f, and restart, by size",
        &[
            "IPv4 addresses",
            "cold start to READY=1",
            "daemon's own",
            "map creation",
            "load and verify",
            "fill",
            "attach",
            "nft -f",
            "÷ nft -f",
            "target",
            "restart to READY=1",
            "restart, daemon's own",
            "verified after READY=1",
            "target ≤ 20 ms",
        ],
    );
    for &n in sizes {
        // A million entries: fewer rounds (nft -f alone takes seconds).
        let rounds = if ctx.quick {
            2
        } else if n >= 1_000_000 {
            3
        } else {
            5
        };
        let set = Set::exact_v4(n);
        let tag = format!("start{n}");
        let pin_dir = ctx.bpffs.join(format!("icmpguard-{tag}"));
        let config = ctx.dir.join(format!("{tag}.toml"));
        let (mut cold, mut lines, mut nft, mut restart, mut restart_lines, mut verified) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            // Cold: nothing pinned.
            let mut from = syslog_len(ctx);
            let d = start_daemon(ctx, &set, &[], EVENTS, &tag)?;
            cold.push(d.spawned.elapsed());
            lines.extend(start_line(ctx, &mut from));
            // Restart: SIGTERM, then a daemon of the same binary on the
            // same file and pinned state.
            d.stop_keeping_pins();
            let mut from = syslog_len(ctx);
            let mut d = Daemon::spawn(ctx.pair, &ctx.dir, &config, &pin_dir)?;
            d.ready(&ctx.dir, Duration::from_secs(60))?;
            restart.push(d.spawned.elapsed());
            // Read from the same place twice: the start line's reading may
            // take the verification's line with it.
            let mut from_verified = from;
            restart_lines.extend(start_line(ctx, &mut from));
            verified.extend(verify_ms(ctx, &mut from_verified));
            d.stop()?;
            nft.push(nft_load(ctx, &set, &tag)?);
        }
        let med = |v: &[Duration]| table::median_duration(v);
        let (cold, nft, restart) = (med(&cold), med(&nft), med(&restart));
        let own = |ls: &[StartLine]| {
            if ls.is_empty() {
                "—".to_string()
            } else {
                format!("{:.1} ms", table::median(&ls.iter().map(|l| l.total_ms).collect::<Vec<_>>()))
            }
        };
        let part = |k: usize| {
            let v: Vec<f64> = lines.iter().filter_map(|l| l.parts.map(|p| p[k])).collect();
            if v.is_empty() {
                "—".to_string()
            } else {
                format!("{:.1} ms", table::median(&v))
            }
        };
        let ratio = cold.as_secs_f64() / nft.as_secs_f64();
        let (limit, shown) = if n >= 100_000 { (0.25, "0.25") } else { (1.0, "1.0") };
        t.row(vec![
            table::count(u64::from(n)),
            table::ms(cold),
            own(&lines),
            part(0),
            part(1),
            part(2),
            part(3),
            table::ms(nft),
            table::ratio(cold.as_secs_f64(), nft.as_secs_f64()),
            format!("≤ {shown}×: {}", table::verdict(ratio <= limit)),
            table::ms(restart),
            own(&restart_lines),
            if verified.is_empty() { "—".to_string() } else { format!("{:.1} ms", table::median(&verified)) },
            table::verdict(restart <= Duration::from_millis(20)).into(),
        ]);
    }
    t.note(
        "Median of 5 rounds per size (3 for 1M; 2 in --quick), each: a cold start (nothing pinned: from spawning `icmpguard run` to READY=1 on NOTIFY_SOCKET), SIGTERM (the filter stays attached and pinned), a restart of the same binary on the same, unchanged file and pinned state (spawn to READY=1), SIGTERM and unload, then `nft -f` of the same addresses (a set and the rule that uses it, in the bench's namespace, started through nsenter as the daemon is). The files hold n exact IPv4 addresses (`log = \"blocked\"`, one interface)."
    );
    t.note("The daemon's own time and its parts are parsed from its start line, `started: N entries enforced on IFACE (T ms: map creation M, load and verify A, fill B, attach C)`; the rest of the cold start (process start, parse of the file, locking the pin directory, READY=1) is the difference between the two first columns. The two programs are verified at once (two loads of the object sharing the maps), so `load and verify` is the longer of the two; on a cold start the interface is attached while the maps are filled, so `attach` overlaps `fill` and the parts can add up to more than the daemon's own time. A restart of the same binary on the file its pinned maps last applied is ready before it reads the maps back: the daemon runs with a runtime directory (`RUNTIME_DIRECTORY`, as the unit's `RuntimeDirectory=` gives it), where the previous one left its restart record, so the restart reads the file but for its block list and adopts the maps whose digest the record names. Right after READY=1, before anything else, it reads the file whole, and verifies and repairs the maps (`verified after READY=1`, from its `verified: ... (N ms)` line).");
    t.note("Targets (issue 13): restart to READY=1 ≤ 20 ms; cold start ≤ 1.0× `nft -f` at every size from 10 entries, ≤ 0.25× from 100k.");
    Ok(t)
}
