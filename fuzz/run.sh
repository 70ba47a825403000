#!/bin/sh
# Runs the cargo-fuzz targets of icmpguard on the stable toolchain.
#
#   fuzz/run.sh [--quick | --runs N | --time SECONDS] [--no-asan] [TARGET...]
#
#   --quick        each target for 30 seconds (a smoke run)
#   --runs N       each target for N executions (default: 10000000)
#   --time S       each target for S seconds
#   --no-asan      without AddressSanitizer: plain stable rustc, about 4x
#                  faster; the code fuzzed is safe Rust but for one
#                  read_unaligned, so ASan is the default for long runs
#   TARGET...      config_parse, event_decode (default: both)
#
# cargo-fuzz asks for nightly only to pass -Zsanitizer=address; the stable
# toolchain accepts it with RUSTC_BOOTSTRAP=1, set here for that one build.
# With --no-asan nothing unstable is used. Needs `cargo install cargo-fuzz`
# and a C++ compiler (libFuzzer is built from source).
#
# Each target starts from the checked-in seeds (fuzz/seeds/TARGET) and the
# corpus of earlier runs (fuzz/corpus/TARGET, not checked in). A crash stops
# the run with status 1 and leaves its input in fuzz/artifacts/TARGET/; add
# it to fuzz/regressions/TARGET/ so that tests/fuzz_regressions.rs replays
# it on every `cargo test`.
set -eu
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

limit="-runs=10000000"
sanitizer=address
targets=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) limit="-max_total_time=30" ;;
    --runs) limit="-runs=$2"; shift ;;
    --time) limit="-max_total_time=$2"; shift ;;
    --no-asan) sanitizer=none ;;
    -h|--help) sed -n '2,/^set -eu/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets="$targets $1" ;;
    esac
    shift
done
[ -n "$targets" ] || targets="config_parse event_decode"
bootstrap=""
[ "$sanitizer" = none ] || bootstrap="RUSTC_BOOTSTRAP=1"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is missing; run \`cargo install cargo-fuzz\`" >&2
    exit 2
fi

for t in $targets; do
    case "$t" in
    config_parse) extra="-dict=fuzz/config.dict" ;;
    event_decode) extra="" ;;
    *) echo "fuzz/run.sh: unknown target $t (config_parse, event_decode)" >&2; exit 2 ;;
    esac
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz/run.sh: $t ($limit, sanitizer $sanitizer)" >&2
    # shellcheck disable=SC2086 # $bootstrap and $extra are one word or none
    env $bootstrap cargo fuzz run --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        $limit $extra -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 || {
        echo "fuzz/run.sh: $t stopped early; a crash leaves its input in fuzz/artifacts/$t/" >&2
        exit 1
    }
done
