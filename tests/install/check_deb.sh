#!/bin/sh
# install.deb: builds the Debian package from a scratch tree configured for
# /usr (tests and bench off), then checks it:
#   - `dpkg-deb -c` lists the daemon, fidbusctl, the library with headers,
#     pkg-config and CMake files, the plugins, the config, the units, the man
#     pages and the completion, in the Debian places, and nothing under
#     /usr/local or /usr/etc;
#   - `dpkg-deb -f Depends` names the package of every library the binaries
#     link (dpkg-shlibdeps) and adduser; the conffile and the maintainer
#     scripts are there;
#   - extracted: the packaged config passes --check-config, its plugin paths
#     exist in the package, the man pages render without warnings;
#   - installed for real with `dpkg -i` when running as root with a usable
#     dpkg and no fidbus already installed (CI: a fresh machine): the fidbus
#     system user and group exist, the installed config is valid and the
#     installed units pass `systemd-analyze verify`; then `dpkg -r` removes
#     the files but keeps the (edited) conffile and the user, and
#     `dpkg --purge` removes the conffile, /etc/fidbus and /var/lib/fidbus
#     and keeps the user (Debian keeps system users; see packaging/deb/postrm).
#     Otherwise the real install is skipped with the reason.
# Nothing is started: no socket is bound, /run/fidbus is not touched. The
# scratch tree and, when installed, the package are removed even on failure.
# usage: check_deb.sh SOURCE_DIR MULTIARCH
set -eu
src=$1
ma=$2
tmp=$(mktemp -d /tmp/fidbus-deb.XXXXXX)
installed=0
cleanup() {
    if [ "$installed" = 1 ]; then
        dpkg --purge fidbus >/dev/null 2>&1 || echo "install.deb: cleanup: dpkg --purge fidbus failed" >&2
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { echo "install.deb: $*" >&2; exit 1; }

for t in cpack dpkg-deb dpkg-shlibdeps; do
    command -v $t >/dev/null 2>&1 || { echo "install.deb: SKIPPED: $t not found (apt-get install dpkg-dev cmake)"; exit 77; }
done

# ---- build
cmake -S "$src" -B "$tmp/build" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFIDBUS_BUILD_TESTS=OFF -DFIDBUS_BUILD_BENCH=OFF >"$tmp/log" 2>&1 || fail "configure: $(cat "$tmp/log")"
cmake --build "$tmp/build" -j2 >"$tmp/log" 2>&1 || fail "build: $(tail -n 30 "$tmp/log")"
(cd "$tmp/build" && cpack -G DEB) >"$tmp/log" 2>&1 || fail "cpack: $(cat "$tmp/log")"
deb=$(ls "$tmp"/build/fidbus_*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || fail "cpack made no fidbus_*.deb: $(cat "$tmp/log")"
man=0
[ -d "$tmp/build/packaging/man" ] && man=1

# ---- contents
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' > "$tmp/files"
L=/usr/lib/$ma
expect="/usr/bin/fidbusd /usr/bin/fidbusctl $L/libfidbus.so.0 /usr/include/fidbus/client.h
    /usr/include/fidbus/plugin.h $L/pkgconfig/fidbus.pc $L/cmake/fidbus/fidbusConfig.cmake
    $L/fidbus/plugins/log.so $L/fidbus/plugins/count.so /etc/fidbus/fidbusd.conf
    /lib/systemd/system/fidbusd.service /lib/systemd/system/fidbusd.socket
    /lib/systemd/system/fidbusd-control.socket /usr/share/bash-completion/completions/fidbusctl
    /usr/share/doc/fidbus/README.md"
[ "$man" = 1 ] && expect="$expect /usr/share/man/man8/fidbusd.8.gz
    /usr/share/man/man1/fidbusctl.1.gz /usr/share/man/man5/fidbusd.conf.5.gz"
for f in $expect; do
    grep -qx "$f" "$tmp/files" || fail "$f not in the package: $(cat "$tmp/files")"
done
if grep -E '^/usr/(local|etc)/' "$tmp/files"; then
    fail "files outside the Debian layout (above)"
fi

# ---- control
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/fidbus/fidbusd.conf "$tmp/control/conffiles" || fail "no conffiles entry"
for s in postinst prerm postrm; do
    [ -x "$tmp/control/$s" ] || fail "maintainer script $s missing or not executable"
    sh -n "$tmp/control/$s" || fail "$s: syntax error"
done
depends=$(dpkg-deb -f "$deb" Depends)
echo "install.deb: Depends: $depends"
# The package of every library a packaged ELF file links. dpkg may know a
# file by its /lib or its /usr/lib name (merged /usr).
owner() {
    for p in "$1" "/usr$1" "${1#/usr}"; do
        o=$(dpkg -S "$p" 2>/dev/null | head -n1 | sed 's/:.*//')
        [ -n "$o" ] && echo "$o" && return 0
    done
    return 1
}
dpkg-deb -x "$deb" "$tmp/root"
for elf in "$tmp/root/usr/bin/fidbusd" "$tmp/root/usr/bin/fidbusctl" \
    "$tmp/root$L/fidbus/plugins/log.so" "$tmp/root$L/libfidbus.so.0"; do
    for lib in $(ldd "$elf" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'); do
        pkg=$(owner "$lib") || fail "no package owns $lib (linked by $elf)"
        printf '%s\n' "$depends" | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -qx "$pkg" ||
            fail "Depends lacks $pkg (for $lib, linked by ${elf#$tmp/root})"
    done
done
printf '%s\n' "$depends" | grep -q 'adduser' || fail "Depends lacks adduser"

# ---- the extracted package
"$tmp/root/usr/bin/fidbusd" --check-config -c "$tmp/root/etc/fidbus/fidbusd.conf" >"$tmp/log" 2>&1 ||
    fail "packaged config is invalid: $(cat "$tmp/log")"
for p in $(sed -n 's/^path = \([^ ;]*\).*/\1/p' "$tmp/root/etc/fidbus/fidbusd.conf"); do
    [ -f "$tmp/root$p" ] || fail "packaged config names $p, which is not in the package"
done
grep -q '^group = fidbus' "$tmp/root/etc/fidbus/fidbusd.conf" ||
    fail "packaged config does not open the control socket to the fidbus group"
if [ "$man" = 1 ] && command -v man >/dev/null 2>&1; then
    for page in man8/fidbusd.8 man1/fidbusctl.1 man5/fidbusd.conf.5; do
        warn=$(MANWIDTH=80 man --warnings -l "$tmp/root/usr/share/man/$page.gz" 2>&1 >/dev/null)
        [ -z "$warn" ] || fail "$page: $warn"
    done
fi

# ---- installed for real
why=""
if [ "$(id -u)" != 0 ]; then
    why="not root"
elif ! command -v dpkg >/dev/null 2>&1 || ! dpkg --audit >/dev/null 2>&1; then
    why="dpkg not usable"
elif dpkg-query -W -f='${Status}' fidbus 2>/dev/null | grep -q installed; then
    why="a fidbus package is already installed"
elif [ -e /usr/bin/fidbusd ] || [ -e /etc/fidbus ]; then
    why="/usr/bin/fidbusd or /etc/fidbus already exists"
elif [ -n "${FIDBUS_DEB_NO_INSTALL:-}" ]; then
    why="FIDBUS_DEB_NO_INSTALL is set"
fi
if [ -n "$why" ]; then
    echo "install.deb: OK ($(basename "$deb") checked; dpkg -i skipped: $why)"
    exit 0
fi

# dpkg takes a lock; another apt/dpkg run may hold it for a while
dpkg_retry() {
    n=0
    while ! dpkg "$@" >"$tmp/log" 2>&1; do
        grep -q 'lock' "$tmp/log" && [ $n -lt 60 ] || return 1
        n=$((n + 1))
        sleep 2
    done
}
installed=1
dpkg_retry -i "$deb" || fail "dpkg -i: $(cat "$tmp/log")"
getent passwd fidbus >/dev/null || fail "no fidbus user after dpkg -i"
getent group fidbus >/dev/null || fail "no fidbus group after dpkg -i"
[ "$(getent passwd fidbus | cut -d: -f6)" = /var/lib/fidbus ] || fail "fidbus home is not /var/lib/fidbus"
uid=$(id -u fidbus)
[ "$uid" -lt 1000 ] || fail "fidbus is not a system user (uid $uid)"
dpkg-query -W -f='${Conffiles}\n' fidbus | grep -q '/etc/fidbus/fidbusd.conf' ||
    fail "dpkg does not treat /etc/fidbus/fidbusd.conf as a conffile"
/usr/bin/fidbusd --check-config -c /etc/fidbus/fidbusd.conf >"$tmp/log" 2>&1 ||
    fail "installed config is invalid: $(cat "$tmp/log")"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify looks the Documentation= man pages up, but Docker's Debian
    # images tell dpkg not to install /usr/share/man
    manopt=--man=no
    if command -v man >/dev/null 2>&1 && [ -e /usr/share/man/man8/fidbusd.8.gz ] &&
        [ -e /usr/share/man/man5/fidbusd.conf.5.gz ] && [ -e /usr/share/man/man1/fidbusctl.1.gz ]; then
        manopt=--man=yes
    fi
    if ! out=$(systemd-analyze verify $manopt /lib/systemd/system/fidbusd.service \
        /lib/systemd/system/fidbusd.socket /lib/systemd/system/fidbusd-control.socket 2>&1) ||
        [ -n "$out" ]; then
        fail "systemd-analyze verify of the installed units: $out"
    fi
else
    echo "install.deb: systemd-analyze not found: installed units not verified"
fi

# remove: files go, the edited conffile and the user stay
echo "; edited by install.deb" >> /etc/fidbus/fidbusd.conf
dpkg_retry -r fidbus || fail "dpkg -r: $(cat "$tmp/log")"
for f in /usr/bin/fidbusd /usr/bin/fidbusctl "$L/fidbus/plugins/log.so" /lib/systemd/system/fidbusd.service; do
    [ ! -e "$f" ] || fail "$f still there after dpkg -r"
done
grep -q 'edited by install.deb' /etc/fidbus/fidbusd.conf || fail "dpkg -r did not keep the edited conffile"
getent passwd fidbus >/dev/null || fail "dpkg -r removed the fidbus user"

# purge: the conffile, /etc/fidbus and the state dir go, the user stays
dpkg_retry --purge fidbus || fail "dpkg --purge: $(cat "$tmp/log")"
installed=0
[ ! -e /etc/fidbus ] || fail "/etc/fidbus still there after purge: $(ls -la /etc/fidbus)"
[ ! -e /var/lib/fidbus ] || fail "/var/lib/fidbus still there after purge"
[ ! -e /etc/systemd/system/fidbusd.service ] || fail "a fidbusd.service mask is left after purge"
getent passwd fidbus >/dev/null || fail "purge removed the fidbus user (Debian keeps it)"
echo "install.deb: OK ($(basename "$deb") built, checked, installed, removed and purged)"
