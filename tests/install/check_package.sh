#!/bin/sh
# install.package: installs the build into a temp prefix and checks that
# what the README tells an outside project to do works there:
#   - the README's client example builds with pkg-config and with CMake's
#     find_package(fidbus) + fidbus::client, and runs (reporting a refused
#     connection cleanly);
#   - the README's plugin example builds against the installed headers;
#   - the installed fidbusd and the plugins it ships are where the package
#     says (pkg-config's plugindir).
# usage: check_package.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d /tmp/fidbus-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "install.package: $*" >&2; exit 1; }
. "$(dirname "$0")/lib.sh"

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name fidbus.pc | head -n1)
[ -n "$pc" ] || fail "no fidbus.pc installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir fidbus)
plugindir=$(pkg-config --variable=plugindir fidbus)
[ -f "$plugindir/log.so" ] && [ -f "$plugindir/count.so" ] ||
    fail "shipped plugins not in plugindir $plugindir"
[ -x "$tmp/prefix/bin/fidbusd" ] || fail "fidbusd not installed"

readme_block "$src/README.md" example-client "$tmp/publish.c"
readme_block "$src/README.md" example-plugin "$tmp/hello.c"

# pkg-config
cc -Wall -Wextra -Werror "$tmp/publish.c" $(pkg-config --cflags --libs fidbus) \
    -o "$tmp/publish-pc"
cc -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden \
    $(pkg-config --cflags fidbus) "$tmp/hello.c" -o "$tmp/hello.so"
nm -D --defined-only "$tmp/hello.so" | grep -q ' fidbus_plugin$' ||
    fail "hello.so does not export fidbus_plugin"

# CMake package
cmake_project "$tmp/proj" "$tmp/publish.c" fidbus::client
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/proj/build" >/dev/null

# Both binaries run, find the library and report a refused connection.
for exe in "$tmp/publish-pc" "$tmp/proj/build/publish"; do
    if LD_LIBRARY_PATH="$libdir" "$exe" "unix:$tmp/nothing.sock" >"$tmp/out" 2>&1; then
        fail "$exe succeeded without a daemon"
    fi
    grep -q "nothing.sock" "$tmp/out" || fail "$exe: unexpected output: $(cat "$tmp/out")"
done
echo "install.package: OK ($tmp/prefix)"
