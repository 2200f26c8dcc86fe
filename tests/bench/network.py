#!/usr/bin/env python3
"""Benchmark of `cc-ci-agent mirrors sync` over the network shape of the real host, in one run.

    python3 tests/bench/network.py [--recipes 19,200] [--runs 5] [--rtt-ms 50]
                                   [--agent target/release/cc-ci-agent]

Both forges speak git's smart HTTP over TLS on 127.0.0.1 (`git http-backend` behind Python's TLS
server, HTTP/1.1 with keep-alive; the mirrors' forge also answers the Gitea API calls a sync
makes), each behind a userspace delay proxy that holds every byte 25 ms in each direction (50 ms
round trip), and a connection's first bytes one round trip more: the TCP handshake, which the
kernel completes on loopback at once. Never netem on the shared loopback device. A CA made by the
bench is trusted by git (`GIT_SSL_CAINFO`) and by the agent (`SSL_CERT_FILE`).

For each fleet size it prints, over --runs runs (min / median / max):
  no-change  the agent's sync when nothing changed
  floor      like for like: one `git ls-remote` per side per recipe, 8 at a time (the agent's
             concurrency), with the same refs asked
  limit      one round trip per recipe per side / concurrency, plus one TCP and one TLS
             handshake (two round trips) per forge
and the agent's cost in round trips per recipe per side at that concurrency, the TLS handshakes
and forge API requests of an idle sync, and the API requests of a sync with one changed recipe.
For the first size it also times a cold sync (every mirror made and filled) against the naive
script (clone, push, serially) over the same network. Not a test: docs/performance.md records it.
"""
import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirrors import free_port, make_template, measured  # noqa: E402  (the same measurement as the fleet bench)
from tags import ENV, ORG, TOKEN, Forge, git  # noqa: E402  (the same forge stand-in)

CONCURRENCY = 8


# The servers: each forge in a process of its own, so one's Python never waits for the other's.

