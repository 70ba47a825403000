#!/bin/sh
# icmpguard in two minutes, on a throwaway pair of network namespaces.
#
# Installs the few Debian packages it lacks (to build icmpguard and to run
# ip, ping and nsenter; not the test suite's), builds icmpguard, and runs the
# daemon with the shipped example config (etc/icmpguard.toml) guarding one
# end of a veth pair. A peer pings from a blocked address and from an
# allowed one; then the config is edited live. Nothing outside the demo's
# namespaces, its private bpffs and /run/icmpguard-demo is touched, and all
# of it is removed at the end. Run as root from the repository.
set -eu
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces and loads BPF)" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Only what the demo itself needs; the test suite's tools are in
# scripts/debian-packages, which .ci/run installs.
build="clang libelf-dev zlib1g-dev pkg-config make gcc" # build.rs, libbpf
run="iproute2 iputils-ping util-linux mount"             # ip, ping, nsenter, mount
missing=""
for p in $build $run; do
    # shellcheck disable=SC2016
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi
command -v cargo >/dev/null || {
    echo "demo: cargo not found; install Rust from https://rustup.rs (Debian's cargo is too old)" >&2
    exit 1
}

say "building"
cargo build --release --quiet
# Where cargo put it: target/, or CARGO_TARGET_DIR (relative to here).
BIN=${CARGO_TARGET_DIR:-target}/release/icmpguard
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac

RUN=/run/icmpguard-demo
HOST=icmpguard-demo-host
PEER=icmpguard-demo-peer
cleanup() {
    set +e
    [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    [ -d "$RUN/bpf/icmpguard" ] && nsenter --net=/run/netns/$HOST "$BIN" unload --pin-dir "$RUN/bpf/icmpguard" >/dev/null
    umount "$RUN/bpf" 2>/dev/null
    ip netns del $HOST 2>/dev/null
    ip netns del $PEER 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM
cleanup

say "two namespaces: $HOST (guarded, 192.0.2.1) <-> $PEER (192.0.2.10 and 192.0.2.20)"
mkdir -p "$RUN/bpf" && chmod 700 "$RUN"
mount -t bpf bpf "$RUN/bpf"
ip netns add $HOST
ip netns add $PEER
ip link add demo0 netns $HOST type veth peer name demo1 netns $PEER
ip -n $HOST addr add 192.0.2.1/24 dev demo0
ip -n $PEER addr add 192.0.2.10/24 dev demo1
ip -n $PEER addr add 192.0.2.20/24 dev demo1
ip -n $HOST link set demo0 up
ip -n $PEER link set demo1 up

say "the shipped example config, guarding demo0 (pins and log kept private)"
sed -e 's/^interfaces = \[\]/interfaces = ["demo0"]/' \
    -e "s|^#pin_dir = .*|pin_dir = \"$RUN/bpf/icmpguard\"|" \
    -e "s|^#\\[syslog\\]|[syslog]|" \
    -e "s|^#socket = .*|socket = \"$RUN/no-syslog-here\"|" \
    etc/icmpguard.toml >"$RUN/icmpguard.toml"
chmod 644 "$RUN/icmpguard.toml"
grep -v '^#' "$RUN/icmpguard.toml" | grep -v '^$'
"$BIN" check -c "$RUN/icmpguard.toml"

say "starting the daemon (events go to stderr, as there is no syslog socket here)"
nsenter --net=/run/netns/$HOST "$BIN" run -c "$RUN/icmpguard.toml" 2>"$RUN/daemon.log" &
DAEMON=$!
i=0
until nsenter --net=/run/netns/$HOST "$BIN" status -c "$RUN/icmpguard.toml" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat "$RUN/daemon.log"; exit 1; }
    sleep 0.1
done

say "ping from 192.0.2.10 (blocked): no replies"
ip netns exec $PEER ping -c 3 -i 0.2 -W 1 -I 192.0.2.10 192.0.2.1 || true
say "ping from 192.0.2.20 (allowed): replies"
ip netns exec $PEER ping -c 3 -i 0.2 -W 1 -I 192.0.2.20 192.0.2.1

say "live edit: add 192.0.2.20 to the blocklist and save (no signal, no restart)"
sed -i 's|^  "192.0.2.10",|  "192.0.2.10",\n  "192.0.2.20",|' "$RUN/icmpguard.toml"
sleep 1
ip netns exec $PEER ping -c 3 -i 0.2 -W 1 -I 192.0.2.20 192.0.2.1 || true

say "icmpguard status"
nsenter --net=/run/netns/$HOST "$BIN" status -c "$RUN/icmpguard.toml"

say "what the daemon logged (IPv4 lines; neighbour discovery and MLD omitted)"
grep -v -e unavailable -e 'proto=icmpv6' "$RUN/daemon.log" | sed 's/^/  /'
say "done; cleaning up"
