//! Section 1, datapath cost: BPF_PROG_TEST_RUN of icmpguard's XDP program on
//! crafted frames, beside an empty XDP_DROP program (the floor) and
//! xdp-filter's programs from Debian's xdp-tools, loaded from their objects
//! with the same addresses in their maps. All programs run on the same
//! frames in the same rounds; a figure is the trimmed mean over rounds of
//! the kernel's per-repeat average.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use icmpguard::addr::Prefix;
use icmpguard::kernel::{capacity_for, sys, Generation};
use icmpguard::plan::{entries, plan};
use icmpguard::plan::{IcmpPolicy, Limit, LogMode, Settings};
use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder};

use crate::gen::{v4_exact, v4_prefix, v6_exact, v6_prefix};
use crate::packet::Packet;
use crate::table::{self, Table};
use crate::world::{run, R};

const XDP_DROP: u32 = libbpf_sys::XDP_DROP;
const XDP_PASS: u32 = libbpf_sys::XDP_PASS;
/// xdp-filter's maps hold at most this many addresses per family.
const XDP_FILTER_MAX: u32 = 10_000;
/// xdp-filter's MAP_FLAG_SRC | MAP_FLAG_DST (common_kern_user.h).
const XDP_FILTER_SRC_DST: u64 = 0b11;

pub struct Options {
    pub big: u32,
    pub repeat: u32,
    pub rounds: usize,
}

/// Where Debian (and a source build) put xdp-filter's BPF objects.
fn xdp_filter_object(name: &str) -> R<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/lib/bpf"), PathBuf::from("/usr/local/lib/bpf")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("bpf")));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        format!("xdp-filter's BPF object {name} not found under /usr/lib/*/bpf: apt-get install xdp-tools")
    })
}

/// Compiles the floor program with clang.
pub fn build_floor(dir: &Path) -> R<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bench/drop.bpf.c");
    let obj = dir.join("drop.o");
    run(std::process::Command::new("clang").args(["-O2", "-target", "bpf", "-c"]).arg(&src).arg("-o").arg(&obj))?;
    Ok(obj)
}

fn load(path: &Path, pin_root: Option<&Path>) -> R<Object> {
    let mut b = ObjectBuilder::default();
    if let Some(root) = pin_root {
        std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
        b.pin_root_path(root).map_err(|e| e.to_string())?;
    }
    let open = b.open_file(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    open.load().map_err(|e| format!("loading {}: {e}", path.display()))
}

/// A loaded object and (a duplicate of) its one program's descriptor.
struct Loaded {
    /// Holds the maps the program uses.
    _obj: Object,
    prog: OwnedFd,
}

impl Loaded {
    fn new(obj: Object) -> R<Loaded> {
        let prog = obj.progs().next().ok_or("an object without a program")?;
        let prog = prog.as_fd().try_clone_to_owned().map_err(|e| e.to_string())?;
        Ok(Loaded { _obj: obj, prog })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }
}

/// xdp-filter (one object) with `v4` and `v6` in its address maps.
fn xdp_filter(object: &Path, pin_root: &Path, v4: &[[u8; 4]], v6: &[[u8; 16]]) -> R<Loaded> {
    let obj = load(object, Some(pin_root))?;
    let cpus = libbpf_rs::num_possible_cpus().map_err(|e| e.to_string())?;
    let value = vec![XDP_FILTER_SRC_DST.to_ne_bytes().to_vec(); cpus];
    for map in obj.maps() {
        let keys: Vec<&[u8]> = match map.name().to_str() {
            Some("filter_ipv4") => v4.iter().map(|k| &k[..]).collect(),
            Some("filter_ipv6") => v6.iter().map(|k| &k[..]).collect(),
            _ => continue,
        };
        for k in keys {
            map.update_percpu(k, &value, MapFlags::ANY).map_err(|e| format!("filling xdp-filter's map: {e}"))?;
        }
    }
    Loaded::new(obj)
}

/// What a row is held to (the targets).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    None,
    /// A blocked frame beside xdp-filter: ≤ floor + 30 and ≤ 0.5× xdp-filter.
    Blocked,
    /// A non-ICMP frame: ≤ floor + 5.
    NonIcmp,
    /// A frame through the allow list or the rate limit: ≤ floor + 40.
    Policy,
}

