# <system>/bin/switch-to-configuration test|boot|switch: applies the units of <system>/system.conf.
# Lines: `unit NAME STATE [KEY=VALUE ...]`, `activate-exit N`. Exits 4 when any unit is failed
# afterwards (failing before or not), as the real one does.
system=$(dirname "$(dirname "$0")")
mode=${1:-}
log "switch-to-configuration $mode $system"
case $mode in test|switch|boot) ;; *) echo "usage: switch-to-configuration test|boot|switch" >&2; exit 1;; esac
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
