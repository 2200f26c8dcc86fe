#!/usr/bin/env python3
"""Benchmark of filling one mirror with many tags over HTTP: the agent against `git push`, in one run.

    python3 tests/bench/tags.py [--tags 5000,10000,20000] [--agent target/release/cc-ci-agent]

For each size, one upstream recipe with that many commits, each tagged (every tenth annotated), is
served by git-daemon; the mirrors are served over HTTP by a small forge stand-in (the three Gitea
API calls a sync makes, and git's smart HTTP through `git http-backend`, as the test forge does).
It times:
  agent     `cc-ci-agent mirrors sync` creating and filling the empty mirror
  git push  `git push --atomic URL main 'refs/tags/*:refs/tags/*'` from a bare clone of upstream
            into another empty mirror on the same server: git's own cheapest push of the same refs
Peak memory is the largest resident set of the command or any child it ran. Not a test: it prints
times, ratios and memory; docs/performance.md records them.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirrors import measured, start_daemon  # noqa: E402  (the same measurement as the fleet bench)

ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.org",
           GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.org", LC_ALL="C")
ORG = "org"
TOKEN = "bench-token-0123456789"


def git(*args, cwd=None, stdin=None):
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, input=stdin,
                          capture_output=True, text=True).stdout


def upstream_with_tags(path, n):
    git("init", "-q", "--bare", "-b", "main", path)
    lines = []
    for i in range(1, n + 1):
        lines.append(f"commit refs/heads/main\nmark :{i}\ncommitter b <b@example.org> {1600000000 + i} +0000\n"
                     f"data 2\nc\nM 644 inline n\ndata {len(str(i))}\n{i}\n")
        if i % 10 == 0:
            lines.append(f"tag 1.{i}.0+2.{i}\nfrom :{i}\ntagger b <b@example.org> 1600000000 +0000\ndata 1\nr\n")
        else:
            lines.append(f"reset refs/tags/1.{i}.0+2.{i}\nfrom :{i}\n\n")
    subprocess.run(["git", "--git-dir", path, "fast-import", "--quiet"], input="".join(lines),
                   text=True, check=True, env=ENV)


class Forge(BaseHTTPRequestHandler):
    """GET/POST of repositories and an empty pull request list (Gitea API v1), and git's smart
    HTTP through `git http-backend` as a CGI program. Any `Authorization` is accepted: the
    bench measures pushes, not authentication."""
    root = ""

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def api(self, method):
        parts = self.path.split("?")[0].strip("/").split("/")[2:]
        if method == "GET" and parts[:1] == ["repos"] and len(parts) == 3:
            exists = os.path.isdir(os.path.join(self.root, parts[1], parts[2] + ".git"))
            return self.reply(200 if exists else 404, b'{"name":"x"}' if exists else b'{}')
        if method == "GET" and parts[-1:] == ["pulls"]:
            return self.reply(200, b"[]")
        if method == "POST" and parts[:1] == ["orgs"]:
            name = json.loads(self.body())["name"]
            git("init", "-q", "--bare", "-b", "main", os.path.join(self.root, parts[1], name + ".git"))
            return self.reply(201, b'{"name":"x"}')
        self.reply(404, b"{}")

    def cgi(self, method):
        path, _, query = self.path.partition("?")
        body = self.body() if method == "POST" else b""
        env = dict(ENV, GIT_PROJECT_ROOT=self.root, GIT_HTTP_EXPORT_ALL="1", REMOTE_USER="bench",
                   REMOTE_ADDR="127.0.0.1", PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD=method,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), CONTENT_LENGTH=str(len(body)))
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["HTTP_GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

    def do_GET(self):
        (self.api if self.path.startswith("/api/v1/") else self.cgi)("GET")

    def do_POST(self):
        (self.api if self.path.startswith("/api/v1/") else self.cgi)("POST")


def one_size(root, n, agent, forge_url, daemon_port):
    up_root = os.path.join(root, f"up-{n}")
    os.makedirs(up_root)
    upstream_with_tags(os.path.join(up_root, "recipe.git"), n)
    state = os.path.join(root, f"state-{n}")
    with open(os.path.join(root, f"enrollment-{n}.toml"), "w") as f:
        f.write(f'[recipe.big-{n}]\nupstream = "git://127.0.0.1:{daemon_port}/up-{n}/recipe.git"\n'
                "allow_insecure = true\n")
    config = os.path.join(root, f"agent-{n}.toml")
    with open(config, "w") as f:
        f.write(f'enrollment_file = "enrollment-{n}.toml"\nstate_dir = "{state}"\n\n[forge]\nkind = "gitea"\n'
                f'url = "{forge_url}"\norg = "{ORG}"\ntoken_file = "token"\nallow_insecure = true\n\n'
                '[mirrors]\ngit_timeout = "30m"\nclose_merged_prs = false\n')
    agent_s, agent_rss = measured([agent, "--config", config, "mirrors", "sync"])
    clone = os.path.join(root, f"clone-{n}.git")
    git("clone", "-q", "--bare", os.path.join(up_root, "recipe.git"), clone)
    git("init", "-q", "--bare", "-b", "main", os.path.join(Forge.root, ORG, f"baseline-{n}.git"))
    push_s, push_rss = measured(["git", "-C", clone, "push", "-q", "--atomic",
                                 f"{forge_url}/{ORG}/baseline-{n}.git", "main", "refs/tags/*:refs/tags/*"])
    mirrored = git("--git-dir", os.path.join(Forge.root, ORG, f"big-{n}.git"), "tag").count("\n")
    if mirrored != n:
        sys.exit(f"the agent mirrored {mirrored} of {n} tags")
    return agent_s, agent_rss, push_s, push_rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", default="5000,10000,20000")
    ap.add_argument("--agent", default="target/release/cc-ci-agent")
    a = ap.parse_args()
    agent = os.path.abspath(a.agent)
    root = tempfile.mkdtemp(prefix="cc-ci-bench-tags-")
    try:
        with open(os.path.join(root, "token"), "w") as f:
            f.write(TOKEN + "\n")
        Forge.root = os.path.join(root, "forge")
        os.makedirs(os.path.join(Forge.root, ORG))
        server = ThreadingHTTPServer(("127.0.0.1", 0), Forge)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        forge_url = f"http://127.0.0.1:{server.server_address[1]}"
        daemon, port = start_daemon(root)
        print(f"{'tags':>6}  {'agent':>8} {'RSS':>8}  {'git push':>9} {'RSS':>8}  {'git/agent':>9}")
        try:
            for n in [int(x) for x in a.tags.split(",")]:
                agent_s, agent_rss, push_s, push_rss = one_size(root, n, agent, forge_url, port)
                print(f"{n:>6}  {agent_s:>7.1f}s {agent_rss // 1024:>6}MiB  {push_s:>8.1f}s "
                      f"{push_rss // 1024:>6}MiB  {push_s / agent_s:>8.1f}x", flush=True)
        finally:
            daemon.kill()
            server.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
