#!/usr/bin/env python3
"""The status page at fleet scale, against `health --format json` on the same state, in one run.

    cargo build --release --bin cc-ci-agent --example status_fixture
    python3 tests/bench/status_page.py [--recipes 1000] [--runs 50] [--times 5]

Makes a state of N enrolled recipes with M judged runs each (tiers recorded), then times, best
of --times, `cc-ci-agent status-page --out SITE` and `cc-ci-agent health --format json`, and
prints the page's sizes. Not a test: docs/performance.md records the figures.
"""
import argparse
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best(cmd, times):
    out = []
    for _ in range(times):
        t = time.monotonic()
        # health exits 13 or 14 for a degraded or failed fleet: still an answer.
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert r.returncode in (0, 13, 14), r.stderr.decode()[-500:]
        out.append(time.monotonic() - t)
    return min(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--times", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to make the state (default: the system's temp dir)")
    a = ap.parse_args()
    agent = os.path.join(ROOT, "target/release/cc-ci-agent")
    fixture = os.path.join(ROOT, "target/release/examples/status_fixture")
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        t = time.monotonic()
        subprocess.run([fixture, d, str(a.recipes), str(a.runs)], check=True)
        print(f"state: {a.recipes} recipes x {a.runs} runs made in {time.monotonic() - t:.1f} s")
        config = os.path.join(d, "agent.toml")
        site = os.path.join(d, "site")
        page = best([agent, "--config", config, "status-page", "--out", site], a.times)
        health = best([agent, "--config", config, "--format", "json", "health"], a.times)
        index = os.path.getsize(os.path.join(site, "index.html"))
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(site) for f in fs)
        recipe = os.path.getsize(os.path.join(site, "recipe", "recipe-0000.html"))
        print(f"status-page: {page:.3f} s   health --format json: {health:.3f} s   ratio {page / health:.2f}")
        print(f"index.html {index / 1024:.0f} KiB, a recipe page {recipe / 1024:.0f} KiB, the site {total / 1048576:.1f} MiB")


if __name__ == "__main__":
    main()
