#!/bin/bash
# ctest e2e.completion: ctl/fidbusctl.bash driven as bash drives it
# (COMP_LINE/COMP_POINT/COMP_WORDS/COMP_CWORD set, _fidbusctl called,
# COMPREPLY checked) against a real fidbusd started here: function names
# for --to, .so files for plugin load, route names and a route's targets
# for route weight, plugin names for plugin unload, --socket and the
# exported FIDBUS_RUNTIME_DIR honoured, and silence when no daemon answers.
#
#     check_completion.sh BUILD_DIR SOURCE_DIR
set -u
B=$1
S=$2
CTL=$B/daemon/fidbusctl
dir=$(mktemp -d "${TMPDIR:-/tmp}/fidbus-completion.XXXXXX") || exit 1
pid=""
cleanup()
{
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
fails=0
fail()
{
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

mkdir -p "$dir/run" "$dir/state" "$dir/so/sub"
cat >"$dir/f.conf" <<EOF
[daemon]
runtime_dir = $dir/run
state_dir = $dir/state
[plugin log]
path = $B/plugins/log.so
file = $dir/log.txt
[plugin count]
path = $B/plugins/count.so
report_file = $dir/count.json
interval_ms = 0
[route canary]
event = order.*
mode = split
to = fidbus.log:90, fidbus.count@1.0.0:10
[route audit]
event = audit.*
to = fidbus.count@1.0.0
EOF
"$B/daemon/fidbusd" -c "$dir/f.conf" >"$dir/fidbusd.log" 2>&1 &
pid=$!
# ready when the control socket answers (fidbusd has no other signal for
# a shell; every try is a real request, bounded at 10 s in all)
for _ in $(seq 100); do
    "$CTL" --socket "$dir/run/control.sock" status >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
"$CTL" --socket "$dir/run/control.sock" status >/dev/null 2>&1 || {
    cat "$dir/fidbusd.log" >&2
    echo "FAIL: fidbusd did not start" >&2
    exit 1
}
SOCK=$dir/run/control.sock

unset FIDBUS_CONTROL FIDBUS_RUNTIME_DIR
# shellcheck source=../../ctl/fidbusctl.bash
. "$S/ctl/fidbusctl.bash"

# comp LINE: the candidates, sorted, one a line, for the cursor at the end
# of LINE (a trailing space completes a new word); stderr must stay empty.
comp()
{
    COMP_LINE=$1
    COMP_POINT=${#COMP_LINE}
    read -ra COMP_WORDS <<<"$COMP_LINE"
    [[ $COMP_LINE =~ [[:space:]]$ ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMPREPLY=()
    _fidbusctl 2>"$dir/comp.err"
    [ -s "$dir/comp.err" ] && fail "\`$1\` wrote to stderr: $(cat "$dir/comp.err")"
    printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort
}

# expect LINE WANT...: the candidates are exactly WANT (any order).
expect()
{
    local line=$1 got want
    shift
    got=$(comp "$line")
    want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
    [ "$got" = "$want" ] ||
        fail "\`$line\`: got [$(echo $got)], want [$(echo $want)]"
}

# --to: canonical names and ns.name, over --socket or --socket=
expect "$CTL --socket $SOCK route add r e --to " \
    fidbus.count fidbus.count@1.0.0 fidbus.log fidbus.log@1.0.0
expect "$CTL --socket=$SOCK route add r e --to fidbus.c" fidbus.count fidbus.count@1.0.0
# bash replaces only what follows the '@' (a word-break character)
expect "$CTL --socket $SOCK route add r e --to fidbus.count@1" 1.0.0
expect "$CTL --socket $SOCK route add r e --to fidbus.log --to fidbus.l" \
    fidbus.log fidbus.log@1.0.0
expect "$CTL --socket $SOCK route add r e --to fidbus.log:5"
# the exported FIDBUS_RUNTIME_DIR is where fidbusctl looks
export FIDBUS_RUNTIME_DIR=$dir/run
expect "$CTL route add r e --to fidbus.l" fidbus.log fidbus.log@1.0.0
# no daemon there: nothing, silently
export FIDBUS_RUNTIME_DIR=$dir/nothing
expect "$CTL route add r e --to fidbus.l"
expect "$CTL route del "
unset FIDBUS_RUNTIME_DIR
expect "$CTL --socket $dir/none.sock route add r e --to "

# route names, a route's targets
expect "$CTL --socket $SOCK route del " audit canary
expect "$CTL --socket $SOCK route weight " audit canary
expect "$CTL --socket $SOCK route weight canary " fidbus.log= fidbus.count@1.0.0=
expect "$CTL --socket $SOCK route weight canary fidbus.log=5 fidbus.c" fidbus.count@1.0.0=
expect "$CTL --socket $SOCK route weight audit " fidbus.count@1.0.0=
expect "$CTL --socket $SOCK route w" weight
# conn list, top --once
expect "$CTL --socket $SOCK conn l" list
expect "$CTL --socket $SOCK top --o" --once
expect "$CTL --socket $SOCK co" config conn
# plugin instance names
expect "$CTL --socket $SOCK plugin unload " count log
expect "$CTL --socket $SOCK plugin reload c" count

# plugin load / --path: .so files and directories, nothing else
touch "$dir/so/a.so" "$dir/so/b.txt" "$dir/so/c.so.txt"
expect "$CTL --socket $SOCK plugin load $dir/so/" "$dir/so/a.so" "$dir/so/sub"
expect "$CTL --socket $SOCK plugin reload log --path $dir/so/" "$dir/so/a.so" "$dir/so/sub"

if [ "$fails" -ne 0 ]; then
    echo "$fails completion check(s) failed" >&2
    exit 1
fi
echo "completion: all checks passed"
