#!/bin/sh
# Builds fidbus optimised (Release, no tests) in its own build dir and runs
# `fidbus-bench all`: the issue's figures plus a summary table. First, the
# route lookup micro-benchmark (fidbus-bench-routes) prints its ns/lookup
# figures on stderr, so stdout stays fidbus-bench's alone (--json).
#
#   bench/run.sh                    # all figures, throughput median of 3
#   bench/run.sh --events 5000000   # any fidbus-bench option is passed on
#   BUILD_DIR=/tmp/b JOBS=4 bench/run.sh --json > figures.json
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$src/build-bench}

cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DFIDBUS_BUILD_TESTS=OFF -DFIDBUS_BUILD_BENCH=ON >/dev/null
cmake --build "$build" --target fidbusd count log fidbus-bench fidbus-bench-routes -j"${JOBS:-2}" >/dev/null

"$build/bench/fidbus-bench-routes" >&2
FIDBUS_BUILD_DIR=$build exec "$build/bench/fidbus-bench" "$@" all
