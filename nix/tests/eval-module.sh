#!/usr/bin/env bash
# Evaluates nix/module.nix with lib.evalModules on a machine without nixpkgs, given a nixpkgs lib:
#   NIXPKGS_LIB=/path/to/nixpkgs.lib nix/tests/eval-module.sh [path/to/cc-ci-agent]
# (NIXPKGS_LIB is a checkout of nixpkgs or of nix-community/nixpkgs.lib: a directory with lib/.)
# Each case in nix/tests/eval/module.nix checks itself; this script adds what needs the agent:
# the agent must accept the agent.toml the module renders and agree with it on POLL_REPOS.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${NIXPKGS_LIB:-}" ] && [ -f ../shared/nixpkgs-lib/lib/default.nix ]; then
  NIXPKGS_LIB=$(cd ../shared/nixpkgs-lib && pwd)
fi
if [ -z "${NIXPKGS_LIB:-}" ]; then
  echo "module evaluation: NOT RUN HERE: NIXPKGS_LIB is not set and ../shared/nixpkgs-lib is missing," \
       "so lib.evalModules cannot run (set it to a checkout of nixpkgs.lib at the flake's pin)"
  # CI must evaluate: there a missing lib is a failure, never a skip.
  [ -z "${CI:-}" ] || exit 1
  exit 0
fi
[ -f "$NIXPKGS_LIB/lib/default.nix" ] || { echo "NIXPKGS_LIB=$NIXPKGS_LIB has no lib/default.nix" >&2; exit 2; }

agent=$(realpath "${1:-target/debug/cc-ci-agent}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

evaluate() { nix-instantiate --eval --strict --json nix/tests/eval/module.nix --arg nixpkgsLib "$NIXPKGS_LIB" --argstr case "$1"; }
raw() { nix --extra-experimental-features nix-command eval --raw -f nix/tests/eval/module.nix \
          --arg nixpkgsLib "$NIXPKGS_LIB" --argstr case "$1" "$2"; }
fail() { echo "module evaluation: FAILED: $*" >&2; exit 1; }

for case in example settings-override duration-bad tier-bad secrets deploy-unit deploy-auto deploy-auto-no-flake deploy-signed probe-job drone-no-token drone-plain-http insecure-drone vm-deploy-host mirrors-job sweep-job sweep-ci-user sweep-run-as-agent health-job gc-job gc-docker no-sweep-command forge-gitea-incomplete token-in-store token-relative token-in-settings bridge-missing deploy-check-both disk-root-missing disk-docker-disabled status-page status-page-vhost-alone deploy-stop-on-removal state-dir-mode deploy-network paths-missing forge-kind-missing no-forge-no-flake values-checked sweep-sandbox stagger package-check-inputs flake-systems cc-ci-command; do
  out=$(evaluate "$case") || fail "case $case"
  case $case in token-*|bridge-*|forge-*|drone-*|deploy-check-*|disk-*|duration-*|tier-*|*-no-flake|*-vhost-alone|sweep-run-as-*) echo "module evaluation: $case: refused with ${out:0:110}...";; *) echo "module evaluation: $case: ok";; esac
done

# The VM tests evaluate: every node and specialisation with the module (assertions held, units
# rendered), no import from derivation; then their scripts against the test driver's API.
if ! nix-instantiate --eval --strict --json nix/tests/eval/vm-tests.nix --arg nixpkgsLib "$NIXPKGS_LIB" \
     > "$work/vm-tests.json" 2> "$work/vm-tests.err"; then
  cat "$work/vm-tests.err" >&2
  if grep -q "opening file '/nix/store/" "$work/vm-tests.err"; then
    echo "a file a derivation builds was read during evaluation (import from derivation, which" \
         "a flake check refuses): give the module a file of the repository" >&2
  fi
  fail "the VM tests do not evaluate"
