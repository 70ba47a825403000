#!/bin/sh
# The checks of the kernel test tier (see tests/kernels/README), run by
# /init inside a QEMU guest booted on one of Debian's kernels.
#
# Output contract, parsed by scripts/kernels.sh on the host:
#   IGCHECK <name> ok
#   IGCHECK <name> FAIL <short reason>
#   IGCTX <name> | <context line>        (after a FAIL only)
# One IGCHECK line per check, always in the same order; nothing may hang
# (every external command runs under `timeout`).
#
# Busybox provides its own `ip`, `ping` and `nsenter` applets and its shell
# prefers them to PATH, so the real tools are always called by absolute path.

set -u

IP=/usr/sbin/ip
TC=/usr/sbin/tc
PING=/usr/bin/ping
NSENTER=/usr/bin/nsenter
BPFTOOL=/usr/sbin/bpftool
IG=/usr/sbin/icmpguard
IGV=/usr/sbin/icmpguard-variant
DATAPATH=/bin/datapath

H=ign-host
P=ign-peer
DIR=/tmp/ig
CFG=$DIR/icmpguard.toml
PIN=/sys/fs/bpf/icmpguard
# The daemons' runtime directory, as the unit's RuntimeDirectory= gives
# it: where each leaves its restart record for the next.
RUNTIME_DIRECTORY=$DIR/run
export RUNTIME_DIRECTORY

DPID=""        # the running daemon
DLOG=""        # its stderr
DN=0           # daemons started so far
IDS=""         # iface:hook:link:prog seen by status_clean
LINKS=""       # iface:hook:link of the attached hooks seen by status_clean
GEN=""         # generation seen before the upgrade

# ---------------------------------------------------------------- helpers

inh() { timeout 30 "$NSENTER" --net=/run/netns/$H "$@"; }
inp() { timeout 30 "$NSENTER" --net=/run/netns/$P "$@"; }

# Seconds each check took (from the end of the previous one).
TIMES=""
T_LAST=$(cut -d' ' -f1 /proc/uptime)
mark() {
    now=$(cut -d' ' -f1 /proc/uptime)
    TIMES="$TIMES $1=$(awk -v a="$T_LAST" -v b="$now" 'BEGIN { printf "%.1f", b - a }')"
    T_LAST=$now
}

ok() {
    echo "IGCHECK $1 ok"
    mark "$1"
}

# fail NAME REASON [extra context command...]
fail() {
    name=$1
    reason=$(printf '%s' "$2" | tr '\n' ' ' | cut -c1-160)
    shift 2
    echo "IGCHECK $name FAIL $reason"
    context "$@" 2>&1 | cut -c1-300 | sed "s/^/IGCTX $name | /"
    mark "$name"
}

