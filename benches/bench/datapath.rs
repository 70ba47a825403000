//! Section 1, datapath cost: BPF_PROG_TEST_RUN of icmpguard's XDP program on
//! crafted frames, beside an empty XDP_DROP program (the floor) and
//! xdp-filter's programs from Debian's xdp-tools, loaded from their objects
//! with the same addresses in their maps. All programs run on the same
//! frames in the same rounds; a figure is the trimmed mean over rounds of
//! the kernel's per-repeat average.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use icmpguard::addr::Prefix;
use icmpguard::kernel::{capacity_for, sys, Generation, Outcome, Sizes};
use icmpguard::plan::{entries, plan};
use icmpguard::plan::{IcmpPolicy, Limit, LogMode, Settings};
use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder};

use crate::gen::{v4_exact, v4_p16, v4_p28, v4_prefix, v6_exact, v6_p36, v6_p48, v6_prefix};
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
    /// Any ICMP verdict at issue 13's scale: ≤ floor + 30.
    Icmp,
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

/// The samples of one case: ns per run by frame and program, and the
/// wrong verdicts seen.
struct Samples {
    ns: HashMap<(usize, Prog), Vec<f64>>,
    wrong: Vec<String>,
}

impl Samples {
    fn get(&self, fi: usize, p: Prog) -> Option<f64> {
        self.ns.get(&(fi, p)).map(|s| table::trimmed_mean(s))
    }
}

