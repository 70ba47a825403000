//! What to tell the operator when the kernel refuses the programs: the
//! kernel, the requirement it may miss, the one line of the verifier's log
//! that says why, and what to do. libbpf's own messages are kept here (not
//! printed) for that line; with ICMPGUARD_LIBBPF_DEBUG set they all go to
//! stderr, the verifier's whole log among them.

use std::sync::Mutex;

use libbpf_rs::PrintLevel;

use crate::kernel::probe;

static LIBBPF_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// libbpf's own messages are kept (not printed) so that a failed load can
/// quote the verifier's last lines.
/// With ICMPGUARD_LIBBPF_DEBUG set, every message also goes to stderr.
pub fn keep_libbpf_message(level: PrintLevel, msg: String) {
    if std::env::var_os("ICMPGUARD_LIBBPF_DEBUG").is_some() {
        eprint!("libbpf: {msg}");
    }
    if matches!(level, PrintLevel::Debug) {
        return;
    }
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        log.extend(msg.lines().map(str::to_string));
        let excess = log.len().saturating_sub(40);
        log.drain(..excess);
    }
}

/// What to tell the operator when the kernel refused to load the programs:
/// the kernel, the requirement it may miss, and the one line of the
/// verifier's log that says why (the whole log goes to stderr with
/// ICMPGUARD_LIBBPF_DEBUG=1).
pub fn load_hint(log: &str, errno: Option<i32>) -> String {
    let release = &probe::facilities().release;
    let mut hint = if errno == Some(nix::errno::Errno::EPERM as i32) {
        let old = kernel_version(release).is_some_and(|v| v < (5, 11));
        if old {
            format!(
                "kernel {release} charges BPF maps to RLIMIT_MEMLOCK (before 5.11): raise it (LimitMEMLOCK=infinity in the unit, `ulimit -l unlimited` in a shell); otherwise run as root (CAP_BPF, CAP_NET_ADMIN)"
            )
        } else {
            "run as root (CAP_BPF and CAP_NET_ADMIN are needed)".to_string()
        }
    } else {
        match kernel_version(release) {
            Some(v) if v < (5, 10) => {
                format!("kernel {release} is older than 5.10, the oldest icmpguard runs on (BPF ring buffer, bpf_link for XDP, bounded loops)")
            }
            _ => format!(
                "kernel {release} refused the programs; icmpguard needs 5.10 or later with BTF (CONFIG_DEBUG_INFO_BTF) and XDP"
            ),
        }
    };
    if !perfmon_capable() {
        hint.push_str(
            "\nwithout CAP_PERFMON, kernels such as Debian's 5.10 to 6.12 verify programs under Spectre v1 hardening and refuse icmpguard's: grant CAP_PERFMON (the packaged unit does) or run as root",
        );
    }
    let reason = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--") && !l.contains("processed ") && !l.starts_with("libbpf:"))
        .or_else(|| log.lines().map(str::trim).rfind(|l| !l.is_empty()));
    if let Some(r) = reason {
        hint.push_str(&format!("\nthe kernel said: {r}"));
    }
    hint.push_str("\nfor the verifier's whole log, run again with ICMPGUARD_LIBBPF_DEBUG=1");
    hint
}

/// Whether this process has CAP_PERFMON in its effective set (from
/// /proc/self/status: no system call, no dependency).
fn perfmon_capable() -> bool {
    const CAP_PERFMON: u32 = 38;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim().to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|eff| eff & (1 << CAP_PERFMON) != 0)
}

/// The (major, minor) of a kernel release string such as "6.1.0-41-amd64".
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn take_libbpf_log() -> String {
    LIBBPF_LOG.lock().map(|mut l| std::mem::take(&mut *l).join("\n")).unwrap_or_default()
}
