//! `check`, `status` and `unload`: the commands that are not the daemon.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::addr::{PerFamily, Prefix};
use crate::config::{Config, IcmpPolicy, List, Strictness, DEFAULT_PIN_DIR};
use crate::error::{Error, Result};
use crate::icmp::TypeSet;
use crate::kernel::{self, LinkTarget, Snapshot};
use crate::plan::{Entry, Limit, Rule, Rules};
use crate::skel::types;

/// `icmpguard check`: validates the file, touching nothing in the kernel.
pub fn check(path: &Path) -> Result<()> {
    let loaded = Config::load(path, Strictness::Warn)?;
    for w in &loaded.warnings {
        eprintln!("icmpguard: warning: {w}");
    }
    let c = &loaded.config;
    let v4 = c.block.iter().filter(|p| p.is_v4()).count();
    let prefixes = c.block.iter().filter(|p| !p.is_exact()).count();
    println!(
        "{}: valid: {} interface(s), {} entries ({} IPv4, {} IPv6; {} prefixes), {} allowed, icmp = {}{}{}",
        path.display(),
        c.interfaces.len(),
        c.block.len(),
        v4,
        c.block.len() - v4,
        prefixes,
        c.allow.len(),
        match c.icmp {
            IcmpPolicy::Types(_) => c.icmp.to_string(),
            other => format!("\"{other}\""),
        },
        match c.limit.echo {
            0 => String::new(),
            echo => format!(", limit {echo} echo/s per source (burst {})", c.limit.burst),
        },
        if c.dry_run { ", DRY RUN" } else { "" }
    );
    if !c.fragments.is_empty() {
        let names: Vec<String> = c.fragments.iter().map(|f| f.display().to_string()).collect();
        println!("{}: fragments: {}", path.display(), names.join(", "));
    }
    Ok(())
}

/// `icmpguard check --fragment`: validates one fragment alone.
pub fn check_fragment(path: &Path) -> Result<()> {
    let (f, warnings) = Config::load_fragment(path, Strictness::Warn)?;
    for w in &warnings {
        eprintln!("icmpguard: warning: {w}");
    }
    let notes = f.metas.values().filter(|m| m.note.is_some()).count();
    let expiring = f.metas.values().filter(|m| m.until.is_some()).count();
    println!(
        "{}: valid fragment: {} blocked, {} allowed ({} with an expiry, {} with a note)",
        path.display(),
        f.block.len(),
        f.allow.len(),
        expiring,
        notes
    );
    Ok(())
}

/// The pin directory to use when the file cannot tell (it is missing or
/// broken): commands that inspect or clean up must still work then.
fn pin_dir_of(path: &Path) -> (PathBuf, Option<Config>, Option<String>) {
    match Config::load(path, Strictness::Warn) {
        Ok(l) => (l.config.pin_dir.clone(), Some(l.config), None),
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            let dir = crate::config::pin_dir_hint(path).unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR));
            (dir, None, Some(first))
        }
    }
}

/// `icmpguard unload`: detaches everything and removes the pins.
pub fn unload(path: &Path, pin_dir: Option<&Path>) -> Result<()> {
    let dir = match pin_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let (dir, _, problem) = pin_dir_of(path);
            if let Some(p) = problem {
                eprintln!("icmpguard: warning: {p}\nicmpguard: warning: using the default pin_dir {}", dir.display());
            }
            dir
        }
    };
    let done = kernel::unload(&dir)?;
    if !done.existed {
        println!("nothing pinned at {}; nothing to do", dir.display());
        return Ok(());
    }
    for (iface, target) in &done.links {
        println!("detached {target} from {iface}");
    }
    println!("removed {}", dir.display());
    Ok(())
}

#[derive(Serialize)]
struct StatusJson {
    loaded: bool,
    /// Everything the file asks is enforced (exit status 0).
    healthy: bool,
    kernel: KernelJson,
    pin_dir: PathBuf,
    generation: u64,
    daemon_pid: Option<u32>,
    /// The `icmp` policy as the file would write it: "echo", "all", or
    /// the list of types (an array).
    policy: serde_json::Value,
    dry_run: bool,
    log: &'static str,
    rate_limit: u32,
    limit: LimitJson,
    capacity: u64,
    drop_counters: DropCountersJson,
    entries: Vec<EntryJson>,
    allow: Vec<AllowJson>,
    interfaces: Vec<LinkJson>,
    counters: CountersJson,
    last_reload: ReloadJson,
    drift: Option<DriftJson>,
}