struct Frame {
    name: &'static str,
    bytes: Vec<u8>,
    /// icmpguard's verdict.
    want: u32,
    target: Target,
    /// The `[limit]` icmpguard runs with on this frame.
    limit: Limit,
}

impl Frame {
    fn new(name: &'static str, packet: Packet, want: u32, target: Target) -> Frame {
        Frame { name, bytes: packet.bytes(), want, target, limit: Limit::default() }
    }
}

/// xdp-filter's IPv4 and IPv6 addresses.
type XdpFilterSets = (Vec<[u8; 4]>, Vec<[u8; 16]>);

/// One blocklist (and allow list) under test and the frames it is
/// measured on.
struct Case {
    name: String,
    /// Sorted, without duplicates.
    block: Vec<Prefix>,
    /// Sorted, without duplicates.
    allow: Vec<Prefix>,
    /// What xdp-filter gets: exact addresses only, at most 10k a family;
    /// `None` where xdp-filter has nothing to compare (allow list, limit).
    xf: Option<XdpFilterSets>,
    frames: Vec<Frame>,
}

/// The frames of a blocklist beside xdp-filter.
fn blocklist_frames(blocked_v4: &str, blocked_v6: &str) -> Vec<Frame> {
    vec![
        Frame::new("blocked echo IPv4", Packet::echo(blocked_v4, "192.0.2.1"), XDP_DROP, Target::Blocked),
        Frame::new("blocked echo IPv6", Packet::echo(blocked_v6, "2001:db8::1"), XDP_DROP, Target::Blocked),
        Frame::new("blocked echo VLAN", Packet::echo(blocked_v4, "192.0.2.1").vlan(&[100]), XDP_DROP, Target::Blocked),
        Frame::new("allowed echo IPv4", Packet::echo("192.0.2.20", "192.0.2.1"), XDP_PASS, Target::None),
        Frame::new("TCP IPv4", Packet::tcp("192.0.2.20", "192.0.2.1"), XDP_PASS, Target::NonIcmp),
    ]
}

