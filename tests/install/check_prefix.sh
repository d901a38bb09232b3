#!/bin/sh
# install.prefix: `cmake --install BUILD --prefix P` of this (normal, not
# /usr) tree gives a tree that runs where it is, as README's Install says:
#   - every installed program and plugin resolves its libraries without
#     LD_LIBRARY_PATH;
#   - the installed config names P's plugins, and the installed service
#     unit P's fidbusd and config;
#   - `FIDBUS_RUNTIME_DIR=DIR P/bin/fidbusd --default-config`, with no HOME
#     and no LD_LIBRARY_PATH, serves DIR/bus.sock and loads the plugins
#     installed under P (not the build tree's, nor those of the prefix the
#     tree was configured for), keeps its state in DIR/state, and the
#     installed fidbusctl publishes to it;
#   - a C program (README's client example) built against P's static
#     libfidbus.a (pkg-config --static, then the CMake package's
#     fidbus::static) needs no libfidbus.so and publishes too;
#   - its start-up hint names the installed fidbusctl; stopped with SIGTERM,
#     the count plugin reports every event;
#   - the quick start's state is per checkout: with only XDG_RUNTIME_DIR
#     set (the quick start's case), the build tree's fidbusd runs, takes a
#     runtime change (generation 2) and stops; the installed fidbusd (another
#     "checkout") then starts at generation 1 with no word about a state
#     file, and the build tree's again finds its own state (its route).
# usage: check_prefix.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d /tmp/fidbus-prefix.XXXXXX)
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { echo "install.prefix: $*" >&2; exit 1; }
. "$(dirname "$0")/lib.sh"

P=$(cd "$tmp" && pwd -P)/prefix
cmake --install "$build" --prefix "$P" >"$tmp/log" 2>&1 || fail "cmake --install: $(cat "$tmp/log")"
[ -x "$P/bin/fidbusd" ] && [ -x "$P/bin/fidbusctl" ] || fail "fidbusd or fidbusctl not installed"
pc=$(find "$P" -name fidbus.pc | head -n1)
[ -n "$pc" ] || fail "no fidbus.pc installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(cd "$(pkg-config --variable=libdir fidbus)" && pwd -P)
plugindir=$(cd "$(pkg-config --variable=plugindir fidbus)" && pwd -P)
[ -f "$libdir/libfidbus.a" ] || fail "libfidbus.a not installed in $libdir"
[ -f "$plugindir/log.so" ] && [ -f "$plugindir/count.so" ] || fail "plugins not in $plugindir"

# ---- every installed ELF file finds its libraries by itself
unset LD_LIBRARY_PATH
for elf in $(find "$P" -type f \( -perm -u+x -o -name '*.so*' \)); do
    file -b "$elf" | grep -q ELF || continue
    if ldd "$elf" | grep -q 'not found'; then
        fail "$elf: $(ldd "$elf" | grep 'not found')"
    fi
done

