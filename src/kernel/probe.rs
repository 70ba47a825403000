//! What the running kernel offers, probed once at start. icmpguard runs
//! from 5.10 on; where a kernel lacks a newer facility it takes the older
//! one with the same promises:
//!
//! | facility | from | without it |
//! |---|---|---|
//! | `bpf_xdp_load_bytes` | 5.18 | the XDP program without it reads headers after IPv4 options and IPv6 extension headers by moving the packet start (`bpf_xdp_adjust_head`) |
//! | BPF atomics (compare-and-swap) | 5.12 | the rate limit starts a source's bucket with a plain store (a race on its first requests, icmpguard.toml(5)) |
//! | tcx egress links | 6.6 | egress is a tc clsact filter in direct-action mode |
//!
//! `ICMPGUARD_TEST_KERNEL_LACKS=xdp_load_bytes,atomics,tcx` makes a newer kernel
//! look like an older one, so that the test suite proves the older paths
//! on any kernel (the kernel tier proves them on the real old kernels).

use std::fmt;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::kernel::sys;

/// The probed facilities of this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facilities {
    /// `uname -r`.
    pub release: String,
    pub xdp_load_bytes: bool,
    /// BPF's compare-and-swap and fetching add (every kernel with
    /// `xdp_load_bytes` has them).
    pub atomics: bool,
    pub tcx: bool,
}

/// Which of the object's XDP programs a kernel runs (bpf/icmpguard.bpf.c);
/// the number is what `ig_meta.xdp_compat` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpVariant {
    /// `icmpguard_xdp`: 5.18+.
    Full = 0,
    /// `icmpguard_xdp_compat`: before 5.12.
    Compat = 1,
    /// `icmpguard_xdp_atomic`: 5.12 to 5.17.
    Atomic = 2,
}

/// How egress is hooked on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressHook {
    Tcx,
    Tc,
}

impl fmt::Display for EgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EgressHook::Tcx => "tcx",
            EgressHook::Tc => "tc clsact",
        })
    }
}

impl Facilities {
    pub fn egress(&self) -> EgressHook {
        if self.tcx {
            EgressHook::Tcx
        } else {
            EgressHook::Tc
        }
    }

    /// The kernel's (major, minor), from its release; `None` when the
    /// release does not start with one.
    pub fn version(&self) -> Option<(u32, u32)> {
        crate::kernel::refusal::kernel_version(&self.release)
    }

    /// The XDP program for this kernel.
    pub fn xdp_variant(&self) -> XdpVariant {
        match (self.xdp_load_bytes, self.atomics) {
            (true, _) => XdpVariant::Full,
            (false, true) => XdpVariant::Atomic,
            (false, false) => XdpVariant::Compat,
        }
    }

    /// One line for the log: the kernel and the paths it gets.
    pub fn describe(&self) -> String {
        let limit = match self.xdp_variant() {
            XdpVariant::Full => "",
            XdpVariant::Atomic => ", compare-and-swap for the rate limit",
            XdpVariant::Compat => ", a plain store for the rate limit (no BPF compare-and-swap before 5.12)",
        };
        format!(
            "kernel {}: egress through {}, {} for variable-length headers{limit}",
            self.release,
            self.egress(),
            if self.xdp_load_bytes { "bpf_xdp_load_bytes" } else { "bpf_xdp_adjust_head" }
        )
    }
}

fn release() -> String {
    nix::sys::utsname::uname().map_or_else(|_| "(unknown)".into(), |u| u.release().to_string_lossy().into_owned())
}

/// The facilities of the running kernel (probed on first use). A probe that
/// fails for another reason than "not supported" counts as not supported:
/// the older path works on every kernel icmpguard runs on.
pub fn facilities() -> &'static Facilities {
    static PROBED: OnceLock<Facilities> = OnceLock::new();
    PROBED.get_or_init(|| {
        let lacks = std::env::var("ICMPGUARD_TEST_KERNEL_LACKS").unwrap_or_default();
        let lacks = |what: &str| lacks.split(',').any(|w| w.trim() == what);
        let xdp_load_bytes =
            !lacks("xdp_load_bytes") && sys::probe_xdp_helper(libbpf_sys::BPF_FUNC_xdp_load_bytes).unwrap_or(false);
        Facilities {
            release: release(),
            xdp_load_bytes,
            atomics: xdp_load_bytes || (!lacks("atomics") && sys::probe_atomics().unwrap_or(false)),
            tcx: !lacks("tcx") && sys::probe_tcx().unwrap_or(false),
        }
    })
}

