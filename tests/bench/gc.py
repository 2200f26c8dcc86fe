#!/usr/bin/env python3
"""Benchmark of `cc-ci-agent gc` against the coreutils doing the same work, in one run.

    python3 tests/bench/gc.py [--volumes 20] [--files 2000] [--runs 5] [--agent target/release/cc-ci-agent]

Builds V directory volumes of F files (4 KiB each, in 20 subdirectories), and times:
  inventory  `gc --dry-run` (walk, size, label, lock probe, plan)  vs `du -s -B1` over the same root
  delete     `gc` deleting every volume (journalled, moved aside, removed)  vs `rm -rf` of the same
Medians of --runs runs; the tree is rebuilt before each delete run. Not a test: it prints ratios;
docs/performance.md records them.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def build(root, volumes, files):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    block = b"x" * 4096
    for v in range(volumes):
        vol = os.path.join(root, f"r{v}_1.0.0+{v}")
        for d in range(20):
            os.makedirs(os.path.join(vol, f"d{d}"))
        for f in range(files):
            with open(os.path.join(vol, f"d{f % 20}", f"f{f}"), "wb") as fh:
                fh.write(block)
        old = time.time() - 30 * 86400
        for dirpath, dirnames, filenames in os.walk(vol, topdown=False):
            for n in filenames + dirnames:
                os.utime(os.path.join(dirpath, n), (old, old))
            os.utime(dirpath, (old, old))


def timed(cmd, ok=(0,)):
    t = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    d = time.monotonic() - t
    if r.returncode not in ok:
        sys.exit(f"{cmd} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return d


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--volumes", type=int, default=20)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--agent", default="target/release/cc-ci-agent")
    a = p.parse_args()
    agent = os.path.abspath(a.agent)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "volumes")
        with open(os.path.join(tmp, "enrollment.toml"), "w") as f:
            f.write('[recipe.r0]\nupstream = "https://git.example.org/r0.git"\n')
        config = os.path.join(tmp, "agent.toml")
        with open(config, "w") as f:
            f.write('enrollment_file = "enrollment.toml"\nstate_dir = "state"\n[disk]\nbudget = 1\ngrace = "1d"\n'
                    '[disk.volumes]\nkind = "directory"\nroot = "volumes"\n')
        gc = [agent, "--config", config, "gc"]

        build(root, a.volumes, a.files)
        inv, du = [], []
        for _ in range(a.runs):
            du.append(timed(["du", "-s", "-B1", root]))
            inv.append(timed(gc + ["--dry-run"]))
        dele, rm = [], []
        for _ in range(a.runs):
            build(root, a.volumes, a.files)
            rm.append(timed(["rm", "-rf", root]))
            build(root, a.volumes, a.files)
            dele.append(timed(gc))
            assert not os.listdir(root), "gc left volumes behind"
        total = a.volumes * a.files
        print(f"{a.volumes} volumes x {a.files} files ({total} files, {total * 4 // 1024} MiB), median of {a.runs}:")
        i, d = statistics.median(inv), statistics.median(du)
        print(f"  inventory  gc --dry-run {i:.3f} s   du -s {d:.3f} s   ratio {i / d:.2f}x")
        g, r = statistics.median(dele), statistics.median(rm)
        print(f"  delete     gc           {g:.3f} s   rm -rf {r:.3f} s   ratio {g / r:.2f}x")


if __name__ == "__main__":
    main()
