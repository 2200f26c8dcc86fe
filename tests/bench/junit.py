#!/usr/bin/env python3
"""Reading JUnit results as the sweep does, against `cat` of the same bytes, in one run.

    cargo build --release --example junit_read
    python3 tests/bench/junit.py [--reader target/release/examples/junit_read] [--runs 5]

Cases: a 10 MB pytest-format file of passing and failing test cases (read and summed), a 5 MB
one in UTF-8 and the same in UTF-16 (as .NET writes it), 2,000 files of one test class each (as
Surefire writes them), and the hostile files of tests/junit/hostile/ plus a 100,000-deep nesting
and a 20 MiB file (each refused). Time is the best of --runs; peak memory is the reader's (or cat's) largest resident
set (RUSAGE_CHILDREN of a fresh process per measurement). Not a test: it prints figures and
ratios; docs/performance.md records them.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measured(cmd):
    probe = ("import resource,subprocess,sys,time,json;t=time.monotonic();"
             "subprocess.run(json.loads(sys.argv[1]),stdout=subprocess.DEVNULL);"
             "d=time.monotonic()-t;"
             "print(d, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(cmd)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def best(cmd, runs):
    got = [measured(cmd) for _ in range(runs)]
    return min(t for t, _ in got), max(m for _, m in got)


def case_10mb(d, target=10_000_000):
    ok = ('<testcase classname="install.test_install" name="test_serves_the_index_page_of_a_fresh_install_{n}" '
          'file="install/test_install.py" line="12" time="0.01"/>')
    bad = ('<testcase classname="backup.test_backup" name="test_restore_{n}" time="0.02">'
           '<failure message="AssertionError: lost {n}">assert restored() == {n}</failure></testcase>')
    parts, size, n = [], 0, 0
    while size < target:
        piece = (bad if n % 10 == 0 else ok).format(n=n)
        parts.append(piece)
        size += len(piece)
        n += 1
    body = "".join(parts)
    with open(os.path.join(d, "junit.xml"), "w") as f:
        f.write(f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')
    return n


def case_utf16(src, d):
    with open(os.path.join(src, "junit.xml"), encoding="utf-8") as f:
        text = f.read().replace('encoding="utf-8"', 'encoding="utf-16"')
    with open(os.path.join(d, "junit.xml"), "wb") as f:
        f.write(text.encode("utf-16"))  # with its byte-order mark


def case_surefire(d, classes=2000, tests=10):
    for c in range(classes):
        cases = "".join(
            f'<testcase name="test{t}" classname="install.T{c}Test" time="0.001"/>' for t in range(tests))
        with open(os.path.join(d, f"TEST-install.T{c}Test.xml"), "w") as f:
            f.write(f'<?xml version="1.0" encoding="UTF-8"?><testsuite name="install.T{c}Test" '
                    f'tests="{tests}">{cases}</testsuite>')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reader", default=os.path.join(ROOT, "target/release/examples/junit_read"))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {}
        d = os.path.join(tmp, "10mb"); os.mkdir(d); n = case_10mb(d)
        cases[f"10 MB, {n} test cases"] = d
        u8 = os.path.join(tmp, "utf8-5mb"); os.mkdir(u8); n5 = case_10mb(u8, 5_000_000)
        cases[f"5 MB, {n5} test cases"] = u8
        u = os.path.join(tmp, "utf16"); os.mkdir(u); case_utf16(u8, u)
        cases["the same 5 MB in UTF-16"] = u
        d = os.path.join(tmp, "surefire"); os.mkdir(d); case_surefire(d)
        cases["2,000 files, 20,000 cases"] = d
        for name in sorted(os.listdir(os.path.join(ROOT, "tests/junit/hostile"))):
            d = os.path.join(tmp, name); os.mkdir(d)
            with open(os.path.join(ROOT, "tests/junit/hostile", name), "rb") as src:
                open(os.path.join(d, name), "wb").write(src.read())
            cases[name] = d
        d = os.path.join(tmp, "deep"); os.mkdir(d)
        open(os.path.join(d, "deep.xml"), "w").write("<a>" * 100_000 + "</a>" * 100_000)
        cases["100,000 deep"] = d
        d = os.path.join(tmp, "huge"); os.mkdir(d)
        with open(os.path.join(d, "huge.xml"), "w") as f:
            f.write("<testsuites>" + "<testcase classname=\"install.t\" name=\"x\"/>" * 500_000 + "</testsuites>")
        cases["20 MiB"] = d
        print(f"{'case':<28} {'bytes':>10} {'reader s':>9} {'cat s':>7} {'ratio':>6} {'reader KiB':>11} {'cat KiB':>8}")
        for name, d in cases.items():
            files = [os.path.join(d, f) for f in os.listdir(d)]
            size = sum(os.path.getsize(f) for f in files)
            rt, rm = best([a.reader, d], a.runs)
            ct, cm = best(["cat", *files], a.runs)
            print(f"{name:<28} {size:>10} {rt:>9.4f} {ct:>7.4f} {rt / ct:>6.1f} {rm:>11} {cm:>8}")


if __name__ == "__main__":
    main()
