#!/bin/sh
# Runs the whole test suite: formatting, lints, unit tests, CLI tests
# through the built binary, and the privileged tiers (BPF_PROG_TEST_RUN on
# crafted frames, end-to-end tests with real packets in network namespaces).
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

# The benchmark in its quick mode, so that it cannot rot (it asserts no timing).
if [ -z "${ICMPGUARD_SKIP_PRIVILEGED:-}" ]; then
    scripts/bench.sh --quick
fi
