# nix store diff-closures FROM TO, in its output format: each unit of the emulated systems is a
# package whose version is its state (one line per package that differs: NAME: OLD → NEW, ±SIZE,
# ∅ for none). Options before the subcommand (--extra-experimental-features X) are accepted.
log "nix $*"
args=()
while [ $# -gt 0 ]; do
  case $1 in --extra-experimental-features) shift 2;; *) args+=("$1"); shift;; esac
done
[ "${args[0]:-}" = store ] && [ "${args[1]:-}" = diff-closures ] && [ -n "${args[3]:-}" ] \
  || { echo "usage: nix store diff-closures FROM TO" >&2; exit 1; }
from=${args[2]}/system.conf
to=${args[3]}/system.conf
state() { awk -v u="$2" '$1 == "unit" && $2 == u { print $3 }' "$1"; }
for u in $( { awk '$1 == "unit" { print $2 }' "$from"; awk '$1 == "unit" { print $2 }' "$to"; } | sort -u); do
  a=$(state "$from" "$u"); b=$(state "$to" "$u")
  [ "$a" = "$b" ] && continue
  if [ -z "$a" ]; then size=+1.0; elif [ -z "$b" ]; then size=-1.0; else size=+0.0; fi
  echo "$u: ${a:-∅} → ${b:-∅}, $size KiB"
done
