#!/usr/bin/env python3
"""Checks the VM tests' scripts as far as a machine without the NixOS test driver can.

    python3 nix/tests/check-test-scripts.py scripts.json

scripts.json is what nix/tests/eval/vm-tests.nix evaluates to: per test, its node names and its
script. Each script must parse as Python, use only names it defines or the driver gives a script
(its globals and one per node), and call on a node only what the driver's Machine has, with the
keyword arguments it takes and no more positional ones than it takes; and a `fail()` of a grep,
which also passes when grep could not search, is refused. The driver's API below is
nixpkgs 25.11's (nixos/lib/test-driver/src/test_driver/machine/__init__.py, driver.py's
test_symbols), written down here by name: a method the driver lacks is a failed VM test that no
machine here could run. Exits 1 naming each problem, with the test and line.
"""
import ast
import builtins
import json
import sys

# What exec() gives a test script besides one name per node (driver.py, test_symbols).
DRIVER_GLOBALS = {
    "start_all", "test_script", "machines", "vlans", "driver", "log", "os", "create_machine",
    "subtest", "run_tests", "join_all", "retry", "serial_stdout_off", "serial_stdout_on",
    "polling_condition", "Machine", "t",
}

# Machine's methods: (positional parameters after self, whether more are taken, keywords).
MACHINE = {
    "is_up": ([], False, set()),
    "log": (["msg"], False, set()),
    "nested": (["msg", "attrs"], False, set()),
    "send_monitor_command": (["command"], False, set()),
    "wait_for_unit": (["unit", "user", "timeout"], False, set()),
    "get_unit_info": (["unit", "user"], False, set()),
    "get_unit_property": (["unit", "property", "user"], False, set()),
    "systemctl": (["q", "user"], False, set()),
    "require_unit_state": (["unit", "require_state"], False, set()),
    "execute": (["command", "check_return", "check_output", "timeout"], False, set()),
    "shell_interact": (["address"], False, set()),
    "console_interact": ([], False, set()),
    "succeed": ([], True, {"timeout"}),
    "fail": ([], True, {"timeout"}),
    "wait_until_succeeds": (["command", "timeout"], False, set()),
    "wait_until_fails": (["command", "timeout"], False, set()),
    "wait_for_shutdown": ([], False, set()),
    "wait_for_qmp_event": (["event_filter", "timeout"], False, set()),
    "get_tty_text": (["tty"], False, set()),
    "wait_until_tty_matches": (["tty", "regexp", "timeout"], False, set()),
    "send_chars": (["chars", "delay"], False, set()),
    "wait_for_file": (["filename", "timeout"], False, set()),
    "wait_for_open_port": (["port", "addr", "timeout"], False, set()),
    "wait_for_open_unix_socket": (["addr", "is_datagram", "timeout"], False, set()),
    "wait_for_closed_port": (["port", "addr", "timeout"], False, set()),
    "start_job": (["jobname", "user"], False, set()),
    "stop_job": (["jobname", "user"], False, set()),
    "wait_for_job": (["jobname"], False, set()),
    "connect": ([], False, set()),
    "screenshot": (["filename"], False, set()),
    "copy_from_host_via_shell": (["source", "target"], False, set()),
    "copy_from_host": (["source", "target"], False, set()),
    "copy_from_vm": (["source", "target_dir"], False, set()),
    "dump_tty_contents": (["tty"], False, set()),
    "get_screen_text_variants": ([], False, set()),
    "get_screen_text": ([], False, set()),
    "wait_for_text": (["regex", "timeout"], False, set()),
    "wait_for_console_text": (["regex", "timeout"], False, set()),
    "get_console_log": ([], False, set()),
    "send_key": (["key", "delay", "log"], False, set()),
    "send_console": (["chars"], False, set()),
    "start": (["allow_reboot"], False, set()),
    "shutdown": ([], False, set()),
    "crash": ([], False, set()),
    "reboot": ([], False, set()),
    "wait_for_x": (["timeout"], False, set()),
    "get_window_names": ([], False, set()),
    "wait_for_window": (["regexp", "timeout"], False, set()),
    "sleep": (["secs"], False, set()),
    "forward_port": (["host_port", "guest_port"], False, set()),
    "block": ([], False, set()),
    "unblock": ([], False, set()),
    "switch_root": ([], False, set()),
}
MACHINE_ATTRIBUTES = {"name", "out_dir", "tmp_dir", "shared_dir", "state_dir", "booted", "connected"}


def bound_names(tree):
    """Every name the script binds anywhere: flow-insensitive, which is enough to catch a name
    that is bound nowhere."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def check_call(call, method, where):
    positional, more, keywords = MACHINE[method]
    problems = []
    if not more and len(call.args) > len(positional):
        problems.append(f"{where}: .{method}() takes at most {len(positional)} positional arguments")
    for kw in call.keywords:
        if kw.arg is not None and kw.arg not in positional and kw.arg not in keywords:
            problems.append(f"{where}: .{method}() has no argument {kw.arg!r}")
    return problems


def command_text(arg):
    """The literal text of a command argument (a string or an f-string's literal parts)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr):
        return "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
    return ""


def check_fail(call, where):
    """`fail()` passes on any non-zero status: a grep that could not search (exit 2: no such
    file, a bad pattern) passes as "not found". A test that means "not found" checks for 1."""
    if any("grep" in command_text(a) for a in call.args):
        return [f"{where}: .fail() of a grep also passes when grep could not search (exit 2); "
                "use execute() and check for exit 1"]
    return []


def check(test, nodes, script):
    try:
        tree = ast.parse(script, filename=test)
    except SyntaxError as e:
        return [f"{test}:{e.lineno}: {e.msg}"]
    known = bound_names(tree) | DRIVER_GLOBALS | set(dir(builtins)) | set(nodes)
    if len(nodes) == 1:
        known.add("machine")
    machines = set(nodes) | ({"machine"} if len(nodes) == 1 else set())
    problems = []
    for node in ast.walk(tree):
        where = f"{test}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in known:
            problems.append(f"{where}: {node.id!r} is defined nowhere (not a node, not the driver's)")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in machines:
            if node.attr not in MACHINE and node.attr not in MACHINE_ATTRIBUTES:
                problems.append(f"{where}: the driver's Machine has no {node.attr!r}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id in machines
                and node.func.attr in MACHINE):
            problems.extend(check_call(node, node.func.attr, where))
            if node.func.attr == "fail":
                problems.extend(check_fail(node, where))
    return problems


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        tests = json.load(f)
    problems = []
    for test, t in sorted(tests.items()):
        found = check(test, t["nodes"], t["script"])
        problems.extend(found)
        lines = t["script"].count("\n") + 1
        state = "ok" if not found else f"{len(found)} problem(s)"
        print(f"VM test {test}: nodes {', '.join(t['nodes'])}; script {lines} lines: {state}")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
