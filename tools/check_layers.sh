#!/bin/sh
# The daemon's layer rule (docs/architecture.md): each folder under daemon/
# may use only the folders below it,
#
#   base <- config <- routing <- bus <- control <- daemon.c, main.c
#   base <- service  (sd_notify and socket activation; used by bus and up)
#
# Checked twice:
#   1. includes: every #include of a daemon header names its folder
#      ("bus/conn.h"), and no file includes from a folder it may not use;
#   2. objects (when BUILD_DIR holds a build, default build/): no object of a
#      folder has an undefined symbol that another folder's objects define,
#      unless that folder is one it may use -- a call upward is caught even
#      when it hides behind a forward declaration.
# ctl/ (fidbusctl) includes nothing from daemon/.
#
#   tools/check_layers.sh [BUILD_DIR]
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}

# may_use LAYER: the folders LAYER may include from or call into.
may_use() {
    case $1 in
    base) echo "base" ;;
    service) echo "base service" ;;
    config) echo "base config" ;;
    routing) echo "base config routing" ;;
    bus) echo "base config routing service bus" ;;
    control) echo "base config routing service bus control" ;;
    top) echo "base config routing service bus control top" ;;
    *) return 1 ;;
    esac
}
LAYERS="base config routing bus control service"

layer_of() { # daemon/bus/conn.c -> bus; daemon/daemon.c -> top
    case $1 in
    daemon/*/*) l=${1#daemon/}; echo "${l%%/*}" ;;
    daemon/*) echo top ;;
    esac
}

fail=0
bad() { echo "check_layers: $*" >&2; fail=1; }

# Only bring-up and shutdown live at the top; everything else has a room.
for f in daemon/*.c daemon/*.h; do
    case ${f#daemon/} in
    main.c | daemon.c | daemon.h) ;;
    *) bad "$f: put it in the layer folder it belongs to (daemon/*/)" ;;
    esac
done

for f in $(find daemon -name '*.[ch]' | sort); do
    l=$(layer_of "$f")
    allowed=$(may_use "$l") || { bad "$f: folder '$l' is not a layer (add it to tools/check_layers.sh)"; continue; }
    grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" |
        sed 's/^\([0-9]*\):.*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1 \2/' |
        while read -r line inc; do
            case $inc in
            build_config.h) continue ;;     # generated: version and paths only
            daemon.h) target=top ;;
            */*) target=${inc%%/*} ;;
            *)
                if ls daemon/*/"$inc" >/dev/null 2>&1; then
                    echo "check_layers: $f:$line: #include \"$inc\" must name its folder" >&2
                    echo x
                fi
                continue ;;
            esac
            case " $allowed " in
            *" $target "*) ;;
            *) echo "check_layers: $f:$line: $l/ may not include $inc ($target/ is not below $l/)" >&2
               echo x ;;
            esac
        done | grep -q x && fail=1
done

for f in $(find ctl -name '*.[ch]' | sort); do
    if grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"(daemon\.h|(base|config|routing|bus|control|service)/)' "$f"; then
        bad "$f: fidbusctl includes a daemon header (share code through lib/ instead)"
    fi
done

# ---- objects
objdir=$build/daemon/CMakeFiles/fidbusd_core.dir
# live_objs LAYER: its objects whose source still exists, so a build dir
# that predates a move (stale daemon/X.c.o) is not taken for the code.
live_objs() {
    if [ "$1" = top ]; then d=$objdir; src=daemon; else d=$objdir/$1; src=daemon/$1; fi
    for o in "$d"/*.o; do
        [ -f "$o" ] || continue
        b=${o##*/}
        if [ -f "$src/${b%.o}" ]; then echo "$o"; fi
    done
}
if [ -d "$objdir" ] && command -v nm >/dev/null; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for l in $LAYERS top; do
        objs=$(live_objs "$l")
        [ -n "$objs" ] || continue
        # shellcheck disable=SC2086
        nm -g --defined-only $objs 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u > "$tmp/def.$l"
        # shellcheck disable=SC2086
        nm -g --undefined-only $objs 2>/dev/null | awk '{ print $NF }' | sort -u > "$tmp/undef.$l"
    done
    for l in $LAYERS top; do
        [ -f "$tmp/undef.$l" ] || continue
        allowed=$(may_use "$l")
        for o in $LAYERS top; do
            [ -f "$tmp/def.$o" ] || continue
            case " $allowed " in *" $o "*) continue ;; esac
            comm -12 "$tmp/undef.$l" "$tmp/def.$o" | while read -r sym; do
                who=$(for x in $(live_objs "$l"); do
                    nm -u "$x" 2>/dev/null | awk '{ print $NF }' | grep -qx "$sym" &&
                        echo "${x#"$objdir"/}"; done | tr '\n' ' ')
                echo "check_layers: $l/ calls $o/'s $sym (from ${who% })" >&2
                echo x
            done | grep -q x && fail=1
        done
    done
else
    echo "check_layers: no objects in $objdir: include check only"
fi

[ "$fail" -eq 0 ] && echo "check_layers: ok"
exit "$fail"
