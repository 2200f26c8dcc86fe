# <system>/bin/switch-to-configuration test|boot|switch|dry-activate: applies the units of
# <system>/system.conf; dry-activate only says, on stderr as the real one does, which units it
# would stop, restart and start (a unit whose line differs is restarted).
# Lines: `unit NAME STATE [KEY=VALUE ...]`, `activate-exit N`. Exits 4 when any unit is failed
# afterwards (failing before or not), as the real one does.
system=$(dirname "$(dirname "$0")")
mode=${1:-}
log "switch-to-configuration $mode $system"
case $mode in test|switch|boot|dry-activate) ;; *) echo "usage: switch-to-configuration test|boot|switch|dry-activate" >&2; exit 1;; esac
if [ "$mode" = dry-activate ]; then
  old="$HOST/run/current-system/system.conf"
  line() { grep -m1 "^unit $2 " "$1" 2>/dev/null; }
  names() { awk '$1 == "unit" { print $2 }' "$1" 2>/dev/null; }
  stop=(); restart=(); start=()
  for u in $(names "$old"); do line "$system/system.conf" "$u" > /dev/null || stop+=("$u"); done
  for u in $(names "$system/system.conf"); do
    if ! old_line=$(line "$old" "$u"); then start+=("$u")
    elif [ "$old_line" != "$(line "$system/system.conf" "$u")" ]; then restart+=("$u"); fi
  done
  say() { local verb=$1; shift; [ $# -gt 0 ] && echo "would $verb the following units: $(printf '%s, ' "$@" | sed 's/, $//')" >&2; true; }
  say stop "${stop[@]}"
  echo "would activate the configuration..." >&2
  say restart "${restart[@]}"
  say start "${start[@]}"
  exit 0
fi
echo "$mode $system" >> "$HOST/log/activations"
if [ "$mode" = boot ] || [ "$mode" = switch ]; then
  ln -sfn "$system" "$HOST/run/boot-default"
fi
[ "$mode" = boot ] && exit 0
if hard=$(grep -m1 '^activate-exit ' "$system/system.conf"); then
  echo "error: activation script failed" >&2
  exit "${hard#activate-exit }"
fi
ln -sfn "$system" "$HOST/run/current-system"
# Units the new system does not have are stopped; a failed one stays failed (not-found) until reset.
for f in "$units"/*; do
  [ -e "$f" ] || continue
  case $f in *.env) continue;; esac
  u=$(basename "$f")
  if ! grep -q "^unit $u " "$system/system.conf" && [ "$(cat "$f")" != failed ]; then rm -f "$f" "$f.env"; fi
done
while read -r kind u state env; do
  [ "$kind" = unit ] || continue
  echo "$state" > "$units/$u"
  echo "$env" > "$units/$u.env"
done < "$system/system.conf"
if grep -qx failed "$units"/* 2>/dev/null; then
  echo "warning: the following units failed: $(grep -lx failed "$units"/* | xargs -n1 basename | tr '\n' ' ')" >&2
  exit 4
fi