class CountingForge(Forge):
    """The tags bench's forge over HTTP/1.1 with keep-alive, counting TLS handshakes and API
    requests; `GET /_stats` answers the counts."""
    protocol_version = "HTTP/1.1"
    counts = {"handshakes": 0, "api": 0, "git": 0}
    lock = threading.Lock()

    def setup(self):
        # The handshake here, in the connection's own thread: done in accept() it would make
        # every client wait for every other client's handshake.
        self.request.do_handshake()
        with self.lock:
            self.counts["handshakes"] += 1
        super().setup()

    def count(self, what):
        with self.lock:
            self.counts[what] += 1

    def do_GET(self):
        if self.path == "/_stats":
            with self.lock:
                body = json.dumps(self.counts).encode()
            return self.reply(200, body)
        self.count("api" if self.path.startswith("/api/") else "git")
        super().do_GET()

    def do_POST(self):
        self.count("api" if self.path.startswith("/api/") else "git")
        super().do_POST()


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port, context):
        super().__init__(("127.0.0.1", port), CountingForge)
        self.context = context

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def serve(port, root, cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    CountingForge.root = root
    TlsServer(port, context).serve_forever()


# The delay proxy.

async def proxied(client_r, client_w, target, delay):
    loop = asyncio.get_running_loop()
    opened = loop.time()
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_w.close()
        return

    async def pump(src, dst, not_before):
        queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    try:
                        dst.write_eof()
                    except OSError:
                        pass
                    return
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        while True:
            try:
                data = await src.read(256 * 1024)
            except OSError:
                data = b""
            due = max(loop.time() + delay, not_before)
            queue.put_nowait((due, data or None))
            if not data:
                break
        await sender

    # Client to server: nothing arrives before the SYN, SYN-ACK and first data have crossed.
    await asyncio.gather(pump(client_r, server_w, opened + 3 * delay),
                         pump(server_r, client_w, 0.0), return_exceptions=True)
    for w in (client_w, server_w):
        w.close()


def proxy(pairs, delay):
    async def main():
        servers = [await asyncio.start_server(
            lambda r, w, t=target: proxied(r, w, t, delay), "127.0.0.1", listen, backlog=256)
            for listen, target in pairs]
        await asyncio.gather(*(s.serve_forever() for s in servers))
    asyncio.run(main())


# The bench.

def make_ca(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-days", "2", "-subj", "/CN=cc-ci bench CA", *ec, "-keyout", "ca.key",
        "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-subj", "/CN=127.0.0.1", *ec, "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "server.ext", "-out", "server.pem")
    return [os.path.join(d, f) for f in ("ca.pem", "server.pem", "server.key")]


def wait_listening(port, ca):
    context = ssl.create_default_context(cafile=ca)
    for _ in range(400):
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/_stats", context=context, timeout=5)
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def stats(port, ca):
    """The server's counts, less this request's own handshake."""
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/_stats", context=context) as r:
        counts = json.load(r)
    counts["handshakes"] -= 1
    return counts


def fleet(root, names):
    """Upstreams under root/up/up/<name>.git (served as /up/<name>.git), each with history and
    five release tags, like the loopback bench's."""
    tpl = os.path.join(root, "template")
    if not os.path.isdir(tpl):
        make_template(tpl)
    for name in names:
        bare = os.path.join(root, "up", "up", f"{name}.git")
        if os.path.isdir(bare):
            continue
        git("clone", "-q", "--bare", tpl, bare)
        tree = git("rev-parse", "main^{tree}", cwd=bare).strip()
        head = git("commit-tree", tree, "-p", "main", "-m", name, cwd=bare).strip()
        git("update-ref", "refs/heads/main", head, cwd=bare)


def advance(bare):
    tree = git("rev-parse", "main^{tree}", cwd=bare).strip()
    head = git("commit-tree", tree, "-p", "main", "-m", "new work", cwd=bare).strip()
    git("update-ref", "refs/heads/main", head, cwd=bare)


def spread(xs):
    return f"{min(xs):6.2f} / {statistics.median(xs):6.2f} / {max(xs):6.2f} s"


class Bench:
    def __init__(self, root, agent, ports, ca, rtt):
        self.root, self.agent, self.ca, self.rtt = root, agent, ca, rtt
        self.up_url = f"https://127.0.0.1:{ports['up']}/up"
        self.forge_url = f"https://127.0.0.1:{ports['mirror']}"
        self.mirror_port = ports["mirror_direct"]
        self.env = dict(ENV, SSL_CERT_FILE=ca, GIT_SSL_CAINFO=ca)
        with open(os.path.join(root, "token"), "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(os.path.join(root, "token"), 0o600)

    def config(self, tag, names):
        state = os.path.join(self.root, f"state-{tag}")
        with open(os.path.join(self.root, f"enrollment-{tag}.toml"), "w") as f:
            f.write(f'[defaults]\nupstream = "{self.up_url}/{{recipe}}.git"\n')
            for n in names:
                f.write(f"\n[recipe.{n}]\n")
        path = os.path.join(self.root, f"agent-{tag}.toml")
        with open(path, "w") as f:
            f.write(f'enrollment_file = "enrollment-{tag}.toml"\nstate_dir = "{state}"\n\n'
                    f'[forge]\nkind = "gitea"\nurl = "{self.forge_url}"\norg = "{tag}"\ntoken_file = "token"\n\n'
                    f'[mirrors]\nconcurrency = {CONCURRENCY}\nclose_merged_prs = true\n')
        os.makedirs(os.path.join(self.root, "mirrors", tag), exist_ok=True)
        return [self.agent, "--config", path, "mirrors", "sync"], state

    def timed(self, cmd):
        return measured(cmd, env=self.env)[0]

    def floor(self, tag, names):
        script = os.path.join(self.root, f"floor-{tag}.sh")
        header = f"http.extraHeader=Authorization: token {TOKEN}"
        with open(script, "w") as f:
            f.write("#!/bin/sh\nfor r in " + " ".join(names) + "; do\n"
                    f"  echo '{self.up_url}/'$r.git\n  echo '{self.forge_url}/{tag}/'$r.git\ndone | "
                    f"xargs -P {CONCURRENCY} -I U git -c '{header}' ls-remote U refs/heads/main 'refs/tags/*' >/dev/null\n")
        os.chmod(script, 0o755)
        return [script]

    def naive(self, tag, names):
        scratch = os.path.join(self.root, f"naive-{tag}")
        script = os.path.join(self.root, f"naive-{tag}.sh")
        header = f"http.extraHeader=Authorization: token {TOKEN}"
        mirrors = os.path.join(self.root, "mirrors", tag)
        with open(script, "w") as f:
            f.write(f"""#!/bin/sh
set -e
for r in {' '.join(names)}; do
  rm -rf {scratch}
  git clone -q --bare {self.up_url}/$r.git {scratch}
  [ -d {mirrors}/$r.git ] || git init -q --bare {mirrors}/$r.git
  git -C {scratch} -c '{header}' push -q --force {self.forge_url}/{tag}/$r.git main 'refs/tags/*:refs/tags/*'
done
""")
        os.chmod(script, 0o755)
        return [script]

    def stats(self):
        return stats(self.mirror_port, self.ca)

    def cold(self, names, runs):
        agent, naive = [], []
        for i in range(runs):
            cmd, state = self.config(f"cold{i}", names)
            agent.append(self.timed(cmd))
            naive_tag = f"naive{i}"
            os.makedirs(os.path.join(self.root, "mirrors", naive_tag), exist_ok=True)
            naive.append(self.timed(self.naive(naive_tag, names)))
        return agent, naive

    def idle(self, names, runs):
        tag = f"idle{len(names)}"
        cmd, _ = self.config(tag, names)
        self.timed(cmd)  # the cold sync that makes the mirrors
        before = self.stats()
        agent = [self.timed(cmd) for _ in range(runs)]
        after = self.stats()
        floor = [self.timed(self.floor(tag, names)) for _ in range(runs)]
        handshakes = (after["handshakes"] - before["handshakes"] - 1) / runs
        api = (after["api"] - before["api"]) / runs
        advance(os.path.join(self.root, "up", "up", f"{names[0]}.git"))
        before = self.stats()
        self.timed(cmd)
        changed = self.stats()
        changed_api = changed["api"] - before["api"] - api
        return agent, floor, handshakes, api, changed_api


def start(args, root):
    ca, cert, key = make_ca(root)
    ports = {k: free_port() for k in ("up", "mirror", "up_direct", "mirror_direct")}
    me = os.path.abspath(__file__)
    procs = [
        subprocess.Popen([sys.executable, me, "--serve", str(ports["up_direct"]), os.path.join(root, "up"), cert, key]),
        subprocess.Popen([sys.executable, me, "--serve", str(ports["mirror_direct"]), os.path.join(root, "mirrors"), cert, key]),
        # Its connections end when the bench kills it; what asyncio says about that is noise.
        subprocess.Popen([sys.executable, me, "--proxy", str(args.rtt_ms / 2000),
                          f"{ports['up']}:{ports['up_direct']}", f"{ports['mirror']}:{ports['mirror_direct']}"],
                         stderr=subprocess.DEVNULL),
    ]
    for p in ("up_direct", "mirror_direct", "up", "mirror"):
        wait_listening(ports[p], ca)
    return procs, ports, ca


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="19,200")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rtt-ms", type=float, default=50)
    ap.add_argument("--agent", default="target/release/cc-ci-agent")
    a = ap.parse_args()
    sizes = [int(n) for n in a.recipes.split(",")]
    root = tempfile.mkdtemp(prefix="cc-ci-net-")
    procs = []
    try:
        os.makedirs(os.path.join(root, "up", "up"))
        os.makedirs(os.path.join(root, "mirrors"))
        names = [f"recipe-{i:03d}" for i in range(max(sizes))]
        fleet(root, names)
        procs, ports, ca = start(a, root)
        bench = Bench(root, os.path.abspath(a.agent), ports, ca, a.rtt_ms / 1000)
        rtt = a.rtt_ms / 1000
        print(f"{a.rtt_ms:.0f} ms round trip, agent concurrency {CONCURRENCY}, {a.runs} runs each "
              f"(min / median / max)")
        cold_agent, cold_naive = bench.cold(names[:sizes[0]], a.runs)
        ratios = [n / g for n, g in zip(cold_naive, cold_agent)]
        print(f"cold sync of {sizes[0]}: agent {spread(cold_agent)}   naive script {spread(cold_naive)}"
              f"   -> {statistics.median(ratios):4.1f}x faster (median)")
        for n in sizes:
            agent, floor, handshakes, api, changed_api = bench.idle(names[:n], a.runs)
            limit = rtt * 2 * n / CONCURRENCY + 2 * rtt
            med = statistics.median(agent)
            per = med / rtt / (2 * n / CONCURRENCY)
            print(f"{n} recipes, no change: agent {spread(agent)}   floor {spread(floor)}   limit {limit:6.2f} s")
            print(f"    agent / limit {min(agent) / limit:4.2f} / {med / limit:4.2f} / {max(agent) / limit:4.2f}x"
                  f" (target <= 1.2x)   floor / agent {min(f / g for f, g in zip(floor, agent)):4.1f} / "
                  f"{statistics.median(f / g for f, g in zip(floor, agent)):4.1f} / "
                  f"{max(f / g for f, g in zip(floor, agent)):4.1f}x (target >= 5x)")
            print(f"    {per:4.2f} round trips per recipe per side at concurrency {CONCURRENCY}; "
                  f"TLS handshakes per idle sync (mirrors' forge): {handshakes:.0f}; "
                  f"API requests per idle sync: {api:.0f}, per changed recipe: {changed_api:.0f}")
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--proxy":
        proxy([tuple(int(p) for p in pair.split(":")) for pair in sys.argv[3:]], float(sys.argv[2]))
    else:
        main()
