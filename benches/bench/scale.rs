//! Section 3e, ten million entries (issue 13, target 3): 10M exact IPv4
//! and 1M exact IPv6 addresses plus 100k prefixes of six lengths, loaded by
//! the daemon (cold start, peak and steady memory, the kernel maps' memory,
//! a one-line edit until enforced), by `icmpguard check`, and by `nft -f`
//! (the same sets in a table with the rules that use them) under a time
//! limit and a memory cap. `--quick` runs the same at a hundredth.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use libbpf_rs::MapCore;

use crate::control::{self, Edit, StartLine, EVENTS};
use crate::gen;
use crate::table::{self, Table};
use crate::world::{self, Daemon, Usage, R};
use crate::Ctx;

/// The sizes of one run.
#[derive(Clone, Copy)]
struct Scale {
    v4: u32,
    v6: u32,
    prefixes: u32,
}

impl Scale {
    fn entries(self) -> u64 {
        u64::from(self.v4) + u64::from(self.v6) + u64::from(self.prefixes)
    }

    fn label(self) -> String {
        format!(
            "{} IPv4 + {} IPv6 exact + {} prefixes",
            table::count(u64::from(self.v4)),
            table::count(u64::from(self.v6)),
            table::count(u64::from(self.prefixes))
        )
    }
}

/// The list's lines (`  "ADDR",`), once: each edit writes it again.
fn block_lines(s: Scale) -> String {
    let mut body = String::with_capacity(s.entries() as usize * 18);
    gen::scale_entries(s.v4, s.v6, s.prefixes, |e| {
        let _ = writeln!(body, "  \"{e}\",");
    });
    body
}

/// The daemon's file: the edits' lines first, then the list.
fn toml(ctx: &Ctx<'_>, pin_dir: &Path, body: &str, extra: &[String]) -> String {
    let mut t = String::with_capacity(body.len() + 512);
    let _ = writeln!(t, "interfaces = [\"{}\"]\npin_dir = \"{}\"\nblock = [", world::HOST_IF, pin_dir.display());
    for e in extra {
        let _ = writeln!(t, "  \"{e}\",");
    }
    t.push_str(body);
    let _ = writeln!(t, "]\n\n{EVENTS}\n[syslog]\nsocket = \"{}\"", ctx.syslog.socket.display());
    t
}

/// The same sets for `nft -f`, written as they are generated.
fn write_nft(path: &Path, s: Scale) -> R<()> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut ok = Ok(());
    let mut put = |text: std::fmt::Arguments<'_>| {
        if ok.is_ok() {
            ok = w.write_fmt(text);
        }
    };
    put(format_args!("table inet icmpbench {{\n"));
    let mut v4 = true;
    put(format_args!("  set v4 {{\n    type ipv4_addr; flags interval;\n    elements = {{\n"));
    gen::scale_entries(s.v4, s.v6, s.prefixes, |e| {
        let text = e.to_string();
        if v4 && text.contains(':') {
            v4 = false;
            put(format_args!("    }}\n  }}\n  set v6 {{\n    type ipv6_addr; flags interval;\n    elements = {{\n"));
        }
        put(format_args!("      {text},\n"));
    });
    put(format_args!("    }}\n  }}\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"));
    put(format_args!("    ip saddr @v4 icmp type {{ echo-request, echo-reply }} drop\n"));
    put(format_args!("    ip6 saddr @v6 icmpv6 type {{ echo-request, echo-reply }} drop\n  }}\n}}\n"));
    ok.and_then(|()| w.flush()).map_err(|e| format!("{}: {e}", path.display()))
}

/// How `nft -f` of a size ended.
struct NftRun {
    scale: Scale,
    usage: Usage,
    /// Why it gave up, if it did.
    failed: Option<String>,
}

/// `nft -f` of the sets of `s` in the bench's namespace, killed after
/// `limit` and refused memory beyond `cap_kb` (its address space), so that
/// it gives up instead of taking the machine.
fn nft(ctx: &Ctx<'_>, s: Scale, limit: Duration, cap_kb: u64) -> R<NftRun> {
    let file = ctx.dir.join("scale.nft");
    write_nft(&file, s)?;
    let netns = format!("--net=/run/netns/{}", ctx.pair.host);
    let (secs, cap) = (limit.as_secs().to_string(), format!("--as={}", cap_kb * 1024));
    let args = ["prlimit", &cap, "timeout", "-s", "KILL", &secs, "nsenter", &netns, "nft", "-f"];
    let mut args: Vec<&str> = args.to_vec();
    let name = file.to_string_lossy().into_owned();
    args.push(&name);
    let (usage, code, stderr) = world::measure_status(&args, None)?;
    let _ = std::fs::remove_file(&file);
    let _ = world::run(&mut ctx.pair.cmd(&ctx.pair.host, &["nft", "delete", "table", "inet", "icmpbench"]));
    let failed = match code {
        0 => None,
        137 => Some(format!("killed after the limit of {} s", limit.as_secs())),
        c => Some(format!(
            "exit {c} (memory capped at {}): {}",
            table::mb(cap_kb),
            stderr.lines().next().unwrap_or_default()
        )),
    };
    Ok(NftRun { scale: s, usage, failed })
}

