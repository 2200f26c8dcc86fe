#!/usr/bin/env python3
"""The part of each Gitea and Forgejo API document that cc-ci relies on, as facts without prose.

    python3 tests/contract/extract.py [SHARED_GITEA_API_DIR] [OUT_DIR]

reads each `<server>-<version>.json` (the swagger 2.0 document the server publishes at
/swagger.v1.json; ../shared/gitea-api/README.md says where each comes from) and writes
`OUT_DIR/<server>-<version>.json` (default: tests/contract/) with, for each operation in
OPERATIONS: its parameters (name, in, type, format, enum, required, and a body's schema) and its
responses by status (the schema of each); and every definition those reach: property names and
their types, formats, enums, items, `$ref`s and `required`. Descriptions, titles, examples and Go
names are dropped. An operation a version lacks is listed under `absent`.

`.ci/run` runs it into a temporary directory when ../shared/gitea-api is there and fails if the
committed extracts differ (`--check`).
"""

import json
import os
import sys

# The calls the agent makes (agent/src/forge/) and the ones the test kit's bridge and Drone make
# (testkit/src/bridge.rs, drone.rs): what the test forge answers. Path templates as the documents
# write them.
OPERATIONS = [
    ("get", "/version"),
    ("get", "/user"),
    ("get", "/orgs/{org}"),
    ("post", "/orgs/{org}/repos"),
    ("get", "/users/{username}/orgs/{org}/permissions"),
    ("get", "/repos/{owner}/{repo}"),
    ("get", "/repos/{owner}/{repo}/branch_protections"),
    ("get", "/repos/{owner}/{repo}/issues"),
    ("get", "/repos/{owner}/{repo}/pulls"),
    ("post", "/repos/{owner}/{repo}/pulls"),
    ("get", "/repos/{owner}/{repo}/pulls/{index}"),
    ("patch", "/repos/{owner}/{repo}/pulls/{index}"),
    ("get", "/repos/{owner}/{repo}/issues/{index}/comments"),
    ("post", "/repos/{owner}/{repo}/issues/{index}/comments"),
    ("get", "/repos/{owner}/{repo}/issues/comments/{id}/reactions"),
    ("post", "/repos/{owner}/{repo}/issues/comments/{id}/reactions"),
    ("get", "/repos/{owner}/{repo}/statuses/{sha}"),
    ("post", "/repos/{owner}/{repo}/statuses/{sha}"),
]

# What a schema keeps: facts a client can be checked against.
SCHEMA_KEYS = ("type", "format", "enum", "items", "properties", "additionalProperties",
               "required", "$ref", "x-nullable", "allOf")
PARAMETER_KEYS = ("name", "in", "type", "format", "enum", "required", "items", "schema")


def facts(schema):
    """A schema without its prose, recursively."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key in SCHEMA_KEYS:
        if key not in schema:
            continue
        value = schema[key]
        if key == "properties":
            out[key] = {name: facts(s) for name, s in sorted(value.items())}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = facts(value)
        elif key == "allOf":
            out[key] = [facts(s) for s in value]
        elif key == "required":
            out[key] = sorted(value)
        else:
            out[key] = value
    return out


def refs(value, found):
    """Every definition name `value` refers to, added to `found`."""
    if isinstance(value, dict):
        ref = value.get("$ref", "")
        if ref.startswith("#/definitions/"):
            found.add(ref[len("#/definitions/"):])
        for v in value.values():
            refs(v, found)
    elif isinstance(value, list):
        for v in value:
            refs(v, found)


def resolve_response(doc, response):
    """A response object's schema: documents name shared responses under `responses`."""
    ref = response.get("$ref", "")
    if ref.startswith("#/responses/"):
        response = doc.get("responses", {}).get(ref[len("#/responses/"):], {})
    return facts(response["schema"]) if "schema" in response else None


def extract(doc, source):
    paths, absent, wanted = {}, [], set()
    for method, path in OPERATIONS:
        op = doc["paths"].get(path, {}).get(method)
        if op is None:
            absent.append(f"{method.upper()} {path}")
            continue
        parameters = []
        for p in op.get("parameters", []):
            kept = {k: (facts(v) if k in ("schema", "items") else v)
                    for k, v in p.items() if k in PARAMETER_KEYS}
            parameters.append(kept)
        responses = {code: resolve_response(doc, r) for code, r in sorted(op.get("responses", {}).items())}
        entry = {"parameters": parameters, "responses": responses}
        paths.setdefault(path, {})[method] = entry
        refs(entry, wanted)
    definitions, todo = {}, sorted(wanted)
    while todo:
        name = todo.pop()
        if name in definitions:
            continue
        definitions[name] = facts(doc["definitions"][name])
        more = set()
        refs(definitions[name], more)
        todo.extend(sorted(more - set(definitions)))
    return {
        "source": source,
        "version": doc["info"]["version"],
        "basePath": doc["basePath"],
        "absent": absent,
        "paths": paths,
        "definitions": dict(sorted(definitions.items())),
    }


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    here = os.path.dirname(os.path.abspath(__file__))
    shared = args[0] if args else os.path.join(here, "..", "..", "..", "shared", "gitea-api")
    out = args[1] if len(args) > 1 else here
    drifted = []
    names = sorted(n for n in os.listdir(shared) if n.endswith(".json"))
    if not names:
        print(f"no API documents in {shared}", file=sys.stderr)
        return 2
    for name in names:
        with open(os.path.join(shared, name)) as f:
            doc = json.load(f)
        server = "Forgejo" if name.startswith("forgejo") else "Gitea"
        source = (f"../shared/gitea-api/{name}: the API document {server} {doc['info']['version']} "
                  f"publishes at /swagger.v1.json (templates/swagger/v1_json.tmpl at its release "
                  f"tag); the facts of the operations cc-ci uses, by tests/contract/extract.py")
        text = json.dumps(extract(doc, source), indent=1, sort_keys=False) + "\n"
        target = os.path.join(out, name)
        if check:
            committed = open(target).read() if os.path.exists(target) else ""
            if committed != text:
                drifted.append(name)
        else:
            with open(target, "w") as f:
                f.write(text)
            print(f"wrote {target} ({len(text)} bytes)")
    if drifted:
        print("the committed extracts differ from the documents: " + ", ".join(drifted)
              + " (run python3 tests/contract/extract.py and commit)", file=sys.stderr)
        return 1
    if check:
        print(f"the committed extracts match the {len(names)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
