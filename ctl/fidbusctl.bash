# bash completion for fidbusctl: commands, subcommands and options, and the
# running daemon's plugin names (plugin unload/reload) and route names
# (route del), and funcIDs (func release; the quarantined ones when any
# is), asked with `fidbusctl --json plugin list` / `route list`
# over the same --socket the command line names. The JSON is read with
# sed, so there is no jq dependency: every plugin and route object starts
# with "name", and names are [A-Za-z0-9_.-] only. Installed as
# share/bash-completion/completions/fidbusctl.

# The names of the objects in the array KEY of `fidbusctl --json ARGS...`:
# an element follows "[" or "," (a tags map such as {"name":"x"} follows ":").
_fidbusctl_names()
{
    local sock=$1
    shift
    "${COMP_WORDS[0]}" ${sock:+--socket "$sock"} --json "$@" 2>/dev/null |
        sed 's/[[,]{"name":"\([A-Za-z0-9_.-]*\)"/\n\1\n/g' |
        sed -n '/^[A-Za-z0-9_.-][A-Za-z0-9_.-]*$/p'
}

# The funcIDs of `fidbusctl --json func list`: the quarantined ones, or
# every one when none is.
_fidbusctl_funcids()
{
    local sock=$1 list q
    list=$("${COMP_WORDS[0]}" ${sock:+--socket "$sock"} --json func list 2>/dev/null |
        sed 's/{"id":"/\n/g')
    q=$(printf '%s\n' "$list" | sed -n 's/^\([0-9a-f]\{16\}\)".*"quarantined":true.*/\1/p')
    [ -n "$q" ] && { printf '%s\n' "$q"; return; }
    printf '%s\n' "$list" | sed -n 's/^\([0-9a-f]\{16\}\)".*/\1/p'
}

_fidbusctl()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local global="--socket --bus --key-file --json --help --version"

    # an option's argument
    case $prev in
    --socket | --key-file | --data-file | --apply | --path)
        COMPREPLY=($(compgen -f -- "$cur"))
        compopt -o filenames 2>/dev/null
        return ;;
    --bus)
        COMPREPLY=($(compgen -W "unix:/run/fidbus/bus.sock tcp:127.0.0.1:7878" -- "$cur"))
        return ;;
    --mode)
        COMPREPLY=($(compgen -W "all split" -- "$cur"))
        return ;;
    --tag | --data-json | --data-hex | --name | --config | --to | --split-by | \
        --priority | --signature)
        return ;;
    esac

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
            sock=${words[i + 1]}
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
    case $cmd in
    "")
        COMPREPLY=($(compgen -W "publish status stats plugin func route config $global" -- "$cur"))
        return ;;
    publish)
        opts="--tag --data-json --data-hex --data-file --ack" ;;
    stats)
        opts="--prometheus" ;;
    status) ;;
    func)
        case $sub in
        "") opts="list release" ;;
        release)
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_fidbusctl_funcids "$sock")" -- "$cur"))
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
                COMPREPLY=($(compgen -f -- "$cur"))
                compopt -o filenames 2>/dev/null
                return
            fi ;;
        unload | reload)
            [ "$sub" = reload ] && opts="--path"
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_fidbusctl_names "$sock" plugin list)" -- "$cur"))
                return
            fi ;;
        esac ;;
    route)
        case $sub in
        "") opts="list add del apply test" ;;
        add) opts="--tag --to --mode --split-by --priority --signature" ;;
        del)
            if [ ${#pos[@]} -eq 2 ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_fidbusctl_names "$sock" route list)" -- "$cur"))
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
