#!/bin/sh
# The benchmark: icmpguard beside its peers and floors, measured in the
# same run (datapath cost and where it goes, packet rate on a veth, control
# plane: cold start and its parts, restart, memory, edits; events), printed
# as Markdown tables. BENCHMARKS.md records a full run.
#
#   scripts/bench.sh [--quick] [--only 1,2,3,3e,4] [--out FILE]   (3e: ten million entries, also in a run of every section; not in --only 3)
#
# As root, on a machine with the packages of scripts/debian-packages (and
# netsniff-ng, xdp-tools, nftables, ipset, ethtool). --quick is the CI mode:
# smaller sets, fewer repeats, about a minute after the build; the full run
# takes several minutes. Everything it creates (two
# network namespaces, a bpffs, a private rsyslogd, the daemons, files) lives
# in its own directory and namespaces and is removed at the end, also when
# interrupted.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/bench.sh: needs root (BPF programs, network namespaces, mounts)" >&2
    exit 2
fi

dir=$(mktemp -d /tmp/icmpguard-bench.XXXXXX)

cleanup() {
    trap '' INT TERM
    # Processes started from the run's directory (daemons, rsyslogd,
    # trafgen), one by one.
    for p in /proc/[0-9]*; do
        case "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" in
        *"$dir"*) kill "${p#/proc/}" 2>/dev/null || true ;;
        esac
    done
    if [ -f "$dir/netns" ]; then
        while read -r ns; do
            ip netns del "$ns" 2>/dev/null || true
        done <"$dir/netns"
    fi
    umount "$dir/bpf" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo bench --bench bench -- --dir "$dir" "$@"
