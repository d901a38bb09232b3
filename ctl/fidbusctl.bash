# bash completion for fidbusctl: commands, subcommands and options, and
# from the running daemon: plugin instance names (plugin unload/reload),
# route names (route del/weight), a route's targets (route weight
# TARGET=), function names for --to (canonical ns.name@X.Y.Z and ns.name)
# and funcIDs (func release; the quarantined ones when any is). `plugin
# load` and --path offer .so files and directories.
#
# The daemon is asked with `fidbusctl --json ...` over the --socket the
# command line names, else where fidbusctl looks by itself (the shell's
# FIDBUS_CONTROL / FIDBUS_RUNTIME_DIR: bash does not show a completion
# function an assignment typed before the command, so
# `FIDBUS_RUNTIME_DIR=x fidbusctl ...<TAB>` cannot be honoured -- export
# it, or use --socket). No daemon, no answer within 2 s: no candidates,
# no message. The JSON is read with sed, so there is no jq dependency:
# every plugin and route object starts with "name", and names are
# [A-Za-z0-9_.-] only. Installed as share/bash-completion/completions/fidbusctl.

# fidbusctl [--socket SOCK] --json ARGS..., quiet, bounded in time.
# $1 is the program as typed, $2 the socket ("" for fidbusctl's default).
_fidbusctl_ask()
{
    local prog=$1 sock=$2
    shift 2
    local -a t=()
    command -v timeout >/dev/null 2>&1 && t=(timeout 2)
    "${t[@]}" "$prog" ${sock:+--socket "$sock"} --json "$@" 2>/dev/null
}

# The names of the objects in the array KEY of `fidbusctl --json ARGS...`:
# an element follows "[" or "," (a tags map such as {"name":"x"} follows ":").
_fidbusctl_names()
{
    _fidbusctl_ask "$@" |
        sed 's/[[,]{"name":"\([A-Za-z0-9_.-]*\)"/\n\1\n/g' |
        sed -n '/^[A-Za-z0-9_.-][A-Za-z0-9_.-]*$/p'
}

# The funcIDs of `fidbusctl --json func list`: the quarantined ones, or
# every one when none is.
_fidbusctl_funcids()
{
    local list q
    list=$(_fidbusctl_ask "$1" "$2" func list | sed 's/{"id":"/\n/g')
    q=$(printf '%s\n' "$list" | sed -n 's/^\([0-9a-f]\{16\}\)".*"quarantined":true.*/\1/p')
    [ -n "$q" ] && { printf '%s\n' "$q"; return; }
    printf '%s\n' "$list" | sed -n 's/^\([0-9a-f]\{16\}\)".*/\1/p'
}

# Every loaded function as ns.name@X.Y.Z and as ns.name (what --to takes).
_fidbusctl_funcs()
{
    local c
    _fidbusctl_ask "$1" "$2" func list |
        sed 's/"canonical":"\([A-Za-z0-9_.-]*@[0-9.]*\)"/\n\1\n/g' |
        sed -n '/^[A-Za-z0-9_.-][A-Za-z0-9_.-]*@[0-9.][0-9.]*$/p' |
        while read -r c; do printf '%s\n%s\n' "$c" "${c%@*}"; done | sort -u
}

# "TARGET=" for each target (as written) of route $3.
_fidbusctl_targets()
{
    _fidbusctl_ask "$1" "$2" route list |
        sed 's/[[,]{"name":"/\n/g' |
        sed -n "/^${3//./\\.}\"/p" | sed 's/"target":"\([^"]*\)"/\n\1=\n/g' |
        sed -n '/^[A-Za-z0-9_.@-][A-Za-z0-9_.@-]*=$/p'
}