/// Refuses a kernel that lacks what icmpguard cannot do without, naming
/// the facility and the kernel, before anything is loaded. (What the
/// verifier then refuses is reported by the load, with its one line.)
pub fn require() -> Result<()> {
    let release = &facilities().release;
    if let Some(v) = facilities().version() {
        if v < (5, 10) {
            return Err(Error::Unsupported {
                what: format!("kernel {release} is older than 5.10, the oldest icmpguard runs on"),
                hint: "icmpguard needs the BPF ring buffer (5.8), XDP bpf_links (5.9) and bounded loops: run Debian 11, Ubuntu 22.04 or later".into(),
            });
        }
    }
    Ok(())
}

/// On kernels before 5.11, which charge BPF maps to RLIMIT_MEMLOCK rather
/// than to the memory cgroup: raises the limit as far as allowed, and
/// returns a warning when it stays finite (the unit sets
/// LimitMEMLOCK=infinity; the daemon lacks CAP_SYS_RESOURCE to do it).
pub fn memlock_warning() -> Option<String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let release = &facilities().release;
    let old = facilities().version().is_some_and(|v| v < (5, 11));
    if !old {
        return None;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).ok()?;
    if soft == RLIM_INFINITY {
        return None;
    }
    if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok() {
        return None;
    }
    // Without CAP_SYS_RESOURCE the soft limit can still go up to the hard one.
    if hard > soft {
        let _ = setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard);
    }
    let now = getrlimit(Resource::RLIMIT_MEMLOCK).map_or(soft, |(s, _)| s);
    Some(format!(
        "kernel {release} charges BPF maps to RLIMIT_MEMLOCK (before 5.11), which is {} KiB here and cannot be raised without CAP_SYS_RESOURCE: large blocklists may fail to load; set LimitMEMLOCK=infinity (the packaged unit does) or `ulimit -l unlimited`",
        now / 1024
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_the_kernel_and_each_path() {
        let f = Facilities { release: "5.10.0-35-amd64".into(), xdp_load_bytes: false, atomics: false, tcx: false };
        assert_eq!(f.egress(), EgressHook::Tc);
        assert_eq!(f.xdp_variant(), XdpVariant::Compat);
        assert_eq!(
            f.describe(),
            "kernel 5.10.0-35-amd64: egress through tc clsact, bpf_xdp_adjust_head for variable-length headers, a plain store for the rate limit (no BPF compare-and-swap before 5.12)"
        );
        let f = Facilities { release: "5.15.0-1".into(), xdp_load_bytes: false, atomics: true, tcx: false };
        assert_eq!(f.xdp_variant(), XdpVariant::Atomic);
        assert_eq!(
            f.describe(),
            "kernel 5.15.0-1: egress through tc clsact, bpf_xdp_adjust_head for variable-length headers, compare-and-swap for the rate limit"
        );
        let f = Facilities { release: "6.12.1".into(), xdp_load_bytes: true, atomics: true, tcx: true };
        assert_eq!(f.egress(), EgressHook::Tcx);
        assert_eq!(f.xdp_variant(), XdpVariant::Full);
        assert_eq!(f.describe(), "kernel 6.12.1: egress through tcx, bpf_xdp_load_bytes for variable-length headers");
    }

    #[test]
    fn kernel_versions_are_read_from_release_strings() {
        use crate::kernel::refusal::kernel_version;
        assert_eq!(kernel_version("5.10.0-32-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("4.19.0"), Some((4, 19)));
        assert_eq!(kernel_version("weird"), None);
    }
}
