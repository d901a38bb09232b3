#!/bin/sh
# fidbus developer entry point: installs what the build needs (Debian 12),
# builds, and runs the daemon or the tests.
#
#   tools/dev.sh run     set up, build, run fidbusd with the embedded default config
#   tools/dev.sh test    set up, build, run every test: normal build (and the
#                        layer check, tools/check_layers.sh), ASan+UBSan build,
#                        and the concurrency tests under TSan
#   tools/dev.sh deps    only install the Debian packages
#   tools/dev.sh build   only build (preset "default", into build/)
#   tools/dev.sh soak    longer concurrency runs under TSan (unit.flip, and the
#                        zero-loss e2e.soak and e2e.remote_soak for 300 s each)
#   tools/dev.sh hostile-soak
#                        e2e.hostile_soak for 300 s under ASan+UBSan: good
#                        publishers next to garbage, slowloris, never-reads,
#                        floods and connect storms (not in CI; CI runs 5 s)
#   tools/dev.sh fuzz [SECONDS [TARGET...]]
#                        build the libFuzzer targets (clang, ASan+UBSan) and run
#                        each for SECONDS (default 600) on a scratch corpus
set -eu
cd "$(dirname "$0")/.."

PACKAGES="build-essential cmake pkg-config libuv1-dev libcbor-dev libssl-dev check
liburcu-dev libinih-dev libjansson-dev libmicrohttpd-dev python3-prometheus-client scdoc systemd man-db file adduser clang libclang-rt-14-dev
lintian python3-cbor2 python3-pytest python3-setuptools"
JOBS=$(nproc 2>/dev/null || echo 2)

deps() {
    missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "dev.sh: installing:$missing"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
}

# Runs each target named after $1 (all four if none) for $1 seconds, on a
# scratch copy of its corpus (new inputs stay out of the tree). A finding
# stops with its file named and a non-zero exit; tests/fuzz/README.md says
# how to keep it.
fuzz() {
    secs=$1
    shift
    targets=${*:-msg request config state}
    root=$(pwd)
    build fuzz
    work=$(mktemp -d "${TMPDIR:-/tmp}/fidbus-fuzz.XXXXXX")
    for t in $targets; do
        cp -r "tests/fuzz/corpus/$t" "$work/$t"
        cp -r "tests/fuzz/regress/$t/." "$work/$t/" 2>/dev/null || true
        echo "== fuzz_$t for $secs s"
        if ! (cd "$work" && "$root/build-fuzz/tests/fuzz/fuzz_$t" -dict="$root/tests/fuzz/$t.dict" \
            -max_len=8192 -rss_limit_mb=2048 -timeout=30 -max_total_time="$secs" \
            -artifact_prefix="$work/found-$t-" -print_final_stats=1 "$work/$t" \
            >"$work/$t.log" 2>&1); then
            tail -40 "$work/$t.log"
            echo "dev.sh: fuzz_$t found a problem: $(ls "$work"/found-$t-* 2>/dev/null)" >&2
            return 1
        fi
        grep -E '^stat::number_of_executed_units|DONE' "$work/$t.log" | tail -2
    done
    rm -rf "$work"
}

# build PRESET [TARGET...]: every target, or only those named
build() {
    preset=$1
    shift
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset" -j"$JOBS" ${1:+--target "$@"}
}

case "${1:-}" in
deps)
    deps ;;
build)
    deps; build default ;;
run)
    # only what it runs: not the tests, fuzz replays or the bench
    deps; build default fidbusd fidbusctl log count
    exec ./build/daemon/fidbusd --default-config ;;
test)
    deps
    echo "== normal build"
    build default
    echo "== layer check (docs/architecture.md)"
    ./tools/check_layers.sh build
    ctest --preset default -j"$JOBS"
    echo "== ASan+UBSan build"
    build asan
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --preset asan -j"$JOBS"
    echo "== TSan build: concurrency tests"
    build tsan
    TSAN_OPTIONS="halt_on_error=1 suppressions=$(pwd)/tests/tsan.supp" FIDBUS_FLIP_COUNT=2000 \
        ctest --preset tsan -R 'unit.flip|e2e\.'
    echo "== fuzz targets: 20 s each (tools/dev.sh fuzz SECONDS for longer)"
    fuzz 20 ;;
fuzz)
    shift
    secs=${1:-600}
    [ $# -gt 0 ] && shift
    deps; fuzz "$secs" "$@" ;;
soak)
    deps; build tsan
    TSAN_OPTIONS="halt_on_error=1 suppressions=$(pwd)/tests/tsan.supp" FIDBUS_FLIP_COUNT=50000 \
        ctest --preset tsan -R 'unit.flip' --timeout 3600
    # zero loss under change for 5 minutes (e2e.soak; run directly: ctest
    # would stop it at its 300 s timeout)
    TSAN_OPTIONS="halt_on_error=1 suppressions=$(pwd)/tests/tsan.supp" FIDBUS_SOAK_SECONDS=300 \
        FIDBUS_BUILD_DIR="$(pwd)/build-tsan" ./build-tsan/tests/test_e2e_soak
    # remote-function members churning under acked load (e2e.remote_soak)
    TSAN_OPTIONS="halt_on_error=1 suppressions=$(pwd)/tests/tsan.supp" FIDBUS_SOAK_SECONDS=300 \
        FIDBUS_BUILD_DIR="$(pwd)/build-tsan" ./build-tsan/tests/test_e2e_remote_soak ;;
hostile-soak)
    deps; build asan
    # run directly: ctest would stop it at its 300 s timeout
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        FIDBUS_SOAK_SECONDS="${FIDBUS_SOAK_SECONDS:-300}" \
        FIDBUS_BUILD_DIR="$(pwd)/build-asan" ./build-asan/tests/test_e2e_hostile_soak ;;
*)
    echo "usage: tools/dev.sh run|test|deps|build|soak|hostile-soak|fuzz [SECONDS [TARGET...]]" >&2
    exit 2 ;;
esac