fn exact_case(n: u32) -> Case {
    let mut block: Vec<Prefix> = vec!["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()];
    block.extend((1..n).map(|i| Prefix::V4 { addr: v4_exact(i), len: 32 }));
    block.extend((1..n).map(|i| Prefix::V6 { addr: v6_exact(i), len: 128 }));
    block.sort_unstable();
    let mut xf_v4 = vec![[192, 0, 2, 10]];
    xf_v4.extend((1..n.min(XDP_FILTER_MAX)).map(|i| v4_exact(i).octets()));
    let mut xf_v6 = vec!["2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets()];
    xf_v6.extend((1..n.min(XDP_FILTER_MAX)).map(|i| v6_exact(i).octets()));
    Case {
        name: format!("{} exact", table::count(u64::from(n))),
        block,
        allow: vec![],
        xf: Some((xf_v4, xf_v6)),
        frames: blocklist_frames("192.0.2.10", "2001:db8::10"),
    }
}

/// `n` exact addresses and 10k prefixes a family; the blocked frames come
/// from inside a prefix, so they miss the hash and hit the trie.
fn prefix_case(n: u32) -> Case {
    let mut c = exact_case(n);
    let prefixes = 10_000u32;
    c.block.push("198.51.100.0/24".parse().unwrap());
    c.block.push("2001:db8:dead::/48".parse().unwrap());
    c.block.extend((1..prefixes).map(|i| Prefix::V4 { addr: v4_prefix(i), len: 24 }));
    c.block.extend((1..prefixes).map(|i| Prefix::V6 { addr: v6_prefix(i), len: 64 }));
    c.block.sort_unstable();
    c.block.dedup();
    if let Some((v4, v6)) = c.xf.as_mut() {
        v4[0] = [198, 51, 100, 7];
        v6[0] = "2001:db8:dead::7".parse::<std::net::Ipv6Addr>().unwrap().octets();
    }
    c.name = format!("{} exact + 10k prefixes", table::count(u64::from(n)));
    c.frames = blocklist_frames("198.51.100.7", "2001:db8:dead::7");
    c
}

/// 1000 allowed addresses, documentation addresses only: 500 IPv4 (every
/// host of 198.51.100.0/24 and 203.0.113.0/24 but 198.51.100.8-15, which
/// stay blocked) and 500 IPv6 (2001:db8:dead::7 and 499 spread over
/// 2001:db8:a11::/48). All of IPv4's documentation space holds fewer than
/// 1000 hosts, hence the two families.
fn allow_list() -> Vec<Prefix> {
    let mut allow: Vec<Prefix> = Vec::with_capacity(1000);
    for net in [[198u8, 51, 100], [203, 0, 113]] {
        for host in 1..=254u8 {
            if net == [198, 51, 100] && (8..=15).contains(&host) {
                continue;
            }
            let addr = std::net::Ipv4Addr::new(net[0], net[1], net[2], host);
            allow.push(Prefix::V4 { addr, len: 32 });
        }
    }
    allow.push("2001:db8:dead::7".parse().unwrap());
    allow.extend((1..500u32).map(|i| {
        let h = i.wrapping_mul(2_654_435_761);
        let addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xa11, 0, 0, (h >> 16) as u16, h as u16, i as u16);
        Prefix::V6 { addr, len: 128 }
    }));
    allow.sort_unstable();
    allow.dedup();
    allow
}

/// The prefix case's blocklist with 1k allowed addresses, some inside its
/// blocked prefixes: an allowed source inside a blocked prefix passes (its
/// exact allow entry is the most specific), and a blocked source that is not
/// allowed is dropped after a look at the destination (an allow entry
/// could still save it).
fn allow_case(n: u32) -> Case {
    let mut c = prefix_case(n);
    c.allow = allow_list();
    c.name = format!("{} + 1k allowed", c.name);
    c.xf = None;
    c.frames = vec![
        Frame::new(
            "allowed echo IPv4 (in a blocked /24)",
            Packet::echo("198.51.100.7", "192.0.2.1"),
            XDP_PASS,
            Target::Policy,
        ),
        Frame::new(
            "allowed echo IPv6 (in a blocked /48)",
            Packet::echo("2001:db8:dead::7", "2001:db8::1"),
            XDP_PASS,
            Target::Policy,
        ),
        Frame::new(
            "blocked echo IPv4 (not allowed)",
            Packet::echo("198.51.100.8", "192.0.2.1"),
            XDP_DROP,
            Target::Policy,
        ),
        Frame::new(
            "blocked echo IPv6 (not allowed)",
            Packet::echo("2001:db8:dead::8", "2001:db8::1"),
            XDP_DROP,
            Target::Policy,
        ),
        Frame::new("TCP IPv4", Packet::tcp("198.51.100.8", "192.0.2.1"), XDP_PASS, Target::NonIcmp),
    ];
    c
}

/// The prefix case's blocklist and a rate limit on echo: a source neither
/// blocked nor allowed goes through the limiter. Each frame has its own
/// source, hence its own bucket.
fn limit_case(n: u32) -> Case {
    let mut c = prefix_case(n);
    c.name = format!("{} + [limit]", c.name);
    c.xf = None;
    let limited = |name, src, want, echo, burst| Frame {
        limit: Limit { echo, burst },
        ..Frame::new(name, Packet::echo(src, "192.0.2.1"), want, Target::Policy)
    };
    c.frames = vec![
        // 1 ns between requests: every run finds its bucket idle and
        // starts it over (one store).
        limited("echo under the limit (idle source)", "192.0.2.21", XDP_PASS, 1_000_000_000, 1_000_000_000),
        // 1 µs between requests and a burst of 1e9 (1000 s): the runs come
        // faster than that and stay within the burst (an atomic add each).
        limited("echo under the limit (within burst)", "192.0.2.22", XDP_PASS, 1_000_000, 1_000_000_000),
        // echo = 1, burst = 1: the first run is admitted, the rest refused.
        limited("echo over the limit", "192.0.2.23", XDP_DROP, 1, 1),
    ];
    c
}

/// The contenders, in the order of the table's columns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Prog {
    Floor,
    Icmpguard,
    IcmpguardNoLog,
    XdpFilter,
    XdpFilterIpv4,
}

const PROGS: [Prog; 5] = [Prog::Floor, Prog::Icmpguard, Prog::IcmpguardNoLog, Prog::XdpFilter, Prog::XdpFilterIpv4];

