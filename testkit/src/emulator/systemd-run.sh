# systemd-run --unit=NAME --on-active=Ns [--property=...] -- ARGV...: a transient timer. It lives in
# its own session, so killing the caller does not cancel it; `systemctl stop NAME.timer` does.
log "systemd-run $*"
unit=""; delay=""
while [ $# -gt 0 ]; do
  case $1 in
    --unit=*) unit=${1#--unit=};;
    --on-active=*) delay=${1#--on-active=}; delay=${delay%s};;
    --) shift; break;;
  esac
  shift
done
[ -n "$unit" ] && [ -n "$delay" ] && [ $# -gt 0 ] || { echo "usage: systemd-run --unit=NAME --on-active=Ns -- ARGV..." >&2; exit 1; }
setsid bash -c '
  sleep "$1"; shift
  pidfile=$1; name=$2; shift 2
  rm -f "$pidfile"
  echo "fired $name" >> "'"$HOST"'/log/timers"
  exec "$@"' _ "$delay" "$timers/$unit.pid" "$unit" "$@" \
  >> "$HOST/log/$unit.log" 2>&1 < /dev/null &
echo $! > "$timers/$unit.pid"
echo "armed $unit $delay" >> "$HOST/log/timers"
echo "Running timer as unit: $unit.timer"
