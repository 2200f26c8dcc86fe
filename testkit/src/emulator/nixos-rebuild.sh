# nixos-rebuild build --flake DIR#NAME: "evaluates" DIR/host/NAME.conf into a system in the store
# and links ./result to it, as nixos-rebuild build does.
log "nixos-rebuild $*"
[ "${1:-}" = build ] && [ "${2:-}" = --flake ] && [ -n "${3:-}" ] || { echo "usage: nixos-rebuild build --flake DIR#NAME" >&2; exit 1; }
dir=${3%#*}; name=${3##*#}
conf="$dir/host/$name.conf"
[ -f "$conf" ] || { echo "error: flake '$dir' does not provide attribute 'nixosConfigurations.$name'" >&2; exit 1; }
if grep -q '^build-fail' "$conf"; then
  echo "error: builder for '/nix/store/...-nixos-system-$name.drv' failed with exit code 1" >&2
  grep '^build-fail' "$conf" | cut -d' ' -f2- >&2
  exit 1
fi
# The store path's hash is the configuration's, in Nix's base-32 alphabet (no e, o, u, t).
hash=$(sha256sum "$conf" | head -c 32 | tr 'e' 'g')
out="$HOST/nix/store/$hash-nixos-system-$name"
if [ ! -d "$out" ]; then
  mkdir -p "$out/bin"
  cp "$conf" "$out/system.conf"
  ln -s "$HOST/bin/switch-to-configuration" "$out/bin/switch-to-configuration"
fi
ln -sfn "$out" result
echo "building the system configuration..."