fn settings(log: LogMode, limit: Limit) -> Settings {
    // The defaults of a file that sets nothing but `block` (and `allow`,
    // `[limit]`).
    Settings {
        policy: IcmpPolicy::Echo,
        log,
        rate_limit: icmpguard::config::DEFAULT_RATE_LIMIT,
        limit,
        ..Settings::default()
    }
}

pub fn measure(opts: &Options, dir: &Path, bpffs: &Path) -> R<Table> {
    let floor = Loaded::new(load(&build_floor(dir)?, None)?)?;
    let xf_all = xdp_filter_object("xdpfilt_alw_all.o")?;
    let xf_ip = xdp_filter_object("xdpfilt_alw_ip.o")?;

    let mut t = Table::new(
        "1. Datapath: ns per packet (BPF_PROG_TEST_RUN)",
        &[
            "blocklist",
            "packet",
            "floor",
            "icmpguard",
            "− floor",
            "icmpguard log=none",
            "xdp-filter",
            "icmpguard ÷ xdp-filter",
            "xdp-filter -f ipv4",
            "target",
        ],
    );
    let cases = [
        exact_case(1),
        exact_case(10_000),
        exact_case(opts.big),
        prefix_case(opts.big),
        allow_case(opts.big),
        limit_case(opts.big),
    ];
    let mut gen: Option<Generation> = None;
    for (ci, case) in cases.iter().enumerate() {
        // Grow one generation from case to case, as a reload would: only the
        // difference is written.
        let n = entries(&case.block, &case.allow).count();
        let g = match gen.as_mut() {
            Some(g) if g.capacity() as usize >= n => g,
            _ => gen.insert(Generation::create(capacity_for(n)).map_err(|e| e.to_string())?),
        };
        g.apply(&plan(entries(&case.block, &case.allow), g.rules())).map_err(|e| e.to_string())?;
        g.set_settings(settings(LogMode::All, Limit::default())).map_err(|e| e.to_string())?;
        let pin_root = bpffs.join(format!("xdp-filter-{ci}"));
        let xf = match &case.xf {
            Some((v4, v6)) => Some([xdp_filter(&xf_all, &pin_root, v4, v6)?, xdp_filter(&xf_ip, &pin_root, v4, v6)?]),
            None => None,
        };
        let progs: Vec<Prog> =
            PROGS.into_iter().filter(|p| xf.is_some() || !matches!(p, Prog::XdpFilter | Prog::XdpFilterIpv4)).collect();
        let mut samples: HashMap<(usize, Prog), Vec<f64>> = HashMap::new();
        let mut wrong: Vec<String> = Vec::new();
        for round in 0..opts.rounds {
            for (fi, f) in case.frames.iter().enumerate() {
                for &p in &progs {
                    let fd = match (p, &xf) {
                        (Prog::Floor, _) => floor.fd(),
                        (Prog::Icmpguard | Prog::IcmpguardNoLog, _) => {
                            let log = if p == Prog::Icmpguard { LogMode::All } else { LogMode::None };
                            g.set_settings(settings(log, f.limit)).map_err(|e| e.to_string())?;
                            g.xdp_fd()
                        }
                        (Prog::XdpFilter, Some(xf)) => xf[0].fd(),
                        (Prog::XdpFilterIpv4, Some(xf)) => xf[1].fd(),
                        (Prog::XdpFilter | Prog::XdpFilterIpv4, None) => unreachable!("filtered out above"),
                    };
                    let r = sys::prog_test_run(fd, &f.bytes, opts.repeat)
                        .map_err(|e| format!("BPF_PROG_TEST_RUN ({p:?}, {}): {e}", f.name))?;
                    let want = match p {
                        Prog::Floor => XDP_DROP,
                        Prog::Icmpguard | Prog::IcmpguardNoLog => f.want,
                        // xdp-filter drops what it lists, whatever the protocol.
                        Prog::XdpFilter | Prog::XdpFilterIpv4 => {
                            if f.target == Target::Blocked {
                                XDP_DROP
                            } else {
                                XDP_PASS
                            }
                        }
                    };
                    if round == 0 && r.retval != want {
                        wrong.push(format!("{p:?} on {}: verdict {} (expected {want})", f.name, r.retval));
                    }
                    samples.entry((fi, p)).or_default().push(f64::from(r.duration_ns));
                }
            }
        }
        g.set_settings(settings(LogMode::All, Limit::default())).map_err(|e| e.to_string())?;
        for (fi, f) in case.frames.iter().enumerate() {
            let v = |p: Prog| samples.get(&(fi, p)).map(|s| table::trimmed_mean(s));
            let (floor, ig) = (v(Prog::Floor).unwrap_or(0.0), v(Prog::Icmpguard).unwrap_or(0.0));
            let xf = v(Prog::XdpFilter);
            let target = match (f.target, xf) {
                (Target::Blocked, Some(xf)) => {
                    let ok = ig <= floor + 30.0 && ig <= 0.5 * xf;
                    format!("≤ floor+30 and ≤ 0.5× xdp-filter: {}", table::verdict(ok))
                }
                (Target::Blocked, None) => format!("≤ floor+30: {}", table::verdict(ig <= floor + 30.0)),
                (Target::NonIcmp, _) => format!("≤ floor+5: {}", table::verdict(ig <= floor + 5.0)),
                (Target::Policy, _) => format!("≤ floor+40: {}", table::verdict(ig <= floor + 40.0)),
                (Target::None, _) => "—".into(),
            };
            let or_dash = |v: Option<f64>| v.map_or_else(|| "—".to_string(), table::ns);
            t.row(vec![
                case.name.clone(),
                f.name.into(),
                table::ns(floor),
                table::ns(ig),
                format!("{:+.1}", ig - floor),
                or_dash(v(Prog::IcmpguardNoLog)),
                or_dash(xf),
                xf.map_or_else(|| "—".to_string(), |xf| table::ratio(ig, xf)),
                or_dash(v(Prog::XdpFilterIpv4)),
                target,
            ]);
        }
        for w in wrong {
            t.failed = true;
            t.note(format!("WRONG VERDICT, {}: {w}", case.name));
        }
        drop(xf);
        let _ = std::fs::remove_dir_all(&pin_root);
    }
    t.note(format!(
        "{} repeats per run, {} rounds, trimmed mean of the kernel's per-repeat average; all columns measured in the same rounds.",
        opts.repeat, opts.rounds
    ));
    t.note("icmpguard runs with the defaults of a file that sets only `block` (icmp = \"echo\", log = \"all\", rate_limit = 100): past the in-kernel budget of 100 events a second a packet costs the budget check, not an event. `log=none` is the same program with events off.");
    t.note("Each blocklist holds that many addresses of each family; the prefix rows add 10k IPv4 /24 and 10k IPv6 /64, and their blocked frames come from inside a prefix (the longest two prefix lengths of a family are probed in its table, after the exact address; a third length would be a trie walk). xdp-filter has no prefixes and at most 10k addresses a family: it gets the blocked addresses exactly, filled up to 10k.");
    t.note("xdp-filter: xdpfilt_alw_all.o (what `xdp-filter load` picks by default) and xdpfilt_alw_ip.o (what `-f ipv4` picks), loaded from Debian's objects; the allowed and TCP frames come from a neighbour, which both filters pass.");
    t.note("`+ 1k allowed`: the same blocklist with `allow` = 1000 exact addresses (500 IPv4: the hosts of 198.51.100.0/24 and 203.0.113.0/24 but 198.51.100.8-15; 500 IPv6 in 2001:db8::/32), some inside blocked prefixes. The allowed frames come from an allowed address inside a blocked prefix (one lookup: the exact allow entry); the blocked frames from a blocked, not allowed address, so the destination is looked up too (an allow entry could still save the packet).");
    t.note("`+ [limit]`: the same blocklist with an echo rate limit; each frame has its own source, neither blocked nor allowed, so both addresses are looked up before the limiter. Under the limit: echo = 1e9/s, burst = 1e9, so every run is admitted, either finding its bucket idle (a store) or, at echo = 1e6/s, within the burst (an atomic add). Over: echo = 1, burst = 1: the first run of a second is admitted, the others refused.");
    t.note("Targets (the issue's): a frame through the allow list or the limiter ≤ floor + 40 ns; a non-ICMP frame ≤ floor + 5 ns; xdp-filter has no allow list or rate limit, so those rows have no xdp-filter columns.");
    Ok(t)
}