# ---- the installed config and unit name P's paths
conf=$P/etc/fidbus/fidbusd.conf
[ -f "$conf" ] || fail "no $conf"
for p in $(sed -n 's/^path = \([^ ;]*\).*/\1/p' "$conf"); do
    case $p in
    "$plugindir"/*) [ -f "$p" ] || fail "installed config names $p, which is not installed" ;;
    *) fail "installed config names $p, not a plugin under $plugindir" ;;
    esac
done
unit=$P/lib/systemd/system/fidbusd.service
grep -qx "ExecStart=$P/bin/fidbusd -c $conf" "$unit" ||
    fail "$unit does not run $P/bin/fidbusd -c $conf: $(grep ExecStart "$unit")"
"$P/bin/fidbusd" --check-config -c "$conf" >"$tmp/log" 2>&1 ||
    fail "installed config is invalid: $(cat "$tmp/log")"

# ---- the installed daemon, quick-start config, private runtime dir
run=$tmp/run
mkdir -m 0700 "$run"
env -i PATH=/usr/bin:/bin FIDBUS_RUNTIME_DIR="$run" "$P/bin/fidbusd" --default-config \
    >"$tmp/out" 2>"$tmp/err" &
pid=$!
ctl() { env -i PATH=/usr/bin:/bin FIDBUS_RUNTIME_DIR="$run" "$P/bin/fidbusctl" "$@"; }
# ready when the control socket answers (20 s bound: a loaded CI machine)
n=0
until ctl status >"$tmp/status" 2>&1; do
    kill -0 "$pid" 2>/dev/null || { pid=""; fail "fidbusd exited: $(cat "$tmp/err")"; }
    n=$((n + 1))
    [ $n -lt 200 ] || fail "fidbusd not ready after 20 s: $(cat "$tmp/err")"
    sleep 0.1
done
[ -S "$run/bus.sock" ] || fail "no $run/bus.sock"
[ -d "$run/state" ] || fail "state not kept in $run/state: $(ls "$run")"
ctl --json plugin list >"$tmp/plugins" || fail "plugin list failed"
grep -q "$plugindir/log.so" "$tmp/plugins" ||
    fail "the plugins loaded are not those under $plugindir: $(cat "$tmp/plugins")"
ctl publish prefix.hello --data-json '{"hello": "prefix"}' --ack >"$tmp/ack" 2>&1 ||
    fail "installed fidbusctl publish: $(cat "$tmp/ack")"
grep -q '^ok: 2 handlers' "$tmp/ack" || fail "publish: $(cat "$tmp/ack")"

# ---- a program linked against the installed libfidbus.a
readme_block "$src/README.md" example-client "$tmp/publish.c"
# -l:libfidbus.a: the static one although libfidbus.so is next to it
cc -Wall -Wextra -Werror "$tmp/publish.c" $(pkg-config --cflags fidbus) \
    $(pkg-config --static --libs fidbus | sed 's/-lfidbus\b/-l:libfidbus.a/') \
    -o "$tmp/publish-static" 2>"$tmp/log" || fail "static link (pkg-config): $(cat "$tmp/log")"
cmake_project "$tmp/proj" "$tmp/publish.c" fidbus::static
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$P" >"$tmp/log" 2>&1 ||
    fail "CMake package: $(cat "$tmp/log")"
cmake --build "$tmp/proj/build" >"$tmp/log" 2>&1 || fail "static link (CMake): $(cat "$tmp/log")"
for exe in "$tmp/publish-static" "$tmp/proj/build/publish"; do
    if readelf -d "$exe" | grep -q 'NEEDED.*libfidbus'; then
        fail "$exe links libfidbus.so, not libfidbus.a"
    fi
    env -i PATH=/usr/bin:/bin "$exe" "unix:$run/bus.sock" >"$tmp/ack" 2>&1 ||
        fail "$exe: $(cat "$tmp/ack")"
    grep -q '^order.paid: 2 handlers' "$tmp/ack" || fail "$exe: $(cat "$tmp/ack")"
done

# ---- stop: every event counted (1 + 2 x 101)
kill -TERM "$pid"
st=0
wait "$pid" || st=$?
pid=""
[ "$st" = 0 ] || fail "fidbusd exited $st on SIGTERM: $(cat "$tmp/err")"
grep -q 'count: 203 events' "$tmp/err" || fail "count did not report 203 events: $(cat "$tmp/err")"
grep -qF "  $P/bin/fidbusctl --bus unix:$run/bus.sock publish demo.hello" "$tmp/err" ||
    fail "the start-up hint does not name the installed fidbusctl: $(cat "$tmp/err")"
[ ! -e "$run/bus.sock" ] || fail "bus.sock left behind"
# ---- the quick-start state per checkout (one user, one XDG_RUNTIME_DIR)
xdg=$tmp/xdg
mkdir -m 0700 "$xdg"
qs() { # FIDBUSD ERRFILE: starts it, waits until ready
    env -i PATH=/usr/bin:/bin XDG_RUNTIME_DIR="$xdg" "$1" --default-config >/dev/null 2>"$2" &
    pid=$!
    n=0
    until xctl status >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { pid=""; fail "$1 exited: $(cat "$2")"; }
        n=$((n + 1))
        [ $n -lt 200 ] || fail "$1 not ready after 20 s: $(cat "$2")"
        sleep 0.1
    done
}
xctl() { env -i PATH=/usr/bin:/bin XDG_RUNTIME_DIR="$xdg" "$P/bin/fidbusctl" "$@"; }
qs_stop() {
    kill -TERM "$pid"
    wait "$pid" || fail "fidbusd exited $? on SIGTERM"
    pid=""
}
gen() { xctl --json status | sed -n 's/.*"generation":\([0-9]*\).*/\1/p'; }
qs "$build/daemon/fidbusd" "$tmp/qs1.err"
xctl route add extra demo.extra --to fidbus.count >/dev/null || fail "route add failed"
[ "$(gen)" = 2 ] || fail "build tree's quick start: generation $(gen) after one change, not 2"
qs_stop
qs "$P/bin/fidbusd" "$tmp/qs2.err"
g=$(gen)
qs_stop
[ "$g" = 1 ] || fail "a second checkout's first quick start is at generation $g, not 1: $(cat "$tmp/qs2.err")"
if grep -i 'state' "$tmp/qs2.err"; then
    fail "a second checkout's first quick start speaks of a state file (above)"
fi
qs "$build/daemon/fidbusd" "$tmp/qs3.err"
xctl route list >"$tmp/routes" || fail "route list failed"
qs_stop
grep -q extra "$tmp/routes" ||
    fail "the build tree's quick start lost its own state (no route extra): $(cat "$tmp/routes")"
echo "install.prefix: OK ($P)"