/// Runs every frame of `case` on every program of `progs`, round after
/// round, the generation `g` holding the case's rules.
fn run_case(
    opts: &Options,
    case: &Case,
    g: &mut Generation,
    floor: &Loaded,
    xf: Option<&[Loaded; 2]>,
    progs: &[Prog],
) -> R<Samples> {
    let mut out = Samples { ns: HashMap::new(), wrong: Vec::new() };
    for round in 0..opts.rounds {
        for (fi, f) in case.frames.iter().enumerate() {
            for &p in progs {
                let fd = match (p, xf) {
                    (Prog::Floor, _) => floor.fd(),
                    (Prog::Icmpguard | Prog::IcmpguardNoLog, _) => {
                        let log = if p == Prog::Icmpguard { LogMode::All } else { LogMode::None };
                        g.set_settings(settings(log, f.limit)).map_err(|e| e.to_string())?;
                        g.xdp_fd()
                    }
                    (Prog::XdpFilter, Some(xf)) => xf[0].fd(),
                    (Prog::XdpFilterIpv4, Some(xf)) => xf[1].fd(),
                    (Prog::XdpFilter | Prog::XdpFilterIpv4, None) => return Err("xdp-filter not loaded".into()),
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
                    out.wrong.push(format!("{p:?} on {}: verdict {} (expected {want})", f.name, r.retval));
                }
                out.ns.entry((fi, p)).or_default().push(f64::from(r.duration_ns));
            }
        }
    }
    g.set_settings(settings(LogMode::All, Limit::default())).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A rough mix of prefix lengths as published blocklists have them
/// (mostly /24 and longer with a tail of short IPv4 prefixes; /48 and /64
/// with some short allocations in IPv6): (length, share in thousandths).
const V4_MIX: [(u8, u32); 3] = [(16, 50), (24, 700), (28, 250)];
const V6_MIX: [(u8, u32); 3] = [(36, 50), (48, 450), (64, 500)];
/// Prefixes a family in the issue-13 blocklist.
const FEED_PREFIXES: u32 = 10_000;

/// The frame's source inside the `i`-th generated prefix of `len`.
fn inside(len: u8, i: u32) -> String {
    match len {
        16 => Ipv4Addr::from(u32::from(v4_p16(i)) | 0x0707).to_string(),
        24 => Ipv4Addr::from(u32::from(v4_prefix(i)) | 7).to_string(),
        28 => Ipv4Addr::from(u32::from(v4_p28(i)) | 7).to_string(),
        36 => Ipv6Addr::from(u128::from(v6_p36(i)) | 7).to_string(),
        48 => Ipv6Addr::from(u128::from(v6_p48(i)) | 7).to_string(),
        _ => Ipv6Addr::from(u128::from(v6_prefix(i)) | 7).to_string(),
    }
}

fn generated(len: u8, i: u32) -> Prefix {
    match len {
        16 => Prefix::V4 { addr: v4_p16(i), len },
        24 => Prefix::V4 { addr: v4_prefix(i), len },
        28 => Prefix::V4 { addr: v4_p28(i), len },
        36 => Prefix::V6 { addr: v6_p36(i), len },
        48 => Prefix::V6 { addr: v6_p48(i), len },
        _ => Prefix::V6 { addr: v6_prefix(i), len },
    }
}

/// Issue 13's blocklist: `n` exact addresses a family and 10k prefixes a
/// family of three lengths each (V4_MIX, V6_MIX), among them
/// 198.51.100.0/24 and 2001:db8:dead::/48 (the allow list's blocked
/// prefixes). Echo from an exact address, from nowhere listed and from
/// inside a prefix of every length, and TCP.
fn feed_case(n: u32) -> Case {
    let mut c = exact_case(n);
    c.block.push("198.51.100.0/24".parse().unwrap());
    c.block.push("2001:db8:dead::/48".parse().unwrap());
    for (len, share) in V4_MIX.iter().chain(&V6_MIX) {
        c.block.extend((0..FEED_PREFIXES * share / 1000).map(|i| generated(*len, i)));
    }
    c.block.sort_unstable();
    c.block.dedup();
    c.xf = None;
    c.name = format!("{} exact + 10k prefixes (3 lengths) a family", table::count(u64::from(n)));
    let echo =
        |name: &'static str, src: &str, want| Frame::new(name, Packet::echo(src, dst_of(src)), want, Target::Icmp);
    let probe = |len: u8| {
        let share = V4_MIX.iter().chain(&V6_MIX).find(|(l, _)| *l == len).map_or(1, |(_, s)| *s);
        inside(len, FEED_PREFIXES * share / 1000 / 3)
    };
    let (p16, p28, p36, p64) = (probe(16), probe(28), probe(36), probe(64));
    c.frames = vec![
        echo("blocked echo IPv4 (exact)", "192.0.2.10", XDP_DROP),
        echo("blocked echo IPv6 (exact)", "2001:db8::10", XDP_DROP),
        Frame::new(
            "blocked echo VLAN (exact)",
            Packet::echo("192.0.2.10", "192.0.2.1").vlan(&[100]),
            XDP_DROP,
            Target::Icmp,
        ),
        echo("allowed echo IPv4 (no match)", "192.0.2.20", XDP_PASS),
        echo("allowed echo IPv6 (no match)", "2001:db8::20", XDP_PASS),
        Frame::new(
            "allowed echo VLAN (no match)",
            Packet::echo("192.0.2.20", "192.0.2.1").vlan(&[100]),
            XDP_PASS,
            Target::Icmp,
        ),
        echo("echo from inside a /16", &p16, XDP_DROP),
        echo("echo from inside a /24", "198.51.100.7", XDP_DROP),
        echo("echo from inside a /28", &p28, XDP_DROP),
        echo("echo from inside a /36", &p36, XDP_DROP),
        echo("echo from inside a /48", "2001:db8:dead::7", XDP_DROP),
        echo("echo from inside a /64", &p64, XDP_DROP),
        Frame::new("TCP IPv4", Packet::tcp("192.0.2.20", "192.0.2.1"), XDP_PASS, Target::NonIcmp),
        Frame::new("TCP IPv6", Packet::tcp("2001:db8::20", "2001:db8::1"), XDP_PASS, Target::NonIcmp),
    ];
    c
}

/// The guarded host's address of the source's family.
fn dst_of(src: &str) -> &'static str {
    if src.contains(':') {
        "2001:db8::1"
    } else {
        "192.0.2.1"
    }
}

/// `allow_case` and `limit_case` on issue 13's blocklist, their ICMP rows
/// held to floor + 30.
fn feed_policy_cases(n: u32) -> [Case; 2] {
    let retarget = |mut c: Case, name: &str| {
        for f in &mut c.frames {
            if f.target == Target::Policy {
                f.target = Target::Icmp;
            }
        }
        c.name = name.into();
        c
    };
    let feed = feed_case(n);
    let mut allow = allow_case(n);
    allow.block = feed.block.clone();
    let mut limit = limit_case(n);
    limit.block = feed.block;
    [retarget(allow, "… + 1k allowed"), retarget(limit, "… + [limit]")]
}

