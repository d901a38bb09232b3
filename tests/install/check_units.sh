#!/bin/sh
# install.units: the systemd units as this tree installs them
# (BUILD_DIR/packaging/*.service|socket) pass `systemd-analyze verify` with
# no message at all, name their sockets "bus" and "control", and the
# service's `systemd-analyze security --offline=true` exposure is at most
# 1.5 (the score is printed). ExecStart is pointed at the tree's fidbusd,
# since verify wants an executable there. Exit 77 (skipped) without
# systemd-analyze.
# usage: check_units.sh BUILD_DIR
set -eu
build=$1
fail() { echo "install.units: $*" >&2; exit 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "install.units: SKIPPED: systemd-analyze not found (apt-get install systemd)"
    exit 77
fi
tmp=$(mktemp -d /tmp/fidbus-units.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for u in fidbusd.service fidbusd.socket fidbusd-control.socket; do
    [ -f "$build/packaging/$u" ] || fail "no $build/packaging/$u"
    sed "s|^ExecStart=[^ ]*/fidbusd |ExecStart=$build/daemon/fidbusd |" \
        "$build/packaging/$u" > "$tmp/$u"
done
grep -q "^ExecStart=$build/daemon/fidbusd " "$tmp/fidbusd.service" ||
    fail "fidbusd.service has no ExecStart=.../fidbusd line"
grep -qx 'FileDescriptorName=bus' "$tmp/fidbusd.socket" || fail "fidbusd.socket is not named bus"
grep -qx 'FileDescriptorName=control' "$tmp/fidbusd-control.socket" ||
    fail "fidbusd-control.socket is not named control"

if ! out=$(cd "$tmp" && systemd-analyze verify --man=no fidbusd.service fidbusd.socket \
    fidbusd-control.socket 2>&1) || [ -n "$out" ]; then
    fail "systemd-analyze verify: $out"
fi

out=$(systemd-analyze security --offline=true "$tmp/fidbusd.service" 2>&1) ||
    fail "systemd-analyze security failed: $out"
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for fidbusd.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no exposure score in: $out"
awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }' ||
    fail "exposure $score is above 1.5: $(printf '%s\n' "$out" | grep '✗')"
echo "install.units: OK (verify clean; systemd-analyze security exposure $score)"
