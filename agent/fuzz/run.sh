#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints one line per target for docs/reliability.md:
#   agent/fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seeds come from the
# repository's own corpora (tests/enrollment, tests/config, tests/bad-input, the docker fixtures).
# A crash leaves its input under agent/fuzz/artifacts/<target>/ and fails this script; turn it
# into a regression test in the agent's tests before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
root=$(cd ../.. && pwd)
targets=(enrollment config release_tag ls_remote forge_json health_report junit)

seed() {
  local target=$1 dir=corpus/$1 tag
  mkdir -p "$dir"
  case $target in
    enrollment) cp "$root"/tests/enrollment/valid/*.toml "$root"/tests/enrollment/invalid/*.toml "$dir"/ ;;
    config) cp "$root"/tests/config/valid/*.toml "$root"/tests/config/invalid/*.toml "$dir"/ ;;
    release_tag) for tag in 1.0.0+1 2.0.0-rc.1+x 10.0.0+2.1 v1.0.0 01.2.3+4; do printf '%s\n1.0.0+1' "$tag" > "$dir/$tag"; done ;;
    ls_remote) printf '%s\trefs/heads/main\n%s\trefs/tags/1.0.0+1\n%s\trefs/tags/1.0.0+1^{}\n' \
                 "$(printf 'a%.0s' {1..40})" "$(printf 'b%.0s' {1..40})" "$(printf 'c%.0s' {1..40})" > "$dir/seed" ;;
    forge_json) cp "$root"/agent/tests/fixtures/docker/*.json "$root"/agent/tests/fixtures/docker/*.txt "$dir"/
                printf '[{"number": 1, "title": "x", "head": {"sha": "%s"}}]' "$(printf 'a%.0s' {1..40})" > "$dir/pulls" ;;
    health_report) printf 'plausible\x1fmirror behind\x1fcustom-html\x1ftests missing' > "$dir/seed" ;;
    junit) cp "$root"/tests/junit/pytest-7.2/*.xml "$root"/tests/junit/hostile/*.xml "$dir"/ ;;
  esac
}

cargo +nightly fuzz build -O >/dev/null
status=0
for t in "${targets[@]}"; do
  seed "$t"
  log=$(mktemp)
  start=$(date +%s)
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see agent/fuzz/artifacts/$t/)"; status=1
  fi
  runs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  echo "| \`$t\` | $(( $(date +%s) - start )) s | ${runs:-?} | ${cov:-?} | $result |"
  [ "$result" = ok ] || tail -30 "$log" >&2
  rm -f "$log"
done
exit $status