/// The generation the daemon makes for `block` and `allow` at a cold
/// start: its tables hold the longest prefix lengths of each family.
fn daemon_generation(block: &[Prefix], allow: &[Prefix]) -> R<Generation> {
    let sizes = Sizes::for_entries(entries(block, allow), icmpguard::config::DEFAULT_SOURCES);
    Generation::create_sized(sizes).map_err(|e| e.to_string())
}

pub fn measure(opts: &Options, dir: &Path, bpffs: &Path) -> R<Vec<Table>> {
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
    let mut xf_progs: Option<[Loaded; 2]> = None;
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
        let s = run_case(opts, case, g, &floor, xf.as_ref(), &progs)?;
        for (fi, f) in case.frames.iter().enumerate() {
            let v = |p: Prog| s.get(fi, p);
            let (floor, ig) = (v(Prog::Floor).unwrap_or(0.0), v(Prog::Icmpguard).unwrap_or(0.0));
            let xf = v(Prog::XdpFilter);
            let target = match (f.target, xf) {
                (Target::Blocked, Some(xf)) => {
                    let ok = ig <= floor + 30.0 && ig <= 0.5 * xf;
                    format!("≤ floor+30 and ≤ 0.5× xdp-filter: {}", table::verdict(ok))
                }
                (Target::Blocked | Target::Icmp, _) => format!("≤ floor+30: {}", table::verdict(ig <= floor + 30.0)),
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
        for w in s.wrong {
            t.failed = true;
            t.note(format!("WRONG VERDICT, {}: {w}", case.name));
        }
        // The last xdp-filter pair stays for section 1c's instruction counts.
        if let Some(x) = xf {
            xf_progs = Some(x);
        }
        let _ = std::fs::remove_dir_all(&pin_root);
    }
    t.note(format!(
        "{} repeats per run, {} rounds, trimmed mean of the kernel's per-repeat average; all columns measured in the same rounds.",
        opts.repeat, opts.rounds
    ));
    t.note("icmpguard runs with the defaults of a file that sets only `block` (icmp = \"echo\", log = \"all\", rate_limit = 100): past the in-kernel budget of 100 events a second a packet costs the budget check, not an event. `log=none` is the same program with events off.");
    t.note("Each blocklist holds that many addresses of each family; the prefix rows add 10k IPv4 /24 and 10k IPv6 /64, and their blocked frames come from inside a prefix. The maps of this table grow from case to case as reloads would (sized for rules, prefix lengths placed as they arrive: here /24 and /64 in the address tables). xdp-filter has no prefixes and at most 10k addresses a family: it gets the blocked addresses exactly, filled up to 10k.");
    t.note("xdp-filter: xdpfilt_alw_all.o (what `xdp-filter load` picks by default) and xdpfilt_alw_ip.o (what `-f ipv4` picks), loaded from Debian's objects; the allowed and TCP frames come from a neighbour, which both filters pass.");
    t.note("`+ 1k allowed`: the same blocklist with `allow` = 1000 exact addresses (500 IPv4: the hosts of 198.51.100.0/24 and 203.0.113.0/24 but 198.51.100.8-15; 500 IPv6 in 2001:db8::/32), some inside blocked prefixes. The allowed frames come from an allowed address inside a blocked prefix (one lookup: the exact allow entry); the blocked frames from a blocked, not allowed address, so the destination is looked up too (an allow entry could still save the packet).");
    t.note("`+ [limit]`: the same blocklist with an echo rate limit; each frame has its own source, neither blocked nor allowed, so both addresses are looked up before the limiter. Under the limit: echo = 1e9/s, burst = 1e9, so every run is admitted, either finding its bucket idle (a store) or, at echo = 1e6/s, within the burst (an atomic add). Over: echo = 1, burst = 1: the first run of a second is admitted, the others refused.");
    t.note("Targets (issue 12's): a frame through the allow list or the limiter ≤ floor + 40 ns; a non-ICMP frame ≤ floor + 5 ns; xdp-filter has no allow list or rate limit, so those rows have no xdp-filter columns. Issue 13's targets are in table 1b.");
    drop(gen);

    // 1b: issue 13's blocklist, in a generation made as the daemon makes
    // one at a cold start.
    let mut b = Table::new(
        "1b. Datapath at issue 13's scale: ns per packet (BPF_PROG_TEST_RUN)",
        &["blocklist", "packet", "floor", "icmpguard", "− floor", "icmpguard log=none", "− floor (log=none)", "target"],
    );
    let feed = feed_case(opts.big);
    let [feed_allow, feed_limit] = feed_policy_cases(opts.big);
    let mut g = daemon_generation(&feed.block, &feed_allow.allow)?;
    let progs = [Prog::Floor, Prog::Icmpguard, Prog::IcmpguardNoLog];
    let mut paths: Vec<(String, Vec<u8>, Limit, f64)> = Vec::new();
    for case in [&feed, &feed_allow, &feed_limit] {
        let out = g.apply(&plan(entries(&case.block, &case.allow), g.rules())).map_err(|e| e.to_string())?;
        if out != Outcome::Applied {
            return Err(format!("{}: the generation did not take the blocklist ({out:?})", case.name));
        }
        let s = run_case(opts, case, &mut g, &floor, None, &progs)?;
        for (fi, f) in case.frames.iter().enumerate() {
            let v = |p: Prog| s.get(fi, p).unwrap_or(0.0);
            let (fl, ig, none) = (v(Prog::Floor), v(Prog::Icmpguard), v(Prog::IcmpguardNoLog));
            let target = match f.target {
                Target::NonIcmp => format!("≤ floor+5: {}", table::verdict(ig <= fl + 5.0)),
                _ => format!("≤ floor+30: {}", table::verdict(ig <= fl + 30.0)),
            };
            b.row(vec![
                case.name.clone(),
                f.name.into(),
                table::ns(fl),
                table::ns(ig),
                format!("{:+.1}", ig - fl),
                table::ns(none),
                format!("{:+.1}", none - fl),
                target,
            ]);
            paths.push((format!("{}: {}", case.name, f.name), f.bytes.clone(), f.limit, ig - fl));
        }
        for w in s.wrong {
            b.failed = true;
            b.note(format!("WRONG VERDICT, {}: {w}", case.name));
        }
    }
    let mix = |m: &[(u8, u32)]| {
        m.iter().map(|(l, s)| format!("{} /{l}", FEED_PREFIXES * s / 1000)).collect::<Vec<_>>().join(", ")
    };
    b.note(format!(
        "The blocklist: {} exact addresses of each family (192.0.2.10 and 2001:db8::10 among them) and 10k prefixes a family: IPv4 {} (in 240.0.0.0/4, 10.128.0.0/9 and 198.18.0.0/15, with 198.51.100.0/24), IPv6 {} (in 3fff::/20, 2001:db8::/32, with 2001:db8:dead::/48). The maps are made as the daemon makes them at a cold start (`Sizes::for_entries`): each family's address table holds its exact addresses and its longest prefix lengths (as many as the table has slots for), the rest are in the family's LPM trie.",
        table::count(u64::from(opts.big)),
        mix(&V4_MIX),
        mix(&V6_MIX)
    ));
    b.note("Default event settings (log = \"all\", rate_limit = 100) in the `icmpguard` column, as in table 1; `log=none` beside it. Allowed frames match nothing (their sources are the bench's neighbours); a frame from inside a prefix matches only that prefix. `… + 1k allowed` and `… + [limit]` are table 1's allow-list and limiter rows on this blocklist.");
    b.note(
        "Targets (issue 13): every ICMP verdict ≤ floor + 30 ns with default event settings, non-ICMP ≤ floor + 5 ns.",
    );

    let c = instructions(opts, &g, &floor, xf_progs.as_ref(), &paths)?;
    drop(g);
    let d = drop_counters(opts, &floor)?;
    Ok(vec![t, b, c, d])
}

/// ns per run of `frame` on `fd` by each of two threads pinned to CPUs 0
/// and 1 and started together: the mean of the two.
fn on_two_cpus(fd: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> R<f64> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let start = std::sync::Barrier::new(2);
    let runs: Vec<R<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let start = &start;
                s.spawn(move || -> R<f64> {
                    let mut set = CpuSet::new();
                    set.set(cpu).map_err(|e| e.to_string())?;
                    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                        .map_err(|e| format!("pinning to CPU {cpu}: {e}"))?;
                    start.wait();
                    let r = sys::prog_test_run(fd, frame, repeat).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
                    Ok(f64::from(r.duration_ns))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into()))).collect()
    });
    let mut sum = 0.0;
    for r in runs {
        sum += r?;
    }
    Ok(sum / 2.0)
}

