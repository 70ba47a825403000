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
use icmpguard::plan::{blocks, plan};
use icmpguard::plan::{IcmpPolicy, LogMode, Settings};
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

/// One blocklist under test and the frames it is measured on.
struct Case {
    name: String,
    block: Vec<Prefix>,
    /// What xdp-filter gets: exact addresses only, at most 10k a family.
    xf_v4: Vec<[u8; 4]>,
    xf_v6: Vec<[u8; 16]>,
    blocked_v4: &'static str,
    blocked_v6: &'static str,
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
        xf_v4,
        xf_v6,
        blocked_v4: "192.0.2.10",
        blocked_v6: "2001:db8::10",
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
    c.xf_v4[0] = [198, 51, 100, 7];
    c.xf_v6[0] = "2001:db8:dead::7".parse::<std::net::Ipv6Addr>().unwrap().octets();
    c.name = format!("{} exact + 10k prefixes", table::count(u64::from(n)));
    c.blocked_v4 = "198.51.100.7";
    c.blocked_v6 = "2001:db8:dead::7";
    c
}

struct Frame {
    name: &'static str,
    bytes: Vec<u8>,
    blocked: bool,
    tcp: bool,
}

fn frames(c: &Case) -> Vec<Frame> {
    vec![
        Frame {
            name: "blocked echo IPv4",
            bytes: Packet::echo(c.blocked_v4, "192.0.2.1").bytes(),
            blocked: true,
            tcp: false,
        },
        Frame {
            name: "blocked echo IPv6",
            bytes: Packet::echo(c.blocked_v6, "2001:db8::1").bytes(),
            blocked: true,
            tcp: false,
        },
        Frame {
            name: "blocked echo VLAN",
            bytes: Packet::echo(c.blocked_v4, "192.0.2.1").vlan(&[100]).bytes(),
            blocked: true,
            tcp: false,
        },
        Frame {
            name: "allowed echo IPv4",
            bytes: Packet::echo("192.0.2.20", "192.0.2.1").bytes(),
            blocked: false,
            tcp: false,
        },
        Frame { name: "TCP IPv4", bytes: Packet::tcp("192.0.2.20", "192.0.2.1").bytes(), blocked: false, tcp: true },
    ]
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

fn settings(log: LogMode) -> Settings {
    // The defaults of a file that sets nothing but `block`.
    Settings { policy: IcmpPolicy::Echo, log, rate_limit: icmpguard::config::DEFAULT_RATE_LIMIT, ..Settings::default() }
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
    let cases = [exact_case(1), exact_case(10_000), exact_case(opts.big), prefix_case(opts.big)];
    let mut gen: Option<Generation> = None;
    for (ci, case) in cases.iter().enumerate() {
        // Grow one generation from case to case, as a reload would: only the
        // difference is written.
        let g = match gen.as_mut() {
            Some(g) if g.capacity() as usize >= case.block.len() => g,
            _ => gen.insert(Generation::create(capacity_for(case.block.len())).map_err(|e| e.to_string())?),
        };
        g.set_settings(settings(LogMode::All)).map_err(|e| e.to_string())?;
        g.apply(&plan(blocks(&case.block), g.rules())).map_err(|e| e.to_string())?;
        let pin_root = bpffs.join(format!("xdp-filter-{ci}"));
        let xf = [
            xdp_filter(&xf_all, &pin_root, &case.xf_v4, &case.xf_v6)?,
            xdp_filter(&xf_ip, &pin_root, &case.xf_v4, &case.xf_v6)?,
        ];
        let frames = frames(case);
        let mut samples: HashMap<(usize, Prog), Vec<f64>> = HashMap::new();
        let mut wrong: Vec<String> = Vec::new();
        for round in 0..opts.rounds {
            for (fi, f) in frames.iter().enumerate() {
                for p in PROGS {
                    let fd = match p {
                        Prog::Floor => floor.fd(),
                        Prog::Icmpguard | Prog::IcmpguardNoLog => {
                            let log = if p == Prog::Icmpguard { LogMode::All } else { LogMode::None };
                            g.set_settings(settings(log)).map_err(|e| e.to_string())?;
                            g.xdp_fd()
                        }
                        Prog::XdpFilter => xf[0].fd(),
                        Prog::XdpFilterIpv4 => xf[1].fd(),
                    };
                    let r = sys::prog_test_run(fd, &f.bytes, opts.repeat)
                        .map_err(|e| format!("BPF_PROG_TEST_RUN ({p:?}, {}): {e}", f.name))?;
                    let want = if p == Prog::Floor || f.blocked { XDP_DROP } else { XDP_PASS };
                    if round == 0 && r.retval != want {
                        wrong.push(format!("{p:?} on {}: verdict {} (expected {want})", f.name, r.retval));
                    }
                    samples.entry((fi, p)).or_default().push(f64::from(r.duration_ns));
                }
            }
        }
        g.set_settings(settings(LogMode::All)).map_err(|e| e.to_string())?;
        for (fi, f) in frames.iter().enumerate() {
            let v = |p: Prog| table::trimmed_mean(&samples[&(fi, p)]);
            let (floor, ig, xf) = (v(Prog::Floor), v(Prog::Icmpguard), v(Prog::XdpFilter));
            let target = if f.blocked {
                let ok = ig <= floor + 30.0 && ig <= 0.5 * xf;
                format!("≤ floor+30 and ≤ 0.5× xdp-filter: {}", table::verdict(ok))
            } else if f.tcp {
                format!("≤ floor+5: {}", table::verdict(ig <= floor + 5.0))
            } else {
                "—".into()
            };
            t.row(vec![
                case.name.clone(),
                f.name.into(),
                table::ns(floor),
                table::ns(ig),
                format!("+{}", table::ns(ig - floor)),
                table::ns(v(Prog::IcmpguardNoLog)),
                table::ns(xf),
                table::ratio(ig, xf),
                table::ns(v(Prog::XdpFilterIpv4)),
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
    Ok(t)
}
