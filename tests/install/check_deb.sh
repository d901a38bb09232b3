#!/bin/sh
# install.deb: builds the Debian packages from a scratch tree configured for
# /usr (tests and bench off), then checks them:
#   - cpack makes three packages, fidbus, libfidbus0 and libfidbus-dev, and
#     a -dbgsym .ddeb for each package with ELF files;
#   - `dpkg-deb -c`: each holds what it should and nothing of another
#     (fidbus: daemon, fidbusctl, plugins, config, units, man 1/5/8,
#     completion, README and proto/ docs; libfidbus0: libfidbus.so.0;
#     libfidbus-dev: headers, pkg-config, CMake files, libfidbus.a, the .so
#     link, man 3/7), nothing under /usr/local or /usr/etc, and every
#     package has /usr/share/doc/PACKAGE/copyright (DEP-5) and
#     changelog.Debian.gz;
#   - control: the Depends of fidbus name the package of every library its
#     binaries link (dpkg-shlibdeps) and adduser, libfidbus-dev depends on
#     libfidbus0 (= its version); libfidbus0 has an ldconfig trigger and a
#     shlibs file, and no maintainer script runs ldconfig; fidbus has the
#     conffile and its maintainer scripts; a real Maintainer;
#   - the packaged ELF files are stripped (`file`), and their debug info is
#     in the .ddeb under their build-id;
#   - lintian, when installed, reports no error on any of them;
#   - extracted: the packaged config passes --check-config, its plugin paths
#     exist in the package, the man pages render without warnings;
#   - installed for real with `dpkg -i` (all three) when running as root
#     with a usable dpkg and no fidbus already installed (CI: a fresh
#     machine): ld.so finds libfidbus.so.0, the fidbus system user and group
#     exist, the installed config is valid and the installed units pass
#     `systemd-analyze verify`; then `dpkg -r` removes the files but keeps
#     the (edited) conffile and the user, and `dpkg --purge` removes the
#     conffile, /etc/fidbus and /var/lib/fidbus and keeps the user (Debian
#     keeps system users; see packaging/deb/postrm), and the libraries go.
#     Otherwise the real install is skipped with the reason.
# Nothing is started: no socket is bound, /run/fidbus is not touched. The
# scratch tree and, when installed, the packages are removed even on
# failure.
# usage: check_deb.sh SOURCE_DIR MULTIARCH
set -eu
src=$1
ma=$2
tmp=$(mktemp -d /tmp/fidbus-deb.XXXXXX)
installed=0
cleanup() {
    if [ "$installed" = 1 ]; then
        dpkg --purge libfidbus-dev fidbus libfidbus0 >/dev/null 2>&1 ||
            echo "install.deb: cleanup: dpkg --purge failed" >&2
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
V=$(sed -n 's/^project(fidbus VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")-1
A=$(dpkg --print-architecture)
deb=$tmp/build/fidbus_${V}_$A.deb
lib=$tmp/build/libfidbus0_${V}_$A.deb
dev=$tmp/build/libfidbus-dev_${V}_$A.deb
for f in "$deb" "$lib" "$dev" "$tmp/build/fidbus-dbgsym_${V}_$A.ddeb" \
    "$tmp/build/libfidbus0-dbgsym_${V}_$A.ddeb"; do
    [ -f "$f" ] || fail "cpack made no $(basename "$f"): $(ls "$tmp/build"; cat "$tmp/log")"
done
man=0
[ -d "$tmp/build/packaging/man" ] && man=1

# ---- contents, per package
L=/usr/lib/$ma
for p in fidbus libfidbus0 libfidbus-dev; do
    dpkg-deb -c "$tmp/build/${p}_${V}_$A.deb" | awk '{ print $6 }' | sed 's|^\./|/|' > "$tmp/files.$p"
done
has() { # package file...
    p=$1
    shift
    for f in "$@"; do
        grep -qx "$f" "$tmp/files.$p" || fail "$f not in $p: $(cat "$tmp/files.$p")"
    done
}
hasnt() { # package regex
    if grep -E "$2" "$tmp/files.$1"; then
        fail "$1 holds the files above, which belong to another package"
    fi
}
has fidbus /usr/bin/fidbusd /usr/bin/fidbusctl /usr/bin/fidbus-serve $L/fidbus/plugins/log.so \
    $L/fidbus/plugins/count.so /etc/fidbus/fidbusd.conf /lib/systemd/system/fidbusd.service \
    /lib/systemd/system/fidbusd.socket /lib/systemd/system/fidbusd-control.socket \
    /usr/share/bash-completion/completions/fidbusctl /usr/share/doc/fidbus/README.md \
    /usr/share/doc/fidbus/proto/README.md /usr/share/doc/fidbus/proto/control.md \
    /usr/share/doc/fidbus/proto/fidbus.cddl /usr/share/doc/fidbus/changelog.gz
[ "$man" = 1 ] && has fidbus /usr/share/man/man8/fidbusd.8.gz \
    /usr/share/man/man1/fidbusctl.1.gz /usr/share/man/man1/fidbus-serve.1.gz \
    /usr/share/man/man5/fidbusd.conf.5.gz
hasnt fidbus "^$L/libfidbus|^/usr/include|pkgconfig|cmake|/man[37]/"
has libfidbus0 $L/libfidbus.so.0
hasnt libfidbus0 "^/usr/bin|^/etc|^/usr/include|libfidbus\.(so|a)$|/fidbus/plugins|/man/"
has libfidbus-dev /usr/include/fidbus/client.h /usr/include/fidbus/plugin.h \
    $L/pkgconfig/fidbus.pc $L/cmake/fidbus/fidbusConfig.cmake $L/libfidbus.a $L/libfidbus.so
hasnt libfidbus-dev "^/usr/bin|^/etc|libfidbus\.so\.|/fidbus/plugins|/man[158]/"
for p in fidbus libfidbus0 libfidbus-dev; do
    has $p /usr/share/doc/$p/copyright /usr/share/doc/$p/changelog.Debian.gz
    if grep -E '^/usr/(local|etc)/' "$tmp/files.$p"; then
        fail "$p: files outside the Debian layout (above)"
    fi
done
# the client API and plugin ABI pages, and any other section 3 or 7
# page, are in -dev
[ "$man" = 1 ] && has libfidbus-dev /usr/share/man/man3/fidbus_client.3.gz \
    /usr/share/man/man7/fidbus-plugin.7.gz
for page in $(find "$tmp/build/packaging/man" -name '*.[37].gz' 2>/dev/null); do
    n=$(basename "$page")
    sec=${n%.gz}
    has libfidbus-dev "/usr/share/man/man${sec##*.}/$n"
done

# ---- control
for p in fidbus libfidbus0 libfidbus-dev; do
    dpkg-deb -e "$tmp/build/${p}_${V}_$A.deb" "$tmp/control.$p"
    m=$(dpkg-deb -f "$tmp/build/${p}_${V}_$A.deb" Maintainer)
    case $m in
    *root@localhost* | "") fail "$p: no real Maintainer: $m" ;;
    esac
done
grep -qx /etc/fidbus/fidbusd.conf "$tmp/control.fidbus/conffiles" || fail "no conffiles entry"
for s in postinst prerm postrm; do
    [ -x "$tmp/control.fidbus/$s" ] || fail "maintainer script $s missing or not executable"
    sh -n "$tmp/control.fidbus/$s" || fail "$s: syntax error"
done
grep -qx 'activate-noawait ldconfig' "$tmp/control.libfidbus0/triggers" ||
    fail "libfidbus0 has no ldconfig trigger"
grep -q "^libfidbus 0 libfidbus0 " "$tmp/control.libfidbus0/shlibs" || fail "libfidbus0 has no shlibs"
if grep -l ldconfig "$tmp/control.libfidbus0/postinst" "$tmp/control.libfidbus0/postrm" 2>/dev/null |
    xargs -r grep -v '^#' | grep -q ldconfig; then
    fail "a libfidbus0 maintainer script calls ldconfig (the trigger does)"
fi
dpkg-deb -f "$dev" Depends | tr ',' '\n' | sed 's/^ *//' | grep -qx "libfidbus0 (= $V)" ||
    fail "libfidbus-dev does not depend on libfidbus0 (= $V): $(dpkg-deb -f "$dev" Depends)"
depends=$(dpkg-deb -f "$deb" Depends)
echo "install.deb: Depends: $depends"
# The package of every library a packaged ELF file links directly
# (DT_NEEDED): what those libraries need in turn comes with their own
# packages' Depends (libmicrohttpd12 brings libgnutls30). dpkg may know a
# file by its /lib or its /usr/lib name (merged /usr).
owner() {
    for p in "$1" "/usr$1" "${1#/usr}"; do
        o=$(dpkg -S "$p" 2>/dev/null | head -n1 | sed 's/:.*//')
        [ -n "$o" ] && echo "$o" && return 0
    done
    return 1
}
for p in fidbus libfidbus0 libfidbus-dev; do
    dpkg-deb -x "$tmp/build/${p}_${V}_$A.deb" "$tmp/root"
done
for elf in "$tmp/root/usr/bin/fidbusd" "$tmp/root/usr/bin/fidbusctl" \
    "$tmp/root$L/fidbus/plugins/log.so"; do
    needed=$(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    for so in $(ldd "$elf" | awk -v n=" $(echo $needed) " \
        '$2 == "=>" && $3 ~ /^\// && index(n, " " $1 " ") { print $3 }'); do
        pkg=$(owner "$so") || fail "no package owns $so (linked by $elf)"
        printf '%s\n' "$depends" | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -qx "$pkg" ||
            fail "Depends lacks $pkg (for $so, linked by ${elf#$tmp/root})"
    done
done
printf '%s\n' "$depends" | grep -q 'adduser' || fail "Depends lacks adduser"
# loaded with dlopen for [metrics], so no DT_NEEDED names it
printf '%s\n' "$depends" | grep -q 'libmicrohttpd12' || fail "Depends lacks libmicrohttpd12"

# ---- stripped, with the debug info in the .ddeb under the build-id
mkdir -p "$tmp/dbg"
for d in "$tmp"/build/*.ddeb; do
    dpkg-deb -x "$d" "$tmp/dbg"
done
for elf in "$tmp/root/usr/bin/fidbusd" "$tmp/root/usr/bin/fidbusctl" \
    "$tmp/root$L/fidbus/plugins/log.so" "$tmp/root$L/fidbus/plugins/count.so" \
    "$tmp/root$L/libfidbus.so.0"; do
    file -L "$elf" | grep -q ', stripped' || fail "not stripped: $(file -L "$elf")"
    id=$(file -L "$elf" | sed -n 's/.*BuildID\[sha1\]=\([0-9a-f]*\).*/\1/p')
    [ -n "$id" ] || fail "no build-id: $(file -L "$elf")"
    dbg=$tmp/dbg/usr/lib/debug/.build-id/$(echo "$id" | cut -c1-2)/$(echo "$id" | cut -c3-).debug
    [ -f "$dbg" ] || fail "no debug file for ${elf#$tmp/root} in the .ddeb ($dbg)"
    readelf -S "$dbg" 2>/dev/null | grep -q '\.debug_info' || fail "$dbg has no .debug_info"
done

# ---- lintian: no errors (warnings are printed)
if command -v lintian >/dev/null 2>&1; then
    lintian --tag-display-limit 0 "$deb" "$lib" "$dev" "$tmp"/build/*.ddeb >"$tmp/lintian" 2>&1 || true
    grep -v '^running with root' "$tmp/lintian" | sed 's/^/install.deb: lintian: /'
    if grep -q '^E: ' "$tmp/lintian"; then
        fail "lintian reports errors (above)"
    fi
else
    echo "install.deb: lintian not found: packages not linted (apt-get install lintian)"
fi

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
elif dpkg-query -W -f='${Status}\n' fidbus libfidbus0 libfidbus-dev 2>/dev/null | grep -q installed; then
    why="a fidbus package is already installed"
elif [ -e /usr/bin/fidbusd ] || [ -e /etc/fidbus ] || [ -e "$L/libfidbus.so.0" ]; then
    why="/usr/bin/fidbusd, /etc/fidbus or $L/libfidbus.so.0 already exists"
elif [ -n "${FIDBUS_DEB_NO_INSTALL:-}" ]; then
    why="FIDBUS_DEB_NO_INSTALL is set"
fi
if [ -n "$why" ]; then
    echo "install.deb: OK (fidbus, libfidbus0, libfidbus-dev checked; dpkg -i skipped: $why)"
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
dpkg_retry -i "$deb" "$lib" "$dev" || fail "dpkg -i: $(cat "$tmp/log")"
# the trigger ran ldconfig: ld.so finds the library by its soname
ldconfig -p | grep -q "libfidbus\.so\.0 .*=> \(/usr\)\{0,1\}/lib/$ma/libfidbus\.so\.0\$" ||
    fail "ld.so's cache lacks libfidbus.so.0 after dpkg -i: $(ldconfig -p | grep fidbus)"
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
dpkg_retry -r libfidbus-dev fidbus || fail "dpkg -r: $(cat "$tmp/log")"
for f in /usr/bin/fidbusd /usr/bin/fidbusctl "$L/fidbus/plugins/log.so" /lib/systemd/system/fidbusd.service; do
    [ ! -e "$f" ] || fail "$f still there after dpkg -r"
done
grep -q 'edited by install.deb' /etc/fidbus/fidbusd.conf || fail "dpkg -r did not keep the edited conffile"
getent passwd fidbus >/dev/null || fail "dpkg -r removed the fidbus user"

# purge: the conffile, /etc/fidbus and the state dir go, the user stays
dpkg_retry --purge libfidbus-dev fidbus libfidbus0 || fail "dpkg --purge: $(cat "$tmp/log")"
installed=0
for f in "$L/libfidbus.so.0" "$L/libfidbus.so" "$L/libfidbus.a" /usr/include/fidbus \
    /usr/share/doc/fidbus /usr/share/doc/libfidbus0; do
    [ ! -e "$f" ] || fail "$f still there after purge"
done
if ldconfig -p | grep -q 'libfidbus\.so\.0 '; then
    fail "ld.so's cache still lists libfidbus.so.0 after purge"
fi
[ ! -e /etc/fidbus ] || fail "/etc/fidbus still there after purge: $(ls -la /etc/fidbus)"
[ ! -e /var/lib/fidbus ] || fail "/var/lib/fidbus still there after purge"
[ ! -e /etc/systemd/system/fidbusd.service ] || fail "a fidbusd.service mask is left after purge"
getent passwd fidbus >/dev/null || fail "purge removed the fidbus user (Debian keeps it)"
echo "install.deb: OK (fidbus, libfidbus0, libfidbus-dev built, checked, installed, removed and purged)"