/// The kernel's memory for each BPF map the process `pid` holds (the
/// `memlock` of /proc/PID/fdinfo, which 6.x kernels compute from what the
/// map uses), by name, largest first.
fn kernel_maps(pid: i32) -> Vec<(String, u64)> {
    let mut seen = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    for e in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(e.path()) else { continue };
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)?.trim_start_matches(':').trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(bytes)) = (field("map_id"), field("memlock")) {
            seen.insert(id, bytes);
        }
    }
    let mut out: Vec<(String, u64)> = seen
        .into_iter()
        .map(|(id, bytes)| {
            let name = libbpf_rs::MapHandle::from_map_id(id as u32)
                .map_or_else(|_| format!("id {id}"), |m| m.name().to_string_lossy().into_owned());
            (name, bytes)
        })
        .collect();
    out.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    out
}

/// A ratio with the digits that matter below 0.01 too.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a / b < 0.01 {
        format!("{:.4}×", a / b)
    } else {
        table::ratio(a, b)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1048576.0)
}

pub fn measure(ctx: &Ctx<'_>) -> R<Table> {
    let quick = ctx.quick;
    let (s, edits, limit) = if ctx.quick {
        (Scale { v4: 100_000, v6: 10_000, prefixes: 1_000 }, 1, Duration::from_secs(120))
    } else {
        (Scale { v4: 10_000_000, v6: 1_000_000, prefixes: 100_000 }, 3, Duration::from_secs(1800))
    };
    let tag = "scale";
    let pin_dir = ctx.bpffs.join(format!("icmpguard-{tag}"));
    let config = ctx.dir.join(format!("{tag}.toml"));
    let body = block_lines(s);
    world::write_atomic(&config, &toml(ctx, &pin_dir, &body, &[]))?;

    // Cold start, memory, the kernel maps.
    let mut from = control::syslog_len(ctx);
    let mut d = Daemon::spawn(ctx.pair, &ctx.dir, &config, &pin_dir)?;
    d.ready(&ctx.dir, Duration::from_secs(600))?;
    let ready = d.spawned.elapsed();
    let peak_kb = d.status_kb("VmHWM");
    let start = control::start_line(ctx, &mut from);
    std::thread::sleep(Duration::from_secs(3));
    let steady_kb = d.status_kb("VmRSS");
    let maps = kernel_maps(d.pid);

    // One-line edits, each adding an address at the top of the list.
    let mut extra = Vec::new();
    let mut eds: Vec<Edit> = Vec::new();
    for i in 0..edits {
        let new = Ipv4Addr::new(203, 0, 113, i as u8 + 1);
        extra.push(new.to_string());
        let text = toml(ctx, &pin_dir, &body, &extra);
        eds.push(control::edit_to(ctx, &d, &text, new, tag, Duration::from_millis(2))?);
        std::thread::sleep(Duration::from_millis(500));
    }
    d.stop()?;
    drop(body);

    let check = world::measure(&[world::BIN, "check", "-c", &config.to_string_lossy()], None)?;

    // nft -f, capped at the memory the machine can spare; a size it gives
    // up on is tried at a half, then a quarter.
    let avail_kb = world::status_kb_of("/proc/meminfo", "MemAvailable").unwrap_or(0);
    let cap_kb = avail_kb.saturating_sub(2 * 1024 * 1024).max(1024 * 1024);
    let mut runs = vec![nft(ctx, s, limit, cap_kb)?];
    while runs.last().is_some_and(|r| r.failed.is_some()) && runs.len() < 3 {
        let half = |n: u32| n / 2;
        let prev = runs[runs.len() - 1].scale;
        runs.push(nft(
            ctx,
            Scale { v4: half(prev.v4), v6: half(prev.v6), prefixes: half(prev.prefixes) },
            limit,
            cap_kb,
        )?);
    }
    let mut t = render(s, ready, start, peak_kb, steady_kb, &maps, &eds, &check, &runs, limit, cap_kb);
    if quick {
        t.note("Quick mode: a hundredth of the sizes, so that CI runs the same path in seconds; the targets are for ten million entries (a small daemon's fixed memory is most of its bytes per entry here).");
    }
    Ok(t)
}

