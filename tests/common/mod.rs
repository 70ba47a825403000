//! Shared by the privileged test tiers.
#![allow(dead_code)]

pub mod lab;
pub mod packet;
pub mod world;

/// Privileged tests run as root (CI does). Without root they fail with a
/// clear message, unless ICMPGUARD_SKIP_PRIVILEGED=1 asks to skip them: a
/// test that silently passes without running proves nothing.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("ICMPGUARD_SKIP_PRIVILEGED").is_some() {
        eprintln!("skipped: needs root (ICMPGUARD_SKIP_PRIVILEGED is set)");
        return false;
    }
    panic!(
        "this test needs root (CAP_BPF, CAP_NET_ADMIN): run the suite as root, \
         or set ICMPGUARD_SKIP_PRIVILEGED=1 to skip the privileged tests"
    );
}

/// The egress hook `status` names on this run: "tc_egress" when the suite
/// runs with ICMPGUARD_TEST_KERNEL_LACKS=tcx (the kernels before 6.6, as
/// scripts/test.sh does for a second pass), "tcx_egress" otherwise.
pub fn egress_hook() -> &'static str {
    let lacks = std::env::var("ICMPGUARD_TEST_KERNEL_LACKS").unwrap_or_default();
    if lacks.split(',').any(|w| w.trim() == "tcx") {
        "tc_egress"
    } else {
        "tcx_egress"
    }
}