/// What `status` adds to its entries line when the CPUs share an entry's
/// drop counters (nothing with a slot per CPU).
fn shared_drop_counters(slots: u32, cpus: u32) -> String {
    if slots >= cpus {
        return String::new();
    }
    let plural = if slots == 1 { "" } else { "s" };
    format!("; drop counters: {slots} slot{plural} an entry, shared by {cpus} CPUs")
}

/// How the kernel keeps each entry's drop counter: `slots` counters the
/// `cpus` possible CPUs add to (one each, or fewer, shared, when a slot
/// per CPU would outgrow a 64th of the machine's memory).
#[derive(Serialize)]
struct DropCountersJson {
    slots: u32,
    cpus: u32,
}

#[derive(Serialize)]
struct KernelJson {
    release: String,
    /// The hook egress gets on this kernel: "tcx" (6.6+) or "tc".
    egress: &'static str,
    xdp_load_bytes: bool,
}

#[derive(Serialize)]
struct EntryJson {
    rule: String,
    drops: u64,
    /// The entry's note, from the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// When it stops being enforced (RFC 3339, UTC), from the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
}

#[derive(Serialize)]
struct AllowJson {
    rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
}

/// The echo rate limit the kernel enforces (0: none).
#[derive(Serialize)]
struct LimitJson {
    echo: u32,
    burst: u32,
    sources: u32,
    /// Echo requests it dropped (would have, in a dry run).
    drops: u64,
}

#[derive(Serialize)]
struct LinkJson {
    interface: String,
    hook: &'static str,
    mode: Option<&'static str>,
    attached: bool,
    ifindex: Option<u32>,
    link_id: u32,
    prog_id: u32,
}

#[derive(Serialize)]
struct CountersJson {
    icmp_seen: u64,
    dropped: u64,
    limited: u64,
    allowed: u64,
    events_queued: u64,
    events_lost: u64,
    events_suppressed: u64,
}

#[derive(Serialize)]
struct ReloadJson {
    unix_ms: u64,
    ok: bool,
    added: u32,
    removed: u32,
    duration_us: u64,
    reloads: u64,
}

#[derive(Serialize)]
struct DriftJson {
    /// The file could not be read or parsed; no comparison was made.
    config_error: Option<String>,
    missing_in_kernel: Vec<String>,
    extra_in_kernel: Vec<String>,
    interfaces_not_attached: Vec<String>,
    interfaces_not_in_file: Vec<String>,
    settings_differ: Vec<String>,
}

impl DriftJson {
    /// One line per way the kernel differs from the file.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.config_error {
            out.push(format!("the file could not be compared: {e}"));
        }
        let mut list = |label: &str, v: &[String]| {
            if !v.is_empty() {
                out.push(format!("{label}: {}", v.join(", ")));
            }
        };
        list("not guarded", &self.interfaces_not_attached);
        list("in the file, not in the kernel", &self.missing_in_kernel);
        list("in the kernel, not in the file", &self.extra_in_kernel);
        list("attached to interfaces not in the file", &self.interfaces_not_in_file);
        list("settings", &self.settings_differ);
        out
    }

    fn is_clean(&self) -> bool {
        self.config_error.is_none()
            && self.missing_in_kernel.is_empty()
            && self.extra_in_kernel.is_empty()
            && self.interfaces_not_attached.is_empty()
            && self.interfaces_not_in_file.is_empty()
            && self.settings_differ.is_empty()
    }
}

/// The note and expiry the file gives an entry.
fn meta_of(cfg: Option<&Config>, list: List, p: &Prefix) -> (Option<String>, Option<String>) {
    let Some(m) = cfg.and_then(|c| c.metas.get(&(list, *p))) else { return (None, None) };
    (m.note.clone(), m.until.map(crate::when::rfc3339))
}

/// The `icmp` policy the kernel holds, as the file would write it.
fn policy_of(s: &types::ig_settings) -> String {
    let held = TypeSet(PerFamily { v4: s.v4_types, v6: s.v6_types });
    if held == TypeSet::echo() {
        "echo".to_string()
    } else if held == TypeSet::all() {
        "all".to_string()
    } else {
        let names: Vec<String> = held.names().iter().map(|n| format!("{n:?}")).collect();
        format!("[{}]", names.join(", "))
    }
}

