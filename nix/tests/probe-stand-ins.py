"""The bridge and Drone beside a real Gitea, for nix/tests/probe.nix.

    probe-stand-ins bridge   polls Gitea for `!testme` on the repositories in POLL_REPOS
    probe-stand-ins drone    Drone's API calls the probe and the bridge make, on 127.0.0.1:8090

They do what the test kit's stand-ins do (testkit/src/bridge.rs and testkit/src/drone.rs say
which source each behaviour follows): the bridge answers each trigger once with a reaction and
starts a build of the pull request's head on Drone; a Drone build is a `custom` event whose
commit status, `continuous-integration/drone`, it sets on Gitea to pending, then to success.
Tokens come from the unit's credentials: `gitea-token` and `drone-token`.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

GITEA = os.environ.get("GITEA_URL", "http://localhost:3000")
DRONE = os.environ.get("DRONE_URL", "http://127.0.0.1:8090")
ORG = os.environ.get("ORG", "recipe-maintainers")
CONTEXT = "continuous-integration/drone"


def credential(name):
    path = os.path.join(os.environ["CREDENTIALS_DIRECTORY"], name)
    with open(path) as f:
        return f.read().strip()


def call(method, url, auth, body=None):
    """One HTTP call; its status and its JSON (None when there is none)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", auth)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
            return answer.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


def answer_trigger(gitea, drone, repo, pull, comment):
    api = f"{GITEA}/api/v1/repos/{ORG}/{repo}"
    call("POST", f"{api}/issues/comments/{comment['id']}/reactions", gitea,
         {"content": "eyes"})
    head = pull["head"]
    build = (f"{DRONE}/api/repos/{ORG}/{repo}/builds"
             f"?branch={head['ref']}&commit={head['sha']}")
    status, _ = call("POST", build, drone)
    if status != 200:
        call("POST", f"{api}/issues/{pull['number']}/comments", gitea,
             {"body": f"Could not start CI: Drone answered HTTP {status}"})


def bridge():
    gitea = "token " + credential("gitea-token")
    drone = "Bearer " + credential("drone-token")
    repos = [r for r in os.environ.get("POLL_REPOS", "").split(",") if r]
    print(f"bridge stand-in: polling {repos}", flush=True)
    answered = set()
    while True:
        for repo in repos:
            api = f"{GITEA}/api/v1/repos/{ORG}/{repo}"
            status, pulls = call("GET", f"{api}/pulls?state=open", gitea)
            for pull in (pulls or []) if status == 200 else []:
                _, comments = call("GET", f"{api}/issues/{pull['number']}/comments", gitea)
                for comment in comments or []:
                    lines = (comment.get("body") or "").splitlines()
                    if not lines or lines[0].strip() != "!testme":
                        continue
                    if comment["id"] in answered:
                        continue
                    answered.add(comment["id"])
                    answer_trigger(gitea, drone, repo, pull, comment)
        time.sleep(1)


BUILDS = {}
LOCK = threading.Lock()


def set_status(gitea, slug, sha, state, description):
    call("POST", f"{GITEA}/api/v1/repos/{slug}/statuses/{sha}", gitea,
         {"state": state, "context": CONTEXT, "description": description,
          "target_url": f"{DRONE}/{slug}"})


def run_build(gitea, slug, build):
    set_status(gitea, slug, build["after"], "pending", "Build is pending")
    with LOCK:
        build["status"] = "running"
    time.sleep(1)
    with LOCK:
        build["status"] = "success"
    set_status(gitea, slug, build["after"], "success", "Build is passing")


class Drone(BaseHTTPRequestHandler):
    gitea = ""
    admin = ""

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def parts(self):
        return urlparse(self.path).path.strip("/").split("/")

    def admin_asks(self):
        return self.headers.get("Authorization", "") == "Bearer " + self.admin

    def do_GET(self):
        parts = self.parts()
        if parts == ["api", "builds", "incomplete"]:
            if not self.admin_asks():
                return self.reply(401, {"message": "Unauthorized"})
            with LOCK:
                running = [{"slug": slug, "build": dict(b)}
                           for slug, builds in BUILDS.items() for b in builds
                           if b["status"] in ("pending", "running")]
            return self.reply(200, running)
        if len(parts) == 5 and parts[:2] == ["api", "repos"] and parts[4] == "builds":
            with LOCK:
                listed = [dict(b) for b in reversed(BUILDS.get(f"{parts[2]}/{parts[3]}", []))]
            return self.reply(200, listed)
        return self.reply(404, {"message": "Not Found"})

    def do_POST(self):
        parts = self.parts()
        if len(parts) != 5 or parts[:2] != ["api", "repos"] or parts[4] != "builds":
            return self.reply(404, {"message": "Not Found"})
        if not self.admin_asks():
            return self.reply(401, {"message": "Unauthorized"})
        query = parse_qs(urlparse(self.path).query)
        slug = f"{parts[2]}/{parts[3]}"
        with LOCK:
            builds = BUILDS.setdefault(slug, [])
            build = {"number": len(builds) + 1, "status": "pending", "event": "custom",
                     "after": query.get("commit", [""])[0],
                     "ref": "refs/heads/" + query.get("branch", [""])[0]}
            builds.append(build)
            shown = dict(build)
        threading.Thread(target=run_build, args=(self.gitea, slug, build), daemon=True).start()
        return self.reply(200, shown)


def drone():
    Drone.gitea = "token " + credential("gitea-token")
    Drone.admin = credential("drone-token")
    ThreadingHTTPServer(("127.0.0.1", 8090), Drone).serve_forever()


if __name__ == "__main__":
    {"bridge": bridge, "drone": drone}[sys.argv[1]]()