/// 1d: the drop counters in a slot of their own per CPU against shared
/// slots (what a long list on a machine of many CPUs gets, made here with
/// one slot on two CPUs), on one CPU and on two dropping for the same
/// rule at once.
fn drop_counters(opts: &Options, floor: &Loaded) -> R<Table> {
    let mut t = Table::new(
        "1d. Drop counters: a slot per CPU against shared slots, ns per packet (BPF_PROG_TEST_RUN)",
        &["drop counter", "one CPU", "− floor", "two CPUs, one rule", "− floor (two CPUs)"],
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rules: Vec<Prefix> = vec!["192.0.2.10".parse().map_err(|e| format!("{e}"))?];
    let frame = Packet::echo("192.0.2.10", "198.51.100.1").bytes();
    let mut floor_one = Vec::new();
    let mut floor_two = Vec::new();
    let mut rows = Vec::new();
    for (name, slots) in [("a slot per CPU", None), ("one slot, shared", Some(1))] {
        let mut g =
            Generation::create_sized(Sizes { drop_slots: slots, ..Sizes::uniform(4096) }).map_err(|e| e.to_string())?;
        g.set_settings(settings(LogMode::All, Limit::default())).map_err(|e| e.to_string())?;
        g.apply(&plan(entries(&rules, &[]), g.rules())).map_err(|e| e.to_string())?;
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for _ in 0..opts.rounds {
            let r =
                sys::prog_test_run(g.xdp_fd(), &frame, opts.repeat).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
            if r.retval != XDP_DROP {
                return Err(format!("1d, {name}: the blocked frame got verdict {}", r.retval));
            }
            one.push(f64::from(r.duration_ns));
            let f =
                sys::prog_test_run(floor.fd(), &frame, opts.repeat).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
            floor_one.push(f64::from(f.duration_ns));
            if cpus >= 2 {
                two.push(on_two_cpus(g.xdp_fd(), &frame, opts.repeat)?);
                floor_two.push(on_two_cpus(floor.fd(), &frame, opts.repeat)?);
            }
        }
        rows.push((name, table::trimmed_mean(&one), (!two.is_empty()).then(|| table::trimmed_mean(&two))));
    }
    let (f1, f2) = (table::trimmed_mean(&floor_one), (!floor_two.is_empty()).then(|| table::trimmed_mean(&floor_two)));
    for (name, one, two) in rows {
        let dash = || "—".to_string();
        t.row(vec![
            name.into(),
            table::ns(one),
            format!("{:+.1}", one - f1),
            two.map_or_else(dash, table::ns),
            two.zip(f2).map_or_else(dash, |(two, f2)| format!("{:+.1}", two - f2)),
        ]);
    }
    t.note(format!(
        "An echo request from a blocked address (one exact entry), default event settings; {} repeats per run, {} rounds, trimmed mean. Two CPUs: two threads pinned to CPUs 0 and 1 run the same frame at once, so both count drops for the one rule; the figure is the mean of the two, beside the floor run the same way.",
        opts.repeat, opts.rounds
    ));
    let ram = nix::sys::sysinfo::sysinfo().map_or(0, |i| i.ram_total());
    let budget = icmpguard::kernel::drop_counter_budget(ram);
    t.note(format!(
        "A rule's counter has a slot per CPU while the counters of all rules fit in a 64th of the machine's memory (at least {} MiB), else fewer (a power of two), shared with atomic adds (src/kernel/sizes.rs, drop_slots). On this machine ({} GiB, {cpus} CPUs: {} MiB) a list past about {} entries would share one slot.",
        icmpguard::kernel::DROP_COUNTER_BUDGET >> 20,
        ram >> 30,
        budget >> 20,
        table::count(budget / (8 * cpus as u64) * 2 / 3),
    ));
    Ok(t)
}

/// What the kernel says about a loaded program.
struct ProgStats {
    id: u32,
    name: String,
    xlated_insns: u32,
    jited_bytes: u32,
    verified_insns: u32,
}

fn prog_stats(fd: BorrowedFd<'_>) -> R<ProgStats> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a writable bpf_prog_info of `len` bytes and all of
    // its pointer fields are NULL, so the kernel writes only into it.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return Err(format!("bpf_prog_get_info_by_fd: {}", std::io::Error::from_raw_os_error(-rc)));
    }
    let name: Vec<u8> = info.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    Ok(ProgStats {
        id: info.id,
        name: String::from_utf8_lossy(&name).into_owned(),
        // 8 bytes an instruction.
        xlated_insns: info.xlated_prog_len / 8,
        jited_bytes: info.jited_prog_len,
        verified_insns: info.verified_insns,
    })
}

