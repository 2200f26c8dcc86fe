#!/usr/bin/env python3
"""The shape of the agent's source, as issue 15 measures it: the longest functions, the command
lines spoken outside git/ and host/, and the import cycles between top-level modules.

    python3 tests/bench/shape.py [agent/src]

Test code (`#[cfg(test)]` modules, `*_tests.rs`) is left out. Functions are found by brace
matching after string and comment contents are blanked, which is right for this code base's
style, not for every Rust file.
"""
import os
import re
import sys

TOOLS = ("git", "systemctl", "nixos-rebuild", "nix-env", "systemd-run")


def blank(text):
    """Comments and string contents replaced by spaces, so braces inside them do not count."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + re.sub(r"[^\n]", " ", text[i + 1 : j]) + '"')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks (after blanking)."""
    m = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    if not m:
        return text
    depth, i = 0, m.end() - 1
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    return text[: m.start()] + "\n" * text[m.start() : i].count("\n") + text[i + 1 :]


def functions(path, text):
    lines = text.split("\n")
    for start, line in enumerate(lines):
        m = re.match(r"\s*(pub(\([a-z]+\))?\s+)?(const\s+)?fn\s+(\w+)", line)
        if not m:
            continue
        depth, opened = 0, False
        for end in range(start, len(lines)):
            for ch in lines[end]:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth == 0:
                yield (end - start + 1, f"{path}:{start + 1} {m.group(4)}")
                break
            if not opened and lines[end].rstrip().endswith(";"):
                break


def sources(root):
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".rs") and not f.endswith("_tests.rs"):
                yield os.path.join(d, f)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "agent/src"
    fns, cmds, uses = [], [], {}
    for path in sources(root):
        text = without_tests(blank(open(path, encoding="utf-8").read()))
        raw = open(path, encoding="utf-8").read()
        fns.extend(functions(path, text))
        rel = os.path.relpath(path, root)
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if not rel.startswith(("git" + os.sep, "host" + os.sep)):
            for m in re.finditer(r'Cmd::new\("([\w-]+)"\)', raw):
                if m.group(1) in TOOLS:
                    cmds.append(f"{rel}: {m.group(1)}")
        for m in re.finditer(r"\bcrate::(\w+)", text):
            if m.group(1) != top:
                uses.setdefault(top, set()).add(m.group(1))
    fns.sort(reverse=True)
    print("longest functions (lines):")
    for n, where in fns[:5]:
        print(f"  {n:4}  {where}")
    print(f"Cmd::new of {', '.join(TOOLS)} outside git/ and host/: {len(cmds)}")
    for c in cmds:
        print(f"  {c}")
    cycles = circles(uses)
    print(f"import cycles between top-level modules: {len(cycles)}")
    for c in cycles:
        print(f"  {' -> '.join(c)}")


def circles(uses):
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(uses.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(uses):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    main()
