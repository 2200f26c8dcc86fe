#!/usr/bin/env python3
"""What the deploy timer costs on an idle host: `cc-ci-agent deploy --auto` when nothing landed,
against `git ls-remote` of the same branch alone (the one round trip it is meant to cost), in the
same run.

    cargo build --release --bins && python3 tests/bench/deploy_idle.py [--runs 20]

The host is the demo's (an emulated NixOS host, a flake checkout with an upstream), brought to
"deployed, nothing new": a fix is landed and deployed once, then every timer run should find
nothing to do. Prints median wall time and peak RSS of each, and their ratio.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from mirrors import git, measured  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--target", default=os.path.join(ROOT, "target", "release"))
    args = p.parse_args()
    agent = os.path.join(args.target, "cc-ci-agent")
    demo = os.path.join(args.target, "cc-ci-demo")
    with tempfile.TemporaryDirectory() as scratch:
        where = os.path.join(scratch, "demo")
        subprocess.run([demo, "--dir", where], check=True, stdout=subprocess.DEVNULL)
        config = os.path.join(where, "agent.toml")
        flake = os.path.join(where, "flake")
        # The demo ends on a change that rolled back; land a fix, and deploy it once.
        conf = os.path.join(flake, "host", "cc-ci.conf")
        with open(conf) as f:
            text = f.read().replace("unit cc-ci-sweep.service failed\n", "")
        with open(conf, "w") as f:
            f.write(text)
        git("-c", "user.name=b", "-c", "user.email=b@example.org", "commit", "-qam", "fix", cwd=flake)
        git("push", "-q", cwd=flake)
        env = dict(os.environ, CC_CI_LOG="warn")
        first = subprocess.run([agent, "--config", config, "deploy", "--auto"], env=env,
                               capture_output=True, text=True)
        if first.returncode != 0:
            sys.exit(f"the first deploy did not deploy ({first.returncode}): {first.stdout}{first.stderr}")
        idle = subprocess.run([agent, "--config", config, "deploy", "--auto"], env=env,
                              capture_output=True, text=True, check=True)
        assert "nothing new" in idle.stdout, idle.stdout
        origin = git("-C", flake, "remote", "get-url", "origin").strip()
        rows = []
        for name, cmd in [
            ("deploy --auto (idle)", [agent, "--config", config, "deploy", "--auto"]),
            ("git ls-remote", ["git", "ls-remote", "--", origin, "refs/heads/main"]),
        ]:
            runs = [measured(cmd) for _ in range(args.runs)]
            rows.append((name, statistics.median(s for s, _ in runs), max(r for _, r in runs)))
    for name, secs, rss in rows:
        print(f"{name:<22} median {secs * 1000:7.1f} ms   peak RSS {rss / 1024:6.1f} MiB")
    (_, a, ra), (_, g, rg) = rows
    print(f"ratio (agent / git ls-remote): time {a / g:.1f}x, RSS {ra / rg:.1f}x")


if __name__ == "__main__":
    main()