/// `bpftool prog profile` of program `id` for a second while `fd` runs
/// `frame` in a test_run loop: CPU instructions and cycles per run, or why
/// not.
fn profile(id: u32, fd: BorrowedFd<'_>, frame: &[u8]) -> Result<(f64, f64), String> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sys::prog_test_run(fd, frame, 100_000);
            }
        });
        let out = std::process::Command::new("bpftool")
            .args(["prog", "profile", "id", &id.to_string(), "duration", "1", "instructions", "cycles"])
            .output();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    let out = out.map_err(|e| format!("bpftool: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            let (v, n) = (w.next()?, w.next()?);
            (n == name).then(|| v.parse::<f64>().ok()).flatten()
        })
    };
    match (out.status.success(), field("run_cnt"), field("instructions"), field("cycles")) {
        (true, Some(runs), Some(insns), Some(cycles)) if runs > 0.0 => Ok((insns / runs, cycles / runs)),
        _ => Err(text.lines().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string()),
    }
}

/// 1c: where the nanoseconds go. Per path, the CPU instructions and cycles
/// a run takes (`bpftool prog profile`), where the kernel and bpftool
/// support it; per program, its size as the kernel runs it (xlated BPF
/// instructions, JIT bytes) and the instructions the verifier walked.
fn instructions(
    opts: &Options,
    g: &Generation,
    floor: &Loaded,
    xf: Option<&[Loaded; 2]>,
    paths: &[(String, Vec<u8>, Limit, f64)],
) -> R<Table> {
    let ig = prog_stats(g.xdp_fd())?;
    let first = paths.first().ok_or("no path")?;
    let supported = profile(ig.id, g.xdp_fd(), &first.1);
    let mut t;
    match &supported {
        Ok(_) => {
            t = Table::new(
                "1c. Where the nanoseconds go: instructions per path (bpftool prog profile)",
                &["path (table 1b)", "− floor", "CPU instructions per run", "cycles per run"],
            );
            // Full mode: every path; quick: the first few.
            let n = if opts.rounds > 3 { paths.len() } else { paths.len().min(4) };
            for (name, frame, _limit, over) in &paths[..n] {
                let (i, c) = profile(ig.id, g.xdp_fd(), frame).unwrap_or((f64::NAN, f64::NAN));
                t.row(vec![name.clone(), format!("{over:+.1}"), format!("{i:.0}"), format!("{c:.0}")]);
            }
            t.note("bpftool prog profile: the program's hardware counters over 1 s, read by fentry/fexit programs around it while the bench runs the frame in a BPF_PROG_TEST_RUN loop; per run = counter ÷ run_cnt. The paths with a [limit] run with the default settings here (no limit).");
        }
        Err(why) => {
            t = Table::new(
                "1c. Where the nanoseconds go: program sizes (bpftool prog profile unsupported here)",
                &["program", "xlated BPF instructions", "JIT bytes", "verified_insns"],
            );
            t.note(format!("`bpftool prog profile id {} duration 1 instructions cycles` on this machine: \"{why}\". Per-path instruction counts need it (and hardware counters, which this VM does not expose to perf either), so this table falls back to what the kernel reports for each program (bpf_prog_info, as `bpftool prog show` prints xlated and jited; this bpftool does not print verified_insns, which is read from the same bpf_prog_info): the size of the program as it runs, not the instructions of one path. Table 1b's `− floor` column is the per-path cost.", ig.id));
        }
    }
    if supported.is_err() {
        let mut progs: Vec<(&str, ProgStats)> = vec![
            ("icmpguard XDP (attached on ingress)", ig),
            ("icmpguard tcx (egress)", prog_stats(g.tcx_fd())?),
            ("floor (XDP_DROP)", prog_stats(floor.fd())?),
        ];
        if let Some(xf) = xf {
            progs.push(("xdp-filter xdpfilt_alw_all", prog_stats(xf[0].fd())?));
            progs.push(("xdp-filter xdpfilt_alw_ip", prog_stats(xf[1].fd())?));
        }
        for (label, s) in progs {
            t.row(vec![
                format!("{label}: {}", s.name),
                s.xlated_insns.to_string(),
                s.jited_bytes.to_string(),
                s.verified_insns.to_string(),
            ]);
        }
    }
    Ok(t)
}