/// The `icmp` policy the kernel holds, for `status --json`.
fn policy_json(s: &types::ig_settings) -> serde_json::Value {
    let held = TypeSet(PerFamily { v4: s.v4_types, v6: s.v6_types });
    if held == TypeSet::echo() {
        "echo".into()
    } else if held == TypeSet::all() {
        "all".into()
    } else {
        held.names().into()
    }
}

/// The rate limit the kernel holds, as the file would write it.
fn limit_of(s: &types::ig_settings) -> Limit {
    let (interval, tolerance) = (s.limit_interval_ns, s.limit_tolerance_ns);
    if interval == 0 {
        return Limit::default();
    }
    Limit {
        echo: (1_000_000_000 / interval).min(u64::from(u32::MAX)) as u32,
        burst: (tolerance / interval + 1).min(u64::from(u32::MAX)) as u32,
    }
}

fn log_name(l: u32) -> &'static str {
    match types::ig_log(l) {
        types::ig_log::IG_LOG_NONE => "none",
        types::ig_log::IG_LOG_BLOCKED => "blocked",
        _ => "all",
    }
}

fn hook_of(t: LinkTarget) -> (&'static str, Option<&'static str>) {
    match t {
        LinkTarget::XdpNative => ("xdp", Some("native")),
        LinkTarget::XdpGeneric => ("xdp", Some("generic")),
        LinkTarget::TcxEgress => ("tcx_egress", None),
        LinkTarget::TcEgress => ("tc_egress", None),
    }
}

fn drift(snap: &Snapshot, cfg: Option<&Config>, problem: Option<String>) -> DriftJson {
    let mut d = DriftJson {
        config_error: problem,
        missing_in_kernel: Vec::new(),
        extra_in_kernel: Vec::new(),
        interfaces_not_attached: Vec::new(),
        interfaces_not_in_file: Vec::new(),
        settings_differ: Vec::new(),
    };
    let Some(cfg) = cfg else { return d };
    // The daemon's own planner: what a reload would add and remove.
    let kernel = Rules::from_unsorted(
        snap.rules.iter().zip(0..).map(|((p, allow, _), id)| (*p, Rule::new(id, *allow))).collect(),
    );
    let want = cfg.desired();
    let plan = want.plan(&kernel);
    let shown = |e: &Entry| if e.allow { format!("allow {}", e.prefix) } else { e.prefix.to_string() };
    d.missing_in_kernel = plan.add.iter().chain(&plan.flip).map(shown).collect();
    d.extra_in_kernel = plan.remove.iter().map(Prefix::to_string).collect();
    for i in &cfg.interfaces {
        let guarded = |egress: bool| {
            snap.links.iter().any(|l| l.iface == i.name() && l.attached && l.target.is_egress() == egress)
        };
        let missing: Vec<&str> =
            [("ingress", false), ("egress", true)].iter().filter(|(_, e)| !guarded(*e)).map(|(d, _)| *d).collect();
        if !missing.is_empty() {
            d.interfaces_not_attached.push(format!("{} ({})", i.name(), missing.join(" and ")));
        }
    }
    let names: BTreeSet<&str> = snap.links.iter().map(|l| l.iface.as_str()).collect();
    d.interfaces_not_in_file =
        names.into_iter().filter(|n| !cfg.interfaces.iter().any(|i| i.name() == *n)).map(str::to_string).collect();
    let file = want.settings;
    let k = &snap.settings;
    let held = TypeSet(PerFamily { v4: k.v4_types, v6: k.v6_types });
    if held != file.policy.types() {
        d.settings_differ.push(format!("icmp: kernel {}, file {}", policy_of(k), file.policy));
    }
    if (k.dry_run != 0) != file.dry_run {
        d.settings_differ.push(format!("dry_run: kernel {}, file {}", k.dry_run != 0, file.dry_run));
    }
    if (k.limit_interval_ns, k.limit_tolerance_ns) != kernel::limit_times(file.limit) {
        let (a, b) = (limit_of(k), file.limit);
        d.settings_differ.push(format!(
            "limit: kernel echo = {} burst = {}, file echo = {} burst = {}",
            a.echo, a.burst, b.echo, b.burst
        ));
    }
    let file_sources = kernel::tracked_sources(want.sources);
    if snap.sources != file_sources {
        d.settings_differ.push(format!("limit sources: kernel {}, file {file_sources}", snap.sources));
    }
    d
}