context() {
    if [ $# -gt 0 ]; then
        "$@"
    fi
    if [ -n "$DLOG" ] && [ -f "$DLOG" ]; then
        echo "--- daemon stderr (last 15 lines of $DLOG)"
        tail -n 15 "$DLOG"
    fi
    echo "--- ip link show gb"
    inh "$IP" -d link show gb
    echo "--- tc qdisc show dev gb"
    inh "$TC" qdisc show dev gb
    echo "--- tc filter show dev gb egress"
    inh "$TC" filter show dev gb egress
    echo "--- bpftool net (host ns)"
    inh "$BPFTOOL" net
    echo "--- pins"
    find "$PIN" 2>&1 | head -n 25
}

alive() {
    [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Received replies of a ping, or "err" when ping printed no summary.
received() {
    n=$(sed -n 's/.* \([0-9][0-9]*\) received.*/\1/p' "$1" | head -n 1)
    echo "${n:-err}"
}

# pingc NS [ping args...]: prints the number of replies.
pingc() {
    ns=$1
    shift
    timeout 20 "$NSENTER" --net=/run/netns/"$ns" "$PING" -n -c 3 -W 1 -i 0.2 "$@" >"$DIR/ping.out" 2>&1
    received "$DIR/ping.out"
}

in_echos4() {
    inp cat /proc/net/snmp | awk '$1 == "Icmp:" { if (!c) { for (i = 2; i <= NF; i++) if ($i == "InEchos") c = i; next } print $c; exit }'
}

in_echos6() {
    inp cat /proc/net/snmp6 | awk '$1 == "Icmp6InEchos" { print $2; exit }'
}

# Extra lines of the file write_config writes: top-level keys (before the
# first table) and tables (after [syslog]); empty but for the policy checks.
CFG_TOP=""
CFG_TABLES=""

# write_config BLOCK...: the file, with `block` = the arguments.
write_config() {
    {
        echo 'interfaces = ["gb"]'
        printf 'block = ['
        sep=""
        for a in "$@"; do
            printf '%s"%s"' "$sep" "$a"
            sep=", "
        done
        echo ']'
        [ -z "$CFG_TOP" ] || printf '%s\n' "$CFG_TOP"
        echo "pin_dir = \"$PIN\""
        echo '[syslog]'
        echo "socket = \"$DIR/nosuchsocket\""
        [ -z "$CFG_TABLES" ] || printf '%s\n' "$CFG_TABLES"
    } >"$DIR/icmpguard.toml.new"
    chmod 0644 "$DIR/icmpguard.toml.new"
    mv "$DIR/icmpguard.toml.new" "$CFG"
}

# The first daemon runs as root (it mounts the bpffs, which takes
# CAP_SYS_ADMIN); the later ones with the unit's capabilities only
# (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON), as under systemd, once UNIT_CAPS=yes.
UNIT_CAPS=no
SETPRIV=/usr/bin/setpriv

# in_host_with CAPS CMD...: becomes CMD in the host namespace with a
# bounding set of exactly CAPS (setpriv syntax, e.g. +bpf,+net_admin). It
# execs, so that $! of `in_host_with ... &` is the daemon's pid: call it in
# the background or in a subshell only.
in_host_with() {
    caps=$1
    shift
    exec "$NSENTER" --net=/run/netns/$H "$SETPRIV" --bounding-set=-all,"$caps" --inh-caps=-all -- "$@"
}
UNIT_SET=+bpf,+net_admin,+perfmon
# The unit's LimitMEMLOCK=infinity (kernels before 5.11 charge BPF maps to
# RLIMIT_MEMLOCK, which the daemon cannot raise with the unit's capabilities).
# shellcheck disable=SC3045 # busybox ash has ulimit -l
ulimit -l unlimited

# start_daemon BIN: starts it in the host namespace; returns 0 once it
# logged `started:`, 1 if it exited or did not get there in time.
start_daemon() {
    DN=$((DN + 1))
    DLOG=$DIR/daemon.$DN.log
    if [ "$UNIT_CAPS" = yes ]; then
        in_host_with "$UNIT_SET" "$1" run -c "$CFG" >"$DLOG" 2>&1 &
    else
        "$NSENTER" --net=/run/netns/$H "$1" run -c "$CFG" >"$DLOG" 2>&1 &
    fi
    DPID=$!
    i=0
    while [ $i -lt 600 ]; do
        if grep -q 'started:' "$DLOG"; then
            return 0
        fi
        if ! alive "$DPID"; then
            wait "$DPID"
            DRC=$?
            DPID=""
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
    DRC=timeout
    return 1
}

# stop_daemon [SIGNAL]: stops it and sets DRC to its exit status.
stop_daemon() {
    DRC=none
    [ -n "$DPID" ] || return 1
    kill "-${1:-TERM}" "$DPID" 2>/dev/null
    i=0
    while alive "$DPID" && [ $i -lt 150 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if alive "$DPID"; then
        kill -9 "$DPID" 2>/dev/null
        sleep 0.2
    fi
    wait "$DPID"
    DRC=$?
    DPID=""
    return 0
}

# The daemon's last message (not its hint or the syslog fallback notice).
last_log_line() {
    [ -n "$DLOG" ] || return 0
    line=$(grep '^icmpguard: ' "$DLOG" 2>/dev/null | grep -v 'syslog socket' | tail -n 1)
    [ -n "$line" ] || line=$(grep -v '^[[:space:]]*$' "$DLOG" 2>/dev/null | tail -n 1)
    printf '%s\n' "${line#icmpguard: }"
}

# Lines "IFACE HOOK ATTACHED LINK_ID PROG_ID" from `status --json`
# (pretty-printed: one key a line).
hooks_of() {
    awk '
        function val(s) { sub(/^[^:]*:[[:space:]]*/, "", s); gsub(/[",]/, "", s); return s }
        /"interface":/ { ifc = val($0) }
        /"hook":/ { hook = val($0) }
        /"attached":/ { att = val($0) }
        /"link_id":/ { lid = val($0) }
        /"prog_id":/ { pid = val($0) }
        /^[[:space:]]*}/ { if (ifc != "") print ifc, hook, att, lid, pid; ifc = ""; hook = ""; att = ""; lid = ""; pid = "" }
    ' "$1"
}

generation_of() {
    sed -n 's/^[[:space:]]*"generation":[[:space:]]*\([0-9]*\).*/\1/p' "$1" | head -n 1
}

status_json() {
    inh "$IG" status --json -c "$CFG" >"$1" 2>"$1.err"
}

show_file() {
    echo "--- $1"
    cat "$1"
}

# verifier_log BIN: runs the start that failed once more with libbpf's
# messages on (ICMPGUARD_LIBBPF_DEBUG) and shows the end of the verifier's
# log, so that a refused load can be diagnosed from the console log.
verifier_log() {
    if [ "$UNIT_CAPS" = yes ]; then
        (export ICMPGUARD_LIBBPF_DEBUG=1; in_host_with "$UNIT_SET" timeout 60 "$1" run -c "$CFG") >"$DIR/verifier.log" 2>&1
    else
        ICMPGUARD_LIBBPF_DEBUG=1 timeout 60 "$NSENTER" --net=/run/netns/$H "$1" run -c "$CFG" >"$DIR/verifier.log" 2>&1
    fi
    echo "--- the end of the verifier's log ($DIR/verifier.log)"
    grep -v 'libbpf: .*\(CO-RE\|sec \|map \)' "$DIR/verifier.log" | tail -n 60
}

# ---------------------------------------------------------------- world

mkdir -p "$DIR"
chmod 0755 "$DIR"

"$IP" netns add $H
"$IP" netns add $P
"$IP" link add gb netns $H type veth peer name pe netns $P
for ns in $H $P; do
    "$IP" -n "$ns" link set lo up
    "$NSENTER" --net=/run/netns/"$ns" sysctl -qw net.ipv6.conf.all.keep_addr_on_down=1 2>/dev/null
done
"$IP" -n $H addr add 192.0.2.1/24 dev gb
"$IP" -n $H addr add 2001:db8::1/64 dev gb nodad
"$IP" -n $P addr add 192.0.2.2/24 dev pe
"$IP" -n $P addr add 192.0.2.10/24 dev pe
"$IP" -n $P addr add 2001:db8::2/64 dev pe nodad
"$IP" -n $P addr add 2001:db8::10/64 dev pe nodad
"$IP" -n $H link set gb up
"$IP" -n $P link set pe up

# The world must work before any filter exists, or no result means anything.
w4=$(pingc $H 192.0.2.10)
w6=$(pingc $H 2001:db8::10)
echo "IGINFO world: unfiltered pings to 192.0.2.10: $w4 replies, to 2001:db8::10: $w6 replies"

write_config 192.0.2.10 2001:db8::10
mark world

# ---------------------------------------------------------------- checks

# bpffs_mounted: the daemon mounts a bpffs at /sys/fs/bpf when none is there.
bpffs() { grep -q '^[^ ]* /sys/fs/bpf bpf ' /proc/mounts; }
premounted=no
bpffs && premounted=yes
if start_daemon "$IG"; then
    if [ "$premounted" = yes ]; then
        fail bpffs_mounted "a bpffs was mounted before the daemon started"
    elif ! bpffs; then
        fail bpffs_mounted "daemon started but /sys/fs/bpf is no bpffs" grep bpf /proc/mounts
    elif [ ! -d "$PIN" ]; then
        fail bpffs_mounted "bpffs mounted but pin dir $PIN missing"
    else
        ok bpffs_mounted
    fi
else
    why="daemon exited (rc $DRC): $(last_log_line)"
    if ! bpffs; then
        # Mount it ourselves so that the other checks still say something.
        mount -t bpf bpf /sys/fs/bpf
        fail bpffs_mounted "$why"
        echo "IGINFO bpffs_mounted: the harness mounted /sys/fs/bpf and restarts the daemon"
        start_daemon "$IG" || echo "IGINFO second start failed too (rc $DRC): $(last_log_line)"
    else
        fail bpffs_mounted "$why"
    fi
fi

# status_clean
if [ -z "$DPID" ]; then
    fail status_clean "no daemon running: $(last_log_line)"
else
    inh "$IG" status -c "$CFG" >"$DIR/status.txt" 2>&1
    src=$?
    status_json "$DIR/status.json"
    hooks_of "$DIR/status.json" >"$DIR/hooks.txt"
    ing=$(awk '$1 == "gb" && $2 ~ /^xdp/ && $3 == "true"' "$DIR/hooks.txt" | wc -l)
    egr=$(awk '$1 == "gb" && $2 ~ /egress/ && $3 == "true"' "$DIR/hooks.txt" | wc -l)
    IDS=$(awk '{ print $1 ":" $2 ":" $4 ":" $5 }' "$DIR/hooks.txt" | sort | tr '\n' ' ')
    LINKS=$(awk '$3 == "true" { print $1 ":" $2 ":" $4 }' "$DIR/hooks.txt" | sort | tr '\n' ' ')
    GEN=$(generation_of "$DIR/status.json")
    if [ "$src" != 0 ]; then
        fail status_clean "status exited $src: $(tail -n 1 "$DIR/status.txt")" show_file "$DIR/status.txt"
    elif [ "$ing" != 1 ] || [ "$egr" != 1 ]; then
        fail status_clean "want 1 attached ingress and 1 egress hook on gb, got $ing and $egr" show_file "$DIR/status.json"
    else
        ok status_clean
    fi
fi

# ingress_v4 / ingress_v6: echo from a blocked source never gets an answer.
ingress() {
    name=$1 blocked=$2 allowed=$3 dst=$4
    b=$(pingc $P -I "$blocked" "$dst")
    a=$(pingc $P -I "$allowed" "$dst")
    if [ "$b" != 0 ]; then
        fail "$name" "$b replies to pings from blocked $blocked" show_file "$DIR/ping.out"
    elif [ "$a" = err ] || [ "$a" = 0 ]; then
        fail "$name" "no replies to pings from allowed $allowed" show_file "$DIR/ping.out"
    else
        ok "$name"
    fi
}
ingress ingress_v4 192.0.2.10 192.0.2.2 192.0.2.1
ingress ingress_v6 2001:db8::10 2001:db8::2 2001:db8::1

# egress_v4 / egress_v6: echo to a blocked address never reaches the peer.
egress() {
    name=$1 counter=$2 blocked=$3 allowed=$4
    c0=$($counter)
    b=$(pingc $H "$blocked")
    c1=$($counter)
    a=$(pingc $H "$allowed")
    c2=$($counter)
    if [ -z "$c0" ] || [ -z "$c1" ] || [ -z "$c2" ]; then
        fail "$name" "cannot read the peer's echo counter"
    elif [ "$c1" != "$c0" ]; then
        fail "$name" "$((c1 - c0)) echo requests to blocked $blocked reached the peer ($b replies)"
    elif [ "$b" != 0 ]; then
        fail "$name" "$b replies from blocked $blocked"
    elif [ "$a" = err ] || [ "$a" = 0 ] || [ "$c2" = "$c1" ]; then
        fail "$name" "allowed $allowed: $a replies, peer counted $((c2 - c1)) requests" show_file "$DIR/ping.out"
    else
        ok "$name"
    fi
}
egress egress_v4 in_echos4 192.0.2.10 192.0.2.2
egress egress_v6 in_echos6 2001:db8::10 2001:db8::2

# hot_reload: a saved change is enforced within 2 s (1 s promised).
"$IP" -n $P addr add 192.0.2.3/24 dev pe
before=$(pingc $P -I 192.0.2.3 192.0.2.1)
write_config 192.0.2.10 2001:db8::10 192.0.2.3
sleep 2
after=$(pingc $P -I 192.0.2.3 192.0.2.1)
still=$(pingc $P -I 192.0.2.2 192.0.2.1)
if [ -z "$DPID" ]; then
    fail hot_reload "no daemon running"
elif [ "$before" = 0 ] || [ "$before" = err ]; then
    fail hot_reload "192.0.2.3 got no replies even before it was blocked"
elif [ "$after" != 0 ]; then
    fail hot_reload "$after replies from 192.0.2.3 2 s after it was added"
elif [ "$still" = 0 ] || [ "$still" = err ]; then
    fail hot_reload "allowed 192.0.2.2 got no replies after the reload"
else
    ok hot_reload
fi

# kill9_keeps_filter: the pinned filter outlives its daemon.
if [ -z "$DPID" ]; then
    fail kill9_keeps_filter "no daemon to kill"
else
    stop_daemon KILL
    b=$(pingc $P -I 192.0.2.10 192.0.2.1)
    c0=$(in_echos4)
    e=$(pingc $H 192.0.2.10)
    c1=$(in_echos4)
    if [ "$b" != 0 ]; then
        fail kill9_keeps_filter "$b replies to 192.0.2.10 after kill -9"
    elif [ -z "$c0" ] || [ "$c1" != "$c0" ]; then
        fail kill9_keeps_filter "echo requests to 192.0.2.10 reached the peer after kill -9 ($c0 -> $c1, $e replies)"
    else
        ok kill9_keeps_filter
    fi
fi

# restart_adopts: a new daemon, with the unit's capabilities, adopts the
# pinned filter: the same generation and the same links (their programs
# are swapped in place, so program ids may change; a tc filter has link
# id 0). The file is the one the killed daemon last applied, so it does so
# on the restart record, before reading the block list.
UNIT_CAPS=yes
if ! start_daemon "$IG"; then
    fail restart_adopts "daemon did not become ready (rc $DRC): $(last_log_line)" verifier_log "$IG"
else
    status_json "$DIR/status2.json"
    ids=$(hooks_of "$DIR/status2.json" | awk '$3 == "true" { print $1 ":" $2 ":" $4 }' | sort | tr '\n' ' ')
    gen=$(generation_of "$DIR/status2.json")
    b=$(pingc $P -I 192.0.2.10 192.0.2.1)
    echo "IGINFO restart_adopts: $(grep -o 'adopted pinned filter generation [0-9]* ([0-9]* entries' "$DLOG" | tail -n 1); on the restart record: $(grep -c 'on the restart record' "$DLOG")"
    echo "IGINFO restart_adopts: hook:link:prog before [$IDS] after [$(hooks_of "$DIR/status2.json" | awk '{ print $1 ":" $2 ":" $4 ":" $5 }' | sort | tr '\n' ' ')]"
    if [ -z "$LINKS" ] || [ "$ids" != "$LINKS" ]; then
        fail restart_adopts "attached links changed: before [$LINKS] after [$ids]" show_file "$DIR/status2.json"
    elif [ -z "$gen" ] || [ "$gen" != "$GEN" ]; then
        fail restart_adopts "generation ${GEN:-?} -> ${gen:-?}: not adopted" show_file "$DIR/status2.json"
    elif [ "$b" != 0 ]; then
        fail restart_adopts "$b replies to 192.0.2.10 after the restart"
    elif ! grep -q 'on the restart record' "$DLOG"; then
        fail restart_adopts "not adopted on the restart record: $(grep 'adopted' "$DLOG" | tail -n 1)" show_file "$DLOG"
    else
        ok restart_adopts
    fi
fi

# upgrade_variant: a binary whose maps changed takes over with no gap.
timeout 120 "$NSENTER" --net=/run/netns/$P "$PING" -n -i 0.05 -I 192.0.2.10 192.0.2.1 >"$DIR/pinger.out" 2>&1 &
pinger=$!
sleep 0.3
stop_daemon TERM
rc_old=$DRC
started=yes
start_daemon "$IGV" || started=no
sleep 0.5
kill -INT "$pinger" 2>/dev/null
wait "$pinger"
got=$(received "$DIR/pinger.out")
sent=$(sed -n 's/^\([0-9][0-9]*\) packets transmitted.*/\1/p' "$DIR/pinger.out")
if [ "$started" = yes ]; then
    inh "$IGV" status -c "$CFG" >"$DIR/status3.txt" 2>&1
    src=$?
    status_json "$DIR/status3.json"
    gen=$(generation_of "$DIR/status3.json")
fi
if [ "$rc_old" != 0 ]; then
    fail upgrade_variant "the old daemon exited $rc_old on SIGTERM"
elif [ "$started" = no ]; then
    fail upgrade_variant "the variant did not become ready (rc $DRC): $(last_log_line)"
elif [ "$got" != 0 ]; then
    fail upgrade_variant "$got of ${sent:-?} pings from 192.0.2.10 answered during the upgrade" show_file "$DIR/pinger.out"
elif [ -z "$sent" ] || [ "$sent" -lt 10 ]; then
    fail upgrade_variant "the pinger sent only ${sent:-no} packets" show_file "$DIR/pinger.out"
elif [ "$src" != 0 ]; then
    fail upgrade_variant "status after the upgrade exited $src: $(tail -n 1 "$DIR/status3.txt")" show_file "$DIR/status3.txt"
elif [ -z "$gen" ] || [ "$gen" = "$GEN" ]; then
    fail upgrade_variant "no migration: generation ${GEN:-?} -> ${gen:-?}"
else
    ok upgrade_variant
fi
echo "IGINFO upgrade_variant: $sent sent, $got answered, generation ${GEN:-?} -> ${gen:-?}"
stop_daemon TERM

# unload: everything icmpguard put in the kernel goes away.
inh "$IG" unload -c "$CFG" >"$DIR/unload.txt" 2>&1
urc=$?
left=$(find "$PIN" -mindepth 1 2>/dev/null | head -n 5 | tr '\n' ' ')
xdp=$(inh "$IP" link show gb | grep -c 'xdp')
filt=$(inh "$TC" filter show dev gb egress 2>/dev/null | head -n 3 | tr '\n' ' ')
clsact=$(inh "$TC" qdisc show dev gb | grep -c clsact)
b=$(pingc $P -I 192.0.2.10 192.0.2.1)
if [ "$urc" != 0 ]; then
    fail unload "unload exited $urc: $(tail -n 1 "$DIR/unload.txt")" show_file "$DIR/unload.txt"
elif [ -n "$left" ]; then
    fail unload "left under $PIN: $left"
elif [ "$xdp" != 0 ]; then
    fail unload "XDP still attached to gb"
elif [ -n "$filt" ]; then
    fail unload "egress filter left on gb: $filt"
elif [ "$clsact" != 0 ]; then
    fail unload "clsact qdisc left on gb"
elif [ "$b" = 0 ] || [ "$b" = err ]; then
    fail unload "192.0.2.10 still gets no replies after unload"
else
    ok unload
fi

# without_perfmon: with CAP_BPF and CAP_NET_ADMIN alone, the verifiers of
# these kernels check the programs under Spectre v1 hardening and refuse
# them; the daemon must exit 3 and name CAP_PERFMON (the unit grants it),
# not print the verifier's log. A kernel that loads them anyway is fine.
in_host_with +bpf,+net_admin "$IG" run -c "$CFG" >"$DIR/noperfmon.log" 2>&1 &
npid=$!
i=0
while [ $i -lt 300 ] && alive "$npid" && ! grep -q 'started:' "$DIR/noperfmon.log"; do
    sleep 0.1
    i=$((i + 1))
done
if grep -q 'started:' "$DIR/noperfmon.log"; then
    kill -TERM "$npid" 2>/dev/null
    wait "$npid"
    inh "$IG" unload -c "$CFG" >/dev/null 2>&1
    echo "IGINFO without_perfmon: this kernel loads the programs without CAP_PERFMON"
    ok without_perfmon
else
    wait "$npid"
    nrc=$?
    if [ "$nrc" != 3 ]; then
        fail without_perfmon "exit $nrc, not 3" show_file "$DIR/noperfmon.log"
    elif ! grep -q 'grant CAP_PERFMON' "$DIR/noperfmon.log"; then
        fail without_perfmon "the error does not name CAP_PERFMON" show_file "$DIR/noperfmon.log"
    elif [ "$(wc -l <"$DIR/noperfmon.log")" -gt 12 ]; then
        fail without_perfmon "the error is $(wc -l <"$DIR/noperfmon.log") lines long (a verifier dump?)" show_file "$DIR/noperfmon.log"
    else
        echo "IGINFO without_perfmon: $(grep 'the kernel said' "$DIR/noperfmon.log")"
        ok without_perfmon
    fi
fi

# ---------------------------------------------------------------- policy
# allow, [limit], icmp lists and dry_run, enforced by a daemon with the
# unit's capabilities (UNIT_CAPS=yes since restart_adopts). The first
# policy starts it; each later one is a hot reload, awaited by its log line.

# Reload lines (applied, refused or failed) the daemon has logged.
reloads() {
    grep -c -E '^icmpguard: [a-z]+: reload( refused|:| failed)' "$DLOG" 2>/dev/null
}

# apply_policy TOP TABLES BLOCK...: writes the file (CFG_TOP, CFG_TABLES,
# `block`) and has the daemon enforce it: a start when none runs, else a
# reload. Returns 1 with the reason in WHY if it was not applied.
apply_policy() {
    CFG_TOP=$1
    CFG_TABLES=$2
    shift 2
    WHY=""
    if [ -z "$DPID" ] || ! alive "$DPID"; then
        DPID=""
        write_config "$@"
        CFG_TOP=""
        CFG_TABLES=""
        start_daemon "$IG" && return 0
        WHY="daemon did not become ready (rc $DRC): $(last_log_line)"
        return 1
    fi
    n0=$(reloads)
    write_config "$@"
    CFG_TOP=""
    CFG_TABLES=""
    i=0
    while [ $i -lt 150 ] && [ "$(reloads)" = "$n0" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    line=$(grep -E '^icmpguard: [a-z]+: reload( refused|:| failed)' "$DLOG" | tail -n 1)
    if [ "$(reloads)" = "$n0" ]; then
        WHY="no reload logged 15 s after the file changed"
        return 1
    fi
    case "$line" in
    *"reload: "*) return 0 ;;
    esac
    WHY="${line#icmpguard: }"
    return 1
}

# After apply_policy failed: the verifier's log if no daemon runs (a start
# failed), else nothing more than fail's context.
policy_context() {
    [ -n "$DPID" ] || verifier_log "$IG"
}

# allow: a /24 holding the peer is blocked and one of its addresses allowed
# (IPv6 alike, a /64): the allowed address is answered, its neighbour not;
# the host's own address is inside the blocked prefixes too, so the replies
# pass because their destination is allowed.
if ! apply_policy 'allow = ["192.0.2.2", "2001:db8::2"]' "" 192.0.2.0/24 2001:db8::/64; then
    fail allow "$WHY" policy_context
else
    a4=$(pingc $P -I 192.0.2.2 192.0.2.1)
    a6=$(pingc $P -I 2001:db8::2 2001:db8::1)
    n4=$(pingc $P -I 192.0.2.10 192.0.2.1)
    n6=$(pingc $P -I 2001:db8::10 2001:db8::1)
    if [ "$a4" = err ] || [ "$a4" = 0 ]; then
        fail allow "no replies to allowed 192.0.2.2 inside blocked 192.0.2.0/24"
    elif [ "$a6" = err ] || [ "$a6" = 0 ]; then
        fail allow "no replies to allowed 2001:db8::2 inside blocked 2001:db8::/64"
    elif [ "$n4" != 0 ]; then
        fail allow "$n4 replies to 192.0.2.10 (blocked by 192.0.2.0/24, not allowed)"
    elif [ "$n6" != 0 ]; then
        fail allow "$n6 replies to 2001:db8::10 (blocked by 2001:db8::/64, not allowed)"
    else
        ok allow
    fi
fi

# limit: `[limit] echo = 5, burst = 5`. 40 echo requests at 10 ms from one
# source: the burst and what the rate adds while they run are answered
# (at least 5; at most 5 + 5/s over the burst's duration, and no fewer than
# 15 allowed for); another source at a normal rate meanwhile keeps all its
# replies (a bucket per source).
if ! apply_policy "" '[limit]
echo = 5
burst = 5' 192.0.2.10 2001:db8::10; then
    fail limit "$WHY" policy_context
else
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout 30 "$NSENTER" --net=/run/netns/$P "$PING" -n -q -c 40 -i 0.01 -W 1 -I 192.0.2.2 192.0.2.1 >"$DIR/burst.out" 2>&1 &
    burst=$!
    other=$(pingc $P -I 192.0.2.3 192.0.2.1)
    wait "$burst"
    t1=$(cut -d' ' -f1 /proc/uptime)
    got=$(received "$DIR/burst.out")
    sent=$(sed -n 's/^\([0-9][0-9]*\) packets transmitted.*/\1/p' "$DIR/burst.out")
    most=$(awk -v a="$t0" -v b="$t1" 'BEGIN { m = int(5 + 5 * (b - a)) + 2; print (m < 15 ? 15 : m) }')
    echo "IGINFO limit: $got of ${sent:-?} burst pings answered in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (at most $most allowed for); the other source: $other of 3; $(grep -c 'reason=limit' "$DLOG") reason=limit lines"
    if [ "$got" = err ] || [ "${sent:-0}" != 40 ]; then
        fail limit "the burst pinger did not send 40 requests (${sent:-no summary})" show_file "$DIR/burst.out"
    elif [ "$got" -lt 5 ]; then
        fail limit "only $got of 40 burst pings answered (burst = 5)" show_file "$DIR/burst.out"
    elif [ "$got" -gt "$most" ]; then
        fail limit "$got of 40 burst pings answered: more than $most (echo = 5/s, burst = 5)" show_file "$DIR/burst.out"
    elif [ "$other" != 3 ]; then
        fail limit "the normal-rate source 192.0.2.3 got $other of 3 replies during the burst" show_file "$DIR/ping.out"
    else
        ok limit
    fi
fi

# icmp_list: `icmp = ["timestamp-request"]` is accepted (the reload says
# so), and echo, no longer in the policy, is answered from a blocked source.
if ! apply_policy 'icmp = ["timestamp-request"]' "" 192.0.2.10 2001:db8::10; then
    fail icmp_list "$WHY" policy_context
else
    line=$(grep -E '^icmpguard: [a-z]+: (reload|started): ' "$DLOG" | tail -n 1)
    b4=$(pingc $P -I 192.0.2.10 192.0.2.1)
    b6=$(pingc $P -I 2001:db8::10 2001:db8::1)
    case "$line" in
    *timestamp-request*) named=yes ;;
    *) named=no ;;
    esac
    if [ "$named" = no ]; then
        fail icmp_list "the reload line does not name timestamp-request: ${line#icmpguard: }"
    elif [ "$b4" = err ] || [ "$b4" = 0 ]; then
        fail icmp_list "no echo replies to blocked 192.0.2.10 with icmp = [\"timestamp-request\"]"
    elif [ "$b6" = err ] || [ "$b6" = 0 ]; then
        fail icmp_list "no echo replies to blocked 2001:db8::10 with icmp = [\"timestamp-request\"]"
    else
        ok icmp_list
    fi
fi

# dry_run: a blocked source is answered, and its requests are logged as
# verdict=would-drop (events reach the log asynchronously: awaited).
if ! apply_policy 'dry_run = true' "" 192.0.2.10 2001:db8::10; then
    fail dry_run "$WHY" policy_context
else
    b=$(pingc $P -I 192.0.2.10 192.0.2.1)
    pat='verdict=would-drop dir=in .* src=192\.0\.2\.10 dst=192\.0\.2\.1 rule=192\.0\.2\.10(/32)? reason=block'
    i=0
    while [ $i -lt 50 ] && ! grep -q -E "$pat" "$DLOG"; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ "$b" = err ] || [ "$b" = 0 ]; then
        fail dry_run "no replies to blocked 192.0.2.10 with dry_run = true"
    elif ! grep -q -E "$pat" "$DLOG"; then
        fail dry_run "no verdict=would-drop line for 192.0.2.10 in the daemon's log" sh -c "grep -E 'verdict=|DRY' '$DLOG' | tail -n 8"
    else
        ok dry_run
    fi
fi
# clock_step: an entry of a fragment expires when the clock passes its
# `until`, with no file change (the admin sets the clock forward), and is
# enforced again when the clock is set back before it; real pings each time.
# The guest's clock is its own: the host's is never touched.
wait_log() {
    i=0
    while [ $i -lt 100 ] && ! grep -q -F "$1" "$DLOG"; do
        sleep 0.1
        i=$((i + 1))
    done
    grep -q -F "$1" "$DLOG"
}
now=$(date +%s)
until_ts=$(date -u -d "@$((now + 3600))" +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$DIR/icmpguard.d"
chmod 0755 "$DIR/icmpguard.d"
printf 'block = [{ addr = "192.0.2.10", until = %s, note = "clock" }]\n' "$until_ts" >"$DIR/icmpguard.d/clock.toml"
chmod 0644 "$DIR/icmpguard.d/clock.toml"
if ! apply_policy "" "" 2001:db8::10; then
    fail clock_step "$WHY" policy_context
else
    b0=$(pingc $P -I 192.0.2.10 192.0.2.1)
    date -u -s "@$((now + 7200))" >/dev/null 2>&1
    wait_log "expired: 192.0.2.10 (clock)"
    expired=$?
    b1=$(pingc $P -I 192.0.2.10 192.0.2.1)
    date -u -s "@$((now + 60))" >/dev/null 2>&1
    wait_log "enforced again: 192.0.2.10"
    again=$?
    b2=$(pingc $P -I 192.0.2.10 192.0.2.1)
    date -u -s "@$(($(date +%s) - 60))" >/dev/null 2>&1  # back to about the real time
    if [ "$b0" != 0 ]; then
        fail clock_step "$b0 replies to 192.0.2.10 before its until ($until_ts)"
    elif [ "$expired" != 0 ]; then
        fail clock_step "no 'expired: 192.0.2.10 (clock)' after the clock was set past $until_ts" sh -c "tail -n 8 '$DLOG'"
    elif [ "$b1" = err ] || [ "$b1" = 0 ]; then
        fail clock_step "no replies to 192.0.2.10 once expired"
    elif [ "$again" != 0 ]; then
        fail clock_step "no 'enforced again: 192.0.2.10' after the clock was set back" sh -c "tail -n 8 '$DLOG'"
    elif [ "$b2" != 0 ]; then
        fail clock_step "$b2 replies to 192.0.2.10 after the clock was set back before its until"
    else
        ok clock_step
    fi
fi
rm -rf "$DIR/icmpguard.d"
stop_daemon TERM
inh "$IG" unload -c "$CFG" >/dev/null 2>&1

# datapath: the BPF_PROG_TEST_RUN suite against this kernel.
timeout 180 "$DATAPATH" --test-threads=1 --show-output >"$DIR/datapath.out" 2>&1
drc=$?
# How long the two-CPU flood took here (the limiter test allows its refill).
grep -m 1 '^two CPUs:' "$DIR/datapath.out" | sed 's/^/IGINFO /'
# And what two CPUs dropping for one rule counted, in own and shared slots.
grep '^two CPUs, ' "$DIR/datapath.out" | sed 's/^/IGINFO /'
if [ "$drc" = 0 ]; then
    ok datapath
else
    summary=$(grep '^test result:' "$DIR/datapath.out" | tail -n 1)
    fail datapath "exit $drc: ${summary:-$(tail -n 1 "$DIR/datapath.out")}" \
        sh -c "grep -o -E '(invalid|unknown) func [^\\\\\"]*' '$DIR/datapath.out' | sort -u; grep -E '^test .*FAILED' '$DIR/datapath.out' | head -n 20; grep -m 1 -A 1 'panicked' '$DIR/datapath.out'"
fi
echo "IGINFO seconds:$TIMES"
