# A stand-in for one NixOS host program, used by cc-ci's tests and by the demo (`cc-ci-demo`).
# It follows the real program's contract (arguments, exit codes, generation links, unit states)
# on a host laid out under $HOST instead of /.
set -euo pipefail
units="$HOST/run/units"
timers="$HOST/run/timers"
mkdir -p "$units" "$timers" "$HOST/log"
log() { printf '%s %s\n' "$(date +%s.%N)" "$*" >> "$HOST/log/calls"; }
