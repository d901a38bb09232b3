#!/bin/sh
# install.man: the man pages built from man/*.scd render with
# `man --warnings` without a single warning, and each has its NAME section.
# Exit 77 (skipped) when scdoc was not found at configure time (no pages
# built) or man is not installed.
# usage: check_man.sh BUILD_DIR
set -eu
build=$1
fail() { echo "install.man: $*" >&2; exit 1; }

if ! command -v man >/dev/null 2>&1; then
    echo "install.man: SKIPPED: man not found (apt-get install man-db)"
    exit 77
fi
if [ ! -d "$build/packaging/man" ]; then
    echo "install.man: SKIPPED: no man pages built (scdoc was not found at configure time)"
    exit 77
fi
for page in fidbusd.8 fidbusctl.1 fidbus-serve.1 fidbusd.conf.5 fidbus_client.3 fidbus-plugin.7; do
    f=$build/packaging/man/$page
    [ -s "$f" ] && [ -s "$f.gz" ] || fail "$f (and .gz) not built"
    warn=$(MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null) || fail "man -l $f failed: $warn"
    [ -z "$warn" ] || fail "$page: $warn"
    MANWIDTH=80 man -l "$f" 2>/dev/null | grep -q "^NAME" || fail "$page has no NAME section"
done
echo "install.man: OK"