_fidbusctl()
{
    # Whole words, as fidbusctl will see them: bash splits COMP_WORDS at
    # COMP_WORDBREAKS (= : @ among them), which would cut `--to
    # ns.name@1.0.0:5` and `TARGET=WEIGHT` apart. Quotes are not parsed.
    local -a words=()
    local line
    if [ -n "${COMP_LINE-}" ]; then
        line=${COMP_LINE:0:${COMP_POINT:-${#COMP_LINE}}}
        read -ra words <<<"$line"
        [[ $line =~ [[:space:]]$ || ${#words[@]} -eq 0 ]] && words+=("")
    else
        words=("${COMP_WORDS[@]:0:COMP_CWORD+1}")
    fi
    local cword=$((${#words[@]} - 1))
    local cur=${words[cword]} prev=${words[cword - 1]-} prog=${words[0]}
    COMPREPLY=()
    _fidbusctl_complete
    # bash replaces only the part of the word after its last break
    # character: drop that much from each candidate.
    local i k pre="" wb=${COMP_WORDBREAKS-$' \t\n"\'@><=;|&(:'}
    for ((k = ${#cur} - 1; k >= 0; k--)); do
        if [[ $wb == *"${cur:k:1}"* ]]; then
            pre=${cur:0:k+1}
            break
        fi
    done
    if [ -n "$pre" ]; then
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[i]=${COMPREPLY[i]#"$pre"}
        done
    fi
}

# .so files and directories matching $1, for plugin load and --path.
_fidbusctl_so()
{
    local IFS=$'\n'
    COMPREPLY=($(compgen -d -- "$1") $(compgen -f -X '!*.so' -- "$1"))
    compopt -o filenames 2>/dev/null
}

# Fills COMPREPLY from words/cword/cur/prev/prog (set by _fidbusctl).
_fidbusctl_complete()
{
    local global="--socket --bus --key-file --json --help --version"

    # the positional words so far, and the --socket given
    local i w sock="" skip=0
    local -a pos=()
    for ((i = 1; i < cword; i++)); do
        w=${words[i]}
        if ((skip)); then
            skip=0
            continue
        fi
        case $w in
        --socket)
            sock=${words[i + 1]-}
            skip=1 ;;
        --socket=*) sock=${w#--socket=} ;;
        --bus | --key-file | --tag | --data-json | --data-hex | --data-file | --name | \
            --config | --path | --to | --mode | --split-by | --priority | --signature | --apply)
            skip=1 ;;
        -*) ;;
        *) pos+=("$w") ;;
        esac
    done
    local cmd=${pos[0]-} sub=${pos[1]-} opts=""

    # an option's argument
    case $prev in
    --socket | --key-file | --data-file | --apply)
        COMPREPLY=($(compgen -f -- "$cur"))
        compopt -o filenames 2>/dev/null
        return ;;
    --path)
        _fidbusctl_so "$cur"
        return ;;
    --bus)
        COMPREPLY=($(compgen -W "unix:/run/fidbus/bus.sock tcp:127.0.0.1:7878" -- "$cur"))
        return ;;
    --mode)
        COMPREPLY=($(compgen -W "all split" -- "$cur"))
        return ;;
    --to)
        # a weight after ':' is the user's to type
        [[ $cur == *:* ]] ||
            COMPREPLY=($(compgen -W "$(_fidbusctl_funcs "$prog" "$sock")" -- "$cur"))
        return ;;
    --tag | --data-json | --data-hex | --name | --config | --split-by | \
        --priority | --signature | --buffer)
        return ;;
    esac

    case $cmd in
    "")
        COMPREPLY=($(compgen -W "publish status stats plugin func route config conn top tail $global" -- "$cur"))
        return ;;
    publish)
        opts="--tag --data-json --data-hex --data-file --ack" ;;
    stats)
        opts="--prometheus" ;;
    status) ;;
    conn)
        [ -z "$sub" ] && opts="list" ;;
    top)
        opts="--once" ;;
    tail)
        opts="--tag --json --buffer" ;;
    func)
        case $sub in
        "") opts="list release" ;;
        release)
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_fidbusctl_funcids "$prog" "$sock")" -- "$cur"))
                return
            fi ;;
        esac ;;
    config)
        [ -z "$sub" ] && opts="reload export"
        [ "$sub" = reload ] && opts="--dry-run" ;;
    plugin)
        case $sub in
        "") opts="list load unload reload" ;;
        load)
            opts="--name --config"
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                _fidbusctl_so "$cur"
                return
            fi ;;
        unload | reload)
            [ "$sub" = reload ] && opts="--path"
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_fidbusctl_names "$prog" "$sock" plugin list)" -- "$cur"))
                return
            fi ;;
        esac ;;
    route)
        case $sub in
        "") opts="list add del weight apply test" ;;
        add) opts="--tag --to --mode --split-by --priority --signature" ;;
        del | weight)
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_fidbusctl_names "$prog" "$sock" route list)" -- "$cur"))
                return
            fi
            if [ "$sub" = weight ] && [ ${#pos[@]} -ge 3 ] && [[ $cur != -* && $cur != *=* ]]; then
                COMPREPLY=($(compgen -W "$(_fidbusctl_targets "$prog" "$sock" "${pos[2]}")" -- "$cur"))
                compopt -o nospace 2>/dev/null
                return
            fi ;;
        apply)
            opts="--replace"
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -f -- "$cur"))
                compopt -o filenames 2>/dev/null
                return
            fi ;;
        test) opts="--tag --apply" ;;
        esac ;;
    esac
    COMPREPLY=($(compgen -W "$opts $global" -- "$cur"))
}
complete -F _fidbusctl fidbusctl
