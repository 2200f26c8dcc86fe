# nix-env --profile P --set PATH | --switch-generation N
log "nix-env $*"
[ "${1:-}" = --profile ] || { echo "usage: nix-env --profile P (--set PATH | --switch-generation N)" >&2; exit 1; }
profile=$2; dir=$(dirname "$profile"); name=$(basename "$profile")
case ${3:-} in
  --set)
    last=$(ls "$dir" | sed -n "s/^$name-\([0-9]*\)-link\$/\1/p" | sort -n | tail -1)
    next=$(( ${last:-0} + 1 ))
    ln -s "$4" "$dir/$name-$next-link"
    ln -sfn "$name-$next-link" "$profile"
    ;;
  --switch-generation)
    [ -e "$dir/$name-$4-link" ] || { echo "error: generation $4 does not exist" >&2; exit 1; }
    ln -sfn "$name-$4-link" "$profile"
    echo "switching profile from version ? to $4" >&2
    ;;
  *) echo "usage: nix-env --profile P (--set PATH | --switch-generation N)" >&2; exit 1;;
esac
