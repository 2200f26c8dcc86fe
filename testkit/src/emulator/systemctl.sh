# systemctl is-active | list-units --failed | show --property=Environment --value | stop | reset-failed
log "systemctl $*"
cmd=${1:-}; shift || true
args=(); for a in "$@"; do case $a in --) ;; --*) ;; *) args+=("$a");; esac; done
timer_alive() { [ -f "$timers/$1.pid" ] && kill -0 "$(cat "$timers/$1.pid")" 2>/dev/null; }
case $cmd in
  is-active)
    u=${args[0]}
    case $u in
      *.timer) if timer_alive "${u%.timer}"; then echo active; exit 0; else echo inactive; exit 3; fi;;
    esac
    state=$(cat "$units/$u" 2>/dev/null || echo inactive)
    echo "$state"; [ "$state" = active ]
    ;;
  list-units)
    for f in "$units"/*; do
      [ -e "$f" ] || continue
      case $f in *.env) continue;; esac
      [ "$(cat "$f")" = failed ] && echo "$(basename "$f") loaded failed failed $(basename "$f")"
    done
    exit 0
    ;;
  show)
    cat "$units/${args[0]}.env" 2>/dev/null || true
    ;;
  stop)
    u=${args[0]}; t=${u%.timer}
    if [ -f "$timers/$t.pid" ]; then
      kill -- "-$(cat "$timers/$t.pid")" 2>/dev/null || true
      rm -f "$timers/$t.pid"
      echo "stopped $t" >> "$HOST/log/timers"
    else
      echo "Failed to stop $u: Unit $u not loaded." >&2; exit 5
    fi
    ;;
  reset-failed)
    for u in "${args[@]}"; do [ "$(cat "$units/$u" 2>/dev/null)" = failed ] && echo inactive > "$units/$u"; done
    exit 0
    ;;
  *) echo "systemctl stand-in: unsupported command $cmd" >&2; exit 1;;
esac
