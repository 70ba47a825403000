#!/bin/sh
# Runs the whole test suite: formatting, lints, unit tests, CLI tests
# through the built binary, and the privileged tiers (BPF_PROG_TEST_RUN on
# crafted frames, end-to-end tests with real packets in network namespaces),
# again on the older kernel paths, then the kernel tier (Debian's kernels
# under QEMU; ICMPGUARD_SKIP_KERNELS=1 skips it).
# Run as root on a machine with the packages of scripts/debian-packages.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] && [ -z "${ICMPGUARD_SKIP_PRIVILEGED:-}" ]; then
    echo "scripts/test.sh: the privileged tests need root (or set ICMPGUARD_SKIP_PRIVILEGED=1)" >&2
    exit 2
fi

# tests/package.rs builds the Debian package with cargo-deb.
command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets

if [ -z "${ICMPGUARD_SKIP_PRIVILEGED:-}" ]; then
    # The older kernel paths, on this kernel: the datapath without
    # bpf_xdp_load_bytes and BPF atomics (before 5.12) and egress through
    # tc instead of tcx (before 6.6), as the daemon takes them when its
    # probe says so; then the datapath of 5.12 to 5.17 (atomics, no
    # bpf_xdp_load_bytes).
    ICMPGUARD_TEST_KERNEL_LACKS=xdp_load_bytes,atomics,tcx cargo test \
        --test datapath --test differential --test e2e_filter --test e2e_lifecycle \
        --test e2e_upgrade --test e2e_security --test e2e_policy
    ICMPGUARD_TEST_KERNEL_LACKS=xdp_load_bytes cargo test --test datapath --test differential --test e2e_policy
    # And on the real kernels: Debian's 5.10, 6.1 and 6.12 under QEMU.
    if [ -z "${ICMPGUARD_SKIP_KERNELS:-}" ]; then
        scripts/kernels.sh --verbose
    fi
fi

# The benchmark in its quick mode, so that it cannot rot (it asserts no timing).
if [ -z "${ICMPGUARD_SKIP_PRIVILEGED:-}" ]; then
    scripts/bench.sh --quick
fi
