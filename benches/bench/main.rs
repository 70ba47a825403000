//! icmpguard beside its peers and floors: datapath cost, packet rate,
//! control plane and events, printed as one set of tables in which every
//! figure stands beside a peer or a floor measured in the same run.
//!
//! Run it with `scripts/bench.sh [--quick]` (root). `cargo test` builds this
//! target and runs it without `--bench`, which only checks that it starts.

#[path = "../../tests/common/packet.rs"]
mod packet;

mod control;
mod datapath;
mod events;
mod gen;
mod rate;
mod scale;
mod table;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use world::{Bpffs, Pair, Rsyslog, R};

struct Args {
    quick: bool,
    /// Only these sections (1-4); all when empty.
    only: Vec<u8>,
    /// Section 3e alone (`--only 3e`), without the rest of section 3.
    only_3e: bool,
    dir: Option<PathBuf>,
    out: Option<PathBuf>,
}

fn parse_args() -> R<Option<Args>> {
    let mut a = Args { quick: false, only: vec![], only_3e: false, dir: None, out: None };
    let mut bench = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => bench = true,
            "--quick" => a.quick = true,
            "--only" => {
                let v = it.next().ok_or("--only needs a list such as 1,3")?;
                for s in v.split(',') {
                    if s == "3e" {
                        a.only_3e = true;
                        continue;
                    }
                    a.only.push(s.parse().map_err(|_| format!("--only: {s} is not a section number (or 3e)"))?);
                }
            }
            "--dir" => a.dir = Some(it.next().ok_or("--dir needs a directory")?.into()),
            "--out" => a.out = Some(it.next().ok_or("--out needs a file")?.into()),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: bench [--quick] [--only 1,2,3,3e,4] [--dir DIR] [--out FILE]"
                ))
            }
        }
    }
    Ok(bench.then_some(a))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = world::status_kb_of("/proc/meminfo", "MemTotal").unwrap_or(0);
    format!("{cpu}, {cores} CPUs, {} GB, kernel {}", mem_kb / 1024 / 1024, kernel.trim())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(world::MEASURE_CHILD) {
        return world::measure_child(&argv[2..]);
    }
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("bench: not run (use scripts/bench.sh, which runs `cargo bench --bench bench`)");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> R<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (BPF, network namespaces, mounts): run scripts/bench.sh as root".into());
    }
    for (tool, package) in [
        ("clang", "clang"),
        ("trafgen", "netsniff-ng"),
        ("xdp-filter", "xdp-tools"),
        ("nft", "nftables"),
        ("ipset", "ipset"),
        ("ethtool", "ethtool"),
        ("rsyslogd", "rsyslog"),
        ("unshare", "util-linux"),
        ("taskset", "util-linux"),
    ] {
        world::require(tool, package)?;
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("icmpguard-bench-").tempdir().map_err(|e| e.to_string())?;
            tmp.path().to_path_buf()
        }
    };
    let want = |n: u8| (args.only.is_empty() && !args.only_3e) || args.only.contains(&n);
    let started = Instant::now();
    let mode = if args.quick { "quick" } else { "full" };
    let mut out = format!(
        "## icmpguard benchmark ({mode})\n\nMachine: {}. Command: `scripts/bench.sh{}`.\n\n",
        machine(),
        if args.quick { " --quick" } else { "" }
    );
    print!("{out}");
    let mut failed = false;
    let mut emit = |t: table::Table| {
        failed |= t.failed;
        let s = t.render();
        print!("{s}");
        out.push_str(&s);
    };

    let bpffs = Bpffs::mount(dir.join("bpf"))?;
    if want(1) {
        let opts = if args.quick {
            datapath::Options { big: 100_000, repeat: 200_000, rounds: 3 }
        } else {
            datapath::Options { big: 1_000_000, repeat: 1_000_000, rounds: 7 }
        };
        for t in datapath::measure(&opts, &dir, &bpffs.path)? {
            emit(t);
        }
    }
    if want(2) || want(3) || want(4) || args.only_3e {
        let pair = world::pair(&dir)?;
        let syslog = world::syslog(&dir, &pair)?;
        let ctx = Ctx { dir: dir.clone(), bpffs: bpffs.path.clone(), pair: &pair, syslog: &syslog, quick: args.quick };
        if want(2) {
            for t in rate::measure(&ctx)? {
                emit(t);
            }
        }
        if want(3) {
            for t in control::measure(&ctx)? {
                emit(t);
            }
        }
        // Ten million entries (nft -f of them takes ten minutes): in a run
        // of every section, or alone with `--only 3e`; not with `--only 3`.
        if args.only.is_empty() || args.only_3e {
            emit(scale::measure(&ctx)?);
        }
        if want(4) {
            for t in events::measure(&ctx)? {
                emit(t);
            }
        }
    }
    let tail = format!("Total time: {:.0} s.\n", started.elapsed().as_secs_f64());
    print!("{tail}");
    out.push_str(&tail);
    if let Some(path) = &args.out {
        std::fs::write(path, &out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if failed {
        return Err("some results are wrong (see the notes marked WRONG above)".into());
    }
    Ok(())
}

/// What the sections that need a network share.
pub struct Ctx<'a> {
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    pub pair: &'a Pair,
    pub syslog: &'a Rsyslog,
    pub quick: bool,
}