fi
python3 nix/tests/check-test-scripts.py "$work/vm-tests.json" | sed 's/^/module evaluation: /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "a VM test's script does not fit the test driver"

# docs/nixos.md opens with a minimal host; it is evaluated as it stands there, beside the
# example host's enrollment.
mkdir -p "$work/minimal"
awk '/^<!-- minimal host: evaluated/{on=1; next} on && /^```nix/{code=1; next} code && /^```/{exit} code' \
  docs/nixos.md > "$work/minimal/configuration.nix"
[ -s "$work/minimal/configuration.nix" ] || fail "docs/nixos.md has no minimal host to evaluate"
cp nix/hosts/cc-ci/enrollment.toml "$work/minimal/enrollment.toml"
nix-instantiate --eval --strict --json nix/tests/eval/module.nix --arg nixpkgsLib "$NIXPKGS_LIB" \
  --argstr case minimal-host --arg minimalHost "$work/minimal/configuration.nix" > "$work/minimal.json" \
  || fail "docs/nixos.md's minimal host does not evaluate"
echo "module evaluation: minimal-host (docs/nixos.md): $(cat "$work/minimal.json")"

# docs/nixos.md's options table is the one the module's declarations render.
raw options-doc text > "$work/options.md"
documented() { awk '/^<!-- options: generated/{on=1; next} /^<!-- options: end -->/{on=0} on && /^\|/' docs/nixos.md; }
if [ "${CC_CI_WRITE_OPTIONS_DOC:-}" = 1 ]; then
  awk -v table="$work/options.md" '
    /^<!-- options: generated/ { print; inblock=1; next }
    inblock && /-->$/ && !printed { print; print ""; while ((getline line < table) > 0) print line; print ""; printed=1; next }
    /^<!-- options: end -->/ { inblock=0 }
    inblock && printed { next }
    { print }' docs/nixos.md > "$work/nixos.md"
  cp "$work/nixos.md" docs/nixos.md
  echo "module evaluation: options-doc: docs/nixos.md rewritten"
fi
diff -u <(documented) "$work/options.md" > "$work/options.diff" \
  || { cat "$work/options.diff" >&2; fail "docs/nixos.md's options table differs from the module (regenerate: CC_CI_WRITE_OPTIONS_DOC=1 $0)"; }
echo "module evaluation: options-doc: docs/nixos.md's table is the module's ($(wc -l < "$work/options.md") lines)"

# The module and the agent agree on POLL_REPOS, and the agent accepts the rendered agent.toml.
raw example agentToml > "$work/agent.toml"
module_poll=$(raw example pollRepos)
agent_poll=$("$agent" enrollment --file nix/hosts/cc-ci/enrollment.toml poll-repos)
[ "$module_poll" = "$agent_poll" ] || fail "module renders '$module_poll', agent '$agent_poll'"
via_config=$("$agent" --config "$work/agent.toml" enrollment poll-repos) || fail "the agent refuses the rendered agent.toml"
[ "$via_config" = "$module_poll" ] || fail "through agent.toml the agent renders '$via_config'"
echo "module evaluation: example: POLL_REPOS agrees (module, agent, agent via rendered agent.toml): ${module_poll:0:40}..."

raw deploy-signed agentToml > "$work/signed.toml"
"$agent" --config "$work/signed.toml" enrollment poll-repos > /dev/null || fail "the agent refuses deploy.allowed_signers"

raw probe-job agentToml > "$work/probe.toml"
"$agent" --config "$work/probe.toml" enrollment poll-repos > /dev/null || fail "the agent refuses the rendered [probe] and Drone busy checks"
echo "module evaluation: probe-job: the agent accepts the rendered [probe] and the Drone busy checks"

raw insecure-drone agentToml > "$work/insecure-drone.toml"
"$agent" --config "$work/insecure-drone.toml" enrollment poll-repos > /dev/null || fail "the agent refuses the rendered http:// Drone with allow_insecure"
echo "module evaluation: insecure-drone: the agent accepts an http:// Drone with allow_insecure"