#[allow(clippy::too_many_arguments)]
fn render(
    s: Scale,
    ready: Duration,
    start: Option<StartLine>,
    peak_kb: u64,
    steady_kb: u64,
    maps: &[(String, u64)],
    eds: &[Edit],
    check: &Usage,
    runs: &[NftRun],
    limit: Duration,
    cap_kb: u64,
) -> Table {
    let mut t = Table::new(
        &format!("3e. Ten million entries: {} ({} entries)", s.label(), s.entries()),
        &["measure", "icmpguard", "nft -f of the same sets", "÷ nft -f", "target"],
    );
    let full = runs.first().filter(|r| r.failed.is_none());
    let parts = start.and_then(|l| l.parts).map_or(String::new(), |p| {
        format!(
            " (daemon's own {:.0} ms: map creation {:.0}, load and verify {:.0}, fill {:.0}, attach {:.0})",
            start.map_or(0.0, |l| l.total_ms),
            p[0],
            p[1],
            p[2],
            p[3]
        )
    });
    let (ready_s, nft_s) = (ready.as_secs_f64(), full.map(|r| r.usage.wall.as_secs_f64()));
    t.row(vec![
        "cold start to READY=1".into(),
        format!("{ready_s:.2} s{parts}"),
        runs.first().map_or("—".into(), |r| match &r.failed {
            None => format!("{:.1} s", r.usage.wall.as_secs_f64()),
            Some(why) => format!("gave up: {why}"),
        }),
        nft_s.map_or("—".into(), |n| ratio(ready_s, n)),
        format!("≤ 0.1×: {}", nft_s.map_or("nft gave up", |n| table::verdict(ready_s <= 0.1 * n))),
    ]);
    let nft_peak = full.map(|r| r.usage.max_rss_kb);
    t.row(vec![
        "peak RSS".into(),
        table::mb(peak_kb),
        nft_peak.map_or("—".into(), table::mb),
        nft_peak.map_or("—".into(), |n| table::ratio(peak_kb as f64, n as f64)),
        format!("≤ 0.3×: {}", nft_peak.map_or("nft gave up", |n| table::verdict(peak_kb as f64 <= 0.3 * n as f64))),
    ]);
    let per_entry = |kb: u64| kb as f64 * 1024.0 / s.entries() as f64;
    t.row(vec![
        "steady RSS (3 s after READY=1)".into(),
        format!("{} ({:.1} B/entry)", table::mb(steady_kb), per_entry(steady_kb)),
        "—".into(),
        "—".into(),
        format!("≤ 48 B/entry: {}", table::verdict(per_entry(steady_kb) <= 48.0)),
    ]);
    let total: u64 = maps.iter().map(|(_, b)| b).sum();
    let biggest: Vec<String> = maps.iter().take(5).map(|(n, b)| format!("{n} {}", mib(*b))).collect();
    t.row(vec![
        "kernel maps (memlock)".into(),
        format!("{} ({:.1} B/entry): {}", mib(total), total as f64 / s.entries() as f64, biggest.join(", ")),
        "—".into(),
        "—".into(),
        "reported".into(),
    ]);
    if !eds.is_empty() {
        let med = |v: Vec<Duration>| table::median_duration(&v);
        let enforced = med(eds.iter().map(|e| e.to_enforced).collect());
        let ready = med(eds.iter().map(|e| e.to_ready).collect());
        let rename = med(eds.iter().map(|e| e.rename).collect());
        let logged: Vec<f64> = eds.iter().filter_map(|e| e.logged_ms).map(|m| m as f64).collect();
        t.row(vec![
            "one-line edit: save → enforced".into(),
            format!(
                "{} (→ READY=1 {}; daemon's reload {}; the save's rename itself {})",
                table::ms(enforced),
                table::ms(ready),
                if logged.is_empty() { "—".into() } else { format!("{:.0} ms", table::median(&logged)) },
                table::ms(rename)
            ),
            "—".into(),
            "—".into(),
            format!("≤ 1 s: {}", table::verdict(enforced <= Duration::from_secs(1))),
        ]);
    }
    t.row(vec![
        "icmpguard check".into(),
        format!("{} (peak {})", table::ms(check.wall), table::mb(check.max_rss_kb)),
        "—".into(),
        "—".into(),
        format!("≤ 2 s: {}", table::verdict(check.wall <= Duration::from_secs(2))),
    ]);
    for r in runs.iter().skip(1) {
        t.row(vec![
            format!("nft -f at {}", r.scale.label()),
            "—".into(),
            match &r.failed {
                None => format!("{:.1} s, peak {}", r.usage.wall.as_secs_f64(), table::mb(r.usage.max_rss_kb)),
                Some(why) => format!("gave up: {why}"),
            },
            "—".into(),
            "—".into(),
        ]);
    }
    t.note(format!(
        "One round (the file is {} entries, one a line): the daemon from spawn to READY=1 (nothing pinned, one interface), its VmHWM at READY=1 and VmRSS 3 s later; the kernel maps' memory is the `memlock` of each map the daemon holds (/proc/PID/fdinfo); {} edit(s), each adding one IPv4 address at the top of the list by write + rename, timed from the rename's return (the save is complete) until the attached XDP program drops an echo from it (BPF_PROG_TEST_RUN every 2 ms), median, with how long the rename itself took (ext4 frees the replaced file's blocks within it); `icmpguard check` of the same file (wall, ru_maxrss).",
        s.entries(),
        eds.len()
    ));
    t.note(format!(
        "nft -f loads the same addresses and prefixes into two interval sets of one table with the rules that use them, in the bench's namespace, under a limit of {} s and an address-space cap of {} (the memory available less 2 GB): a size it gives up on is tried at a half, then a quarter. Wall time and ru_maxrss.",
        limit.as_secs(),
        table::mb(cap_kb)
    ));
    t
}
