"""The control commands' client: clusterrun ls, status, reload [--config], scale, stop, restart-worker.

Each sends the cluster one request through clusterrun.ctl.client (which finds its socket) and prints the
answer.
The commands that take time wait until it is done, following the cluster through ``status``: reload until
the rolling restart completes (exit 1 with the reason if it aborts), scale until the workers serve, stop until
the primary is gone, restart-worker until the replacement serves.

Exit codes: 0 done; 1 the command failed (no such cluster, refused, aborted, timed out); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from clusterrun.ctl.client import answers, live_clusters, request, resolve
from clusterrun.ctl.text import CommandParser, cluster_table, run_command, status_text
from clusterrun.ctl.top import cmd_top
from clusterrun.errors import ControlError
from clusterrun.host.pidfile import running

COMMANDS = ("ls", "status", "top", "reload", "scale", "stop", "restart-worker")
_POLL = 0.1


def wait_for(path: str, done: Callable[[dict[str, Any]], bool], what: str, timeout: float) -> dict[str, Any]:
    """Poll the cluster's status until ``done(status)``; ControlError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status = request(path, "status")
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise ControlError(f"timed out after {timeout:g}s waiting for {what}; clusterrun status shows where "
                               "it is")
        time.sleep(_POLL)


# The commands.

def cmd_ls(args: argparse.Namespace) -> int:
    clusters = [info for _path, info in live_clusters()]
    print(json.dumps(clusters, indent=2) if args.json else cluster_table(clusters))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = request(resolve(args.name, args.control), "status")
    print(json.dumps(status, indent=2) if args.json else status_text(status))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    if args.name == "all" and not args.control:
        return for_all(cmd_reload, args)
    path = resolve(args.name, args.control)
    answer = request(path, "reload", **({"config": True} if args.config else {}))
    reload_id = answer["reload"]
    if args.config and "changed" not in answer:  # a primary of an older clusterrun ignores "config"
        raise ControlError(f"rolling restart {reload_id} started, but this cluster runs an older clusterrun that does "
                           "not read its configuration again: restart it to take the file")
    if args.config:  # what the re-read took, and what it could not (kept until a restart)
        print(f"configuration re-read: {'; '.join(answer['changed']) or 'nothing that applies changed'}")
        for line in answer["needs_restart"]:
            print(f"needs a restart (kept as it was): {line}")
    print(f"rolling restart {reload_id} of {args.name or 'the cluster'} started")
    status = wait_for(path, lambda s: s["reload"]["id"] != reload_id or s["reload"]["state"] != "running",
                      "the rolling restart", args.timeout)
    if status["reload"]["id"] == reload_id and status["reload"]["state"] == "complete":
        # The slots' workers that serve, not every worker: the replaced ones may still be draining.
        serving = status["ready"]
        print(f"rolling restart {reload_id} complete: {serving} worker{'' if serving == 1 else 's'} serving")
        return 0
    raise ControlError(f"rolling restart {reload_id} aborted: {status['reload']['reason'] or 'see the log'}")


def cmd_scale(args: argparse.Namespace) -> int:
    path = resolve(args.name, args.control)
    target = request(path, "scale", workers=args.workers)["target"]
    wait_for(path, lambda s: s["ready"] == s["target"] == target, f"{target} serving workers", args.timeout)
    print(f"scaled to {target} worker{'s' if target != 1 else ''}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if args.name == "all" and not args.control:
        return for_all(cmd_stop, args)
    path = resolve(args.name, args.control)
    if not args.control and not answers(path):
        running_names = ", ".join(info["name"] for _path, info in live_clusters()) or "none"
        raise ControlError(f"no cluster named {args.name!r} is running (running: {running_names}); clusterrun ls "
                           "lists them")
    return _stop_one(path, args)


def for_all(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``command`` for every running cluster of this user (what ls lists), one after the other, by name."""
    clusters = live_clusters()
    if not clusters:
        print("no cluster is running")
        return 0
    failed = []
    for _path, info in clusters:
        try:
            print(f"{info['name']}: ", end="", flush=True)
            command(argparse.Namespace(**{**vars(args), "name": info["name"]}))
        except ControlError as exc:
            print(f"error: {exc}")
            failed.append(info["name"])
    if failed:
        raise ControlError(f"{', '.join(failed)} failed: see above")
    return 0


def _stop_one(path: str, args: argparse.Namespace) -> int:
    pid = request(path, "stop", **({} if args.timeout is None else {"timeout": args.timeout}))["pid"]
    deadline = time.monotonic() + (args.timeout if args.timeout is not None else 30.0) + 30.0
    # The primary closes its control socket last, once every worker is reaped; then its process ends.
    while answers(path) or running(pid):
        if time.monotonic() > deadline:
            raise ControlError(f"the primary (pid {pid}) is still running; it may be waiting for workers to drain")
        time.sleep(_POLL)
    print(f"stopped (the primary, pid {pid}, exited)")
    return 0


def cmd_restart_worker(args: argparse.Namespace) -> int:
    path = resolve(args.name, args.control)
    request(path, "restart-worker", id=args.id)
    wait_for(path, lambda s: all(w["id"] != args.id for w in s["workers"]) and s["ready"] == s["target"],
             f"worker {args.id}'s replacement", args.timeout)
    print(f"worker {args.id} replaced")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="clusterrun", description="See and steer running clusters.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    def add(name: str, run: Callable[[argparse.Namespace], int], help: str, named: bool = True) -> Any:
        command = commands.add_parser(name, help=help, description=help)
        command.set_defaults(run=run)
        if named:
            command.add_argument("name", metavar="NAME", nargs="?" if name in ("status", "top") else None,
                                 help="the cluster's --name (default: its app's module)")
            command.add_argument("--control", metavar="PATH", help="the control socket, if started with --control")
        return command

    add("ls", cmd_ls, "list this user's running clusters", named=False).add_argument(
        "--json", action="store_true", help="as JSON")
    add("status", cmd_status, "a cluster and each of its workers").add_argument(
        "--json", action="store_true", help="as JSON (documented in the README, stable)")
    top = add("top", cmd_top, "a live monitor, redrawn every second (keys: q quit, r reload, + and - scale)")
    top.add_argument("--count", type=int, metavar="N", help="print N plain text frames, a second apart, and exit")
    reload = add("reload", cmd_reload, "rolling restart (NAME or all); waits until done (exit 1 if it aborts)")
    reload.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="give up waiting after this; default 600")
    reload.add_argument("--config", action="store_true", help="read the configuration file again first, as SIGHUP "
                        "does: what can change without a restart is taken, the rest is listed (exit 1 if the file "
                        "does not read: nothing changes)")
    scale = add("scale", cmd_scale, "set the number of workers: N, +K or -K; waits until they serve")
    scale.add_argument("workers", metavar="N|+K|-K")
    scale.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="default 120")
    add("stop", cmd_stop, "stop gracefully (NAME, or all: every running cluster); waits until the primary exits"
        ).add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help="seconds the workers get to drain before they are killed; default the cluster's --graceful-timeout")
    restart = add("restart-worker", cmd_restart_worker, "replace one worker, no request lost")
    restart.add_argument("id", metavar="ID", type=int, help="the worker's id (clusterrun status)")
    restart.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="default 120")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    return run_command(args.command, lambda: int(args.run(args)))