raw settings-override agentToml > "$work/override.toml"
"$agent" --config "$work/override.toml" enrollment poll-repos > /dev/null || fail "the agent refuses the overridden settings"
echo "module evaluation: settings-override: settings win over the typed options, and the agent accepts the result"

raw rendered agentToml > "$work/rendered.toml"
grep -qx 'tests_dir = "/var/lib/cc-ci-tests"' "$work/rendered.toml" || fail "testsDir not rendered"
grep -qx 'budget = 1073741824' "$work/rendered.toml" || fail "disk.budget not rendered"
grep -qx 'flake = "/srv/cc-ci#cc-ci"' "$work/rendered.toml" || fail "deploy.flake not rendered"
grep -qx '\[\[deploy.checks\]\]' "$work/rendered.toml" || fail "deploy.checks not rendered"
grep -qx 'state_dir = "/var/lib/cc-ci-deploy"' "$work/rendered.toml" || fail "the deploy journal is not root's own directory"
"$agent" --config "$work/rendered.toml" enrollment poll-repos > /dev/null || fail "the agent refuses the rendered options"
echo "module evaluation: rendered: testsDir, disk.budget and deploy.* reach agent.toml and the agent accepts them"

raw health-job agentToml > "$work/health.toml"
grep -qx 'metrics_file = "/var/lib/node-exporter/cc-ci.prom"' "$work/health.toml" || fail "health.metrics_file not rendered"
grep -qx 'report_url = "http://127.0.0.1:8080/cc-ci/health"' "$work/health.toml" || fail "bridge.report_url not rendered"
"$agent" --config "$work/health.toml" enrollment poll-repos > /dev/null || fail "the agent refuses the rendered [health]"

raw sweep-job agentToml > "$work/sweep.toml"
grep -qx 'command = \[ "/srv/ci/run", "{recipe}", "{version}", "{base}" \]' "$work/sweep.toml" || fail "sweep.command not rendered"
"$agent" --config "$work/sweep.toml" enrollment poll-repos > /dev/null || fail "the agent refuses the rendered [sweep]"
echo "module evaluation: sweep-job: sweep.* reach agent.toml and the agent accepts them"

raw gc-docker agentToml > "$work/gc-docker.toml"
grep -qx 'kind = "docker"' "$work/gc-docker.toml" || fail "disk.volumes.kind not rendered"
set +e; "$agent" --config "$work/gc-docker.toml" gc --dry-run > /dev/null 2>&1; code=$?; set -e
# The docker CLI named there is not on this machine: the agent reads the config, then fails to run it (1).
[ "$code" = 1 ] || fail "gc on the rendered docker [disk]: exit $code (2 would be a refused config)"
"$agent" --config "$work/gc-docker.toml" enrollment poll-repos > /dev/null || fail "the agent refuses the rendered docker [disk]"
echo "module evaluation: gc-docker: disk.* reach agent.toml and the agent accepts them"

# A key the agent does not know fails loudly at the agent, naming the key.
raw unknown-setting agentToml > "$work/unknown.toml"
set +e; err=$("$agent" --config "$work/unknown.toml" enrollment poll-repos 2>&1); code=$?; set -e
[ "$code" = 2 ] && [[ "$err" == *": colour: unknown field"* ]] || fail "unknown setting: exit $code: $err"
echo "module evaluation: unknown-setting: the agent refuses it: $err"

# An invalid enrollment stops evaluation, naming the file and the key.
set +e; err=$(evaluate invalid-enrollment 2>&1); code=$?; set -e
[ "$code" != 0 ] && [[ "$err" == *"name-uppercase.toml: recipe.A: "* ]] || fail "invalid enrollment evaluated: $err"
echo "module evaluation: invalid-enrollment: refused: $(echo "$err" | head -1)"
echo "module evaluation: all cases passed"