/// `icmpguard status`: what the kernel enforces now. Read-only.
pub fn status(path: &Path, pin_dir: Option<&Path>, json: bool) -> Result<()> {
    let (file_pin_dir, cfg, problem) = pin_dir_of(path);
    let pin_dir = pin_dir.map_or(file_pin_dir, Path::to_path_buf);
    let Some(snap) = kernel::snapshot(&pin_dir)? else {
        if json {
            println!("{}", serde_json::json!({ "loaded": false, "pin_dir": pin_dir }));
        }
        return Err(Error::PinDir {
            path: pin_dir,
            msg: "nothing is pinned here: the filter is not loaded".into(),
            hint: "start the daemon (`systemctl start icmpguard` or `icmpguard run`)".into(),
        });
    };
    let m = &snap.meta;
    let drift = drift(&snap, cfg.as_ref(), problem);
    let facilities = kernel::probe::facilities();
    let out = StatusJson {
        loaded: true,
        healthy: drift.is_clean(),
        kernel: KernelJson {
            release: facilities.release.clone(),
            egress: match facilities.egress() {
                kernel::probe::EgressHook::Tcx => "tcx",
                kernel::probe::EgressHook::Tc => "tc",
            },
            xdp_load_bytes: facilities.xdp_load_bytes,
        },
        pin_dir: pin_dir.clone(),
        generation: snap.generation,
        daemon_pid: (m.daemon_pid != 0).then_some(m.daemon_pid),
        policy: policy_json(&snap.settings),
        dry_run: snap.settings.dry_run != 0,
        log: log_name(snap.settings.log),
        rate_limit: snap.settings.event_budget,
        limit: {
            let l = limit_of(&snap.settings);
            LimitJson { echo: l.echo, burst: l.burst, sources: snap.sources, drops: snap.counters.limited }
        },
        capacity: m.capacity,
        drop_counters: DropCountersJson { slots: snap.drop_slots, cpus: snap.cpus },
        entries: snap
            .rules
            .iter()
            .filter(|(_, allow, _)| !allow)
            .map(|(p, _, drops)| {
                let (note, until) = meta_of(cfg.as_ref(), List::Block, p);
                EntryJson { rule: p.to_string(), drops: *drops, note, until }
            })
            .collect(),
        allow: snap
            .rules
            .iter()
            .filter(|(_, allow, _)| *allow)
            .map(|(p, _, _)| {
                let (note, until) = meta_of(cfg.as_ref(), List::Allow, p);
                AllowJson { rule: p.to_string(), note, until }
            })
            .collect(),
        interfaces: snap
            .links
            .iter()
            .map(|l| {
                let (hook, mode) = hook_of(l.target);
                LinkJson {
                    interface: l.iface.clone(),
                    hook,
                    mode,
                    attached: l.attached,
                    ifindex: l.ifindex,
                    link_id: l.link_id,
                    prog_id: l.prog_id,
                }
            })
            .collect(),
        counters: CountersJson {
            icmp_seen: snap.counters.icmp_seen,
            dropped: snap.counters.dropped,
            limited: snap.counters.limited,
            allowed: snap.counters.allowed,
            events_queued: snap.counters.events_queued,
            events_lost: snap.counters.events_lost,
            events_suppressed: snap.counters.events_suppressed,
        },
        last_reload: ReloadJson {
            unix_ms: m.last_reload_unix_ms,
            ok: m.last_reload_ok == 1,
            added: m.last_reload_added,
            removed: m.last_reload_removed,
            duration_us: m.last_reload_us,
            reloads: m.reloads,
        },
        drift: Some(drift),
    };
    if json {
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Error::Output { what: "encoding the status as JSON", source: Box::new(e) })?;
        println!("{text}");
    } else {
        print_status(&out);
    }
    match &out.drift {
        Some(d) if !d.is_clean() => Err(Error::NotEnforced { path: path.to_path_buf(), missing: d.problems() }),
        _ => Ok(()),
    }
}

fn print_status(s: &StatusJson) {
    let daemon = s.daemon_pid.map_or("no daemon running".to_string(), |p| format!("daemon pid {p}"));
    println!("filter: loaded from {} (generation {}, {daemon})", s.pin_dir.display(), s.generation);
    println!(
        "kernel: {} (ingress: xdp; egress: {}{})",
        s.kernel.release,
        s.kernel.egress,
        if s.kernel.xdp_load_bytes { "" } else { "; headers after IP options read by moving the packet start" }
    );
    let policy = s.policy.to_string();
    println!("policy: icmp = {policy}, events log = \"{}\", rate_limit = {}/s", s.log, s.rate_limit);
    if s.dry_run {
        println!("dry run: NOTHING IS DROPPED; what would be is counted and logged as \"would drop\"");
    }
    match s.limit.echo {
        0 => println!("limit: none (no [limit] echo)"),
        echo => println!(
            "limit: {echo} echo requests/s per source, burst {}, {} sources tracked; {} dropped",
            s.limit.burst, s.limit.sources, s.limit.drops
        ),
    }
    println!("interfaces:");
    if s.interfaces.is_empty() {
        println!("  (none)");
    }
    for l in &s.interfaces {
        let state = if l.attached { "attached" } else { "NOT attached (interface gone)" };
        let hook = match l.mode {
            Some(m) => format!("{} {m}", l.hook),
            None => l.hook.to_string(),
        };
        println!("  {:<16} {:<14} {state} (link {}, prog {})", l.interface, hook, l.link_id, l.prog_id);
    }
    let shared = shared_drop_counters(s.drop_counters.slots, s.drop_counters.cpus);
    println!("entries: {} blocked, {} allowed (capacity {}{shared})", s.entries.len(), s.allow.len(), s.capacity);
    let width = s.entries.iter().map(|e| e.rule.len()).max().unwrap_or(0);
    let extra = |note: &Option<String>, until: &Option<String>| {
        let mut out = String::new();
        if let Some(u) = until {
            out.push_str(&format!("  until {u}"));
        }
        if let Some(n) = note {
            out.push_str(&format!("  {}", crate::events::quote(n)));
        }
        out
    };
    for e in &s.entries {
        println!("  {:<width$}  {} drops{}", e.rule, e.drops, extra(&e.note, &e.until));
    }
    for a in &s.allow {
        println!("  allow {}{}", a.rule, extra(&a.note, &a.until));
    }
    let c = &s.counters;
    println!(
        "packets: {} ICMP seen, {} dropped for a block entry, {} by the rate limit, {} passed for an allow entry; events: {} queued, {} lost (ring buffer full), {} suppressed (in-kernel budget)",
        c.icmp_seen, c.dropped, c.limited, c.allowed, c.events_queued, c.events_lost, c.events_suppressed
    );
    let r = &s.last_reload;
    if r.unix_ms != 0 {
        let ago = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| (d.as_millis() as u64).saturating_sub(r.unix_ms) / 1000);
        let result = if r.ok {
            format!("applied +{} -{} in {} ms", r.added, r.removed, r.duration_us / 1000)
        } else {
            "REFUSED (invalid file; previous blocklist kept)".to_string()
        };
        println!("last reload: {ago} s ago, {result}; {} reloads applied", r.reloads);
    }
    match &s.drift {
        Some(d) if d.is_clean() => println!("drift: none (kernel matches the file)"),
        Some(d) => {
            println!("drift:");
            if let Some(e) = &d.config_error {
                println!("  file not compared: {e}");
            }
            let list = |label: &str, v: &[String]| {
                if !v.is_empty() {
                    println!("  {label}: {}", v.join(", "));
                }
            };
            list("in the file, not in the kernel", &d.missing_in_kernel);
            list("in the kernel, not in the file", &d.extra_in_kernel);
            list("interfaces in the file but not guarded", &d.interfaces_not_attached);
            list("interfaces attached but not in the file", &d.interfaces_not_in_file);
            list("settings", &d.settings_differ);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_drop_counters_only_when_cpus_share_them() {
        assert_eq!(shared_drop_counters(2, 2), "");
        assert_eq!(shared_drop_counters(96, 96), "");
        assert_eq!(shared_drop_counters(1, 2), "; drop counters: 1 slot an entry, shared by 2 CPUs");
        assert_eq!(shared_drop_counters(8, 96), "; drop counters: 8 slots an entry, shared by 96 CPUs");
    }
}
