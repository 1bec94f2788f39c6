"""Start apps in the background and stop them: spawn a detached primary, wait until it serves, stop it again.

A set of apps starts whole or not at all: each primary is spawned (setsid, stdin /dev/null, stdout and stderr
appended to its log files), then ``start_set`` follows each through its control socket until every worker
serves. When one exits or misses the deadline, every app of the set is stopped again (its whole process group,
so no worker is left behind) and the reason, read from that app's error log, is the error.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clusterrun.ctl.client import answers, request
from clusterrun.errors import BootError, ConfigError, ControlError
from clusterrun.host.controlsocket import socket_path
from clusterrun.host.pidfile import running
from clusterrun.pm.home import Home, Record

_POLL = 0.1
STOP_TIMEOUT = 30.0  # seconds an app gets to stop before its process group is killed


@dataclass
class Started:
    record: Record
    pid: int
    offset: int  # where this start's lines begin in the app's error log
    status: dict[str, Any] | None = None
    reaped: bool = False  # its primary exited and was waited for: its pid may already be another process's


def check_free(home: Home, name: str) -> None:
    """ConfigError when the app runs already; a stale pid file (its process gone) is removed, and said so."""
    pid = home.pid(name)
    if answers(socket_path(name)):
        shown = f" (pid {pid})" if pid else ""
        raise ConfigError(f"app {name!r} is already running{shown}: clusterrun restart {name} restarts it, "
                          f"clusterrun stop {name} stops it")
    if pid is not None and running(pid):
        raise ConfigError(f"app {name!r} has a live pid file {home.pid_file(name)} (pid {pid}) but no control "
                          f"socket answers: stop that process, or remove the file if it is not clusterrun")
    if os.path.exists(home.pid_file(name)):
        os.unlink(home.pid_file(name))
        print(f"removed the stale pid file {home.pid_file(name)} (pid {pid} is not running)", file=sys.stderr)


def command_line(home: Home, record: Record) -> list[str]:
    return [sys.executable, "-m", "clusterrun", record.app, "--config", home.options_file(record.name),
            "--name", record.name, "--pid-file", home.pid_file(record.name), *record.args]


def spawn(home: Home, record: Record) -> Started:
    """Start the app's primary in a session of its own, detached from the terminal; it is our child until we exit."""
    argv = command_line(home, record)
    # Unbuffered: the app's prints go to a file, where Python would buffer them 8 KiB at a time, and the lines of
    # several workers would then reach the log cut and mixed. The app's own env may still say otherwise.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **record.env}
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(home.out_log(record.name), flags, 0o600)
    err = os.open(home.error_log(record.name), flags, 0o600)
    offset = os.lseek(err, 0, os.SEEK_END)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits
        try:
            os.setsid()
            os.chdir(record.cwd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.execve(argv[0], argv, env)
        except BaseException as exc:  # the child must never return into the caller's code
            os.write(err, f"clusterrun: error: cannot start app {record.name!r} in {record.cwd}: {exc}\n".encode())
        finally:
            os._exit(3)
    os.close(out)
    os.close(err)
    return Started(record, pid, offset)


def start_set(home: Home, records: Sequence[Record], boot_timeout: float) -> list[Started]:
    """Start every app and wait until each serves; on any failure stop them all and raise the first reason."""
    started: list[Started] = []
    new = [record.name for record in records if home.record(record.name) is None]
    try:
        for record in records:
            home.keep(record)
            started.append(spawn(home, record))
        deadline = time.monotonic() + boot_timeout
        for one in started:
            one.status = _wait_serving(home, one, deadline, boot_timeout)
    except BaseException:
        for one in started:
            _stop_child(one)
        for name in new:  # an app that never served is not one to restart or save; its logs stay, for the reason
            home.forget(name)
        raise
    return started


def _wait_serving(home: Home, one: Started, deadline: float, boot_timeout: float) -> dict[str, Any]:
    path = socket_path(one.record.name)
    while True:
        done, code = os.waitpid(one.pid, os.WNOHANG)
        if done:
            one.reaped = True
            exit_code = os.waitstatus_to_exitcode(code)
            raise _failed(home, one, f"exited with code {exit_code}", exit_code)
        status = _status(path)
        if status is not None and status.get("pid") == one.pid and 0 < status["ready"] == status["target"]:
            return status
        if time.monotonic() > deadline:
            raise _failed(home, one, f"did not serve within {boot_timeout:g}s (--boot-timeout)", 3)
        time.sleep(_POLL)


def _status(path: str) -> dict[str, Any] | None:
    if not answers(path):
        return None
    try:
        return request(path, "status")
    except ControlError:
        return None  # binding or starting up: ask again


def _failed(home: Home, one: Started, what: str, exit_code: int) -> BootError:
    reason = log_reason(home.error_log(one.record.name), one.offset)
    error = BootError(f"app {one.record.name!r} failed to boot ({what}): {reason}; its log: "
                      f"{home.error_log(one.record.name)}; nothing of this start is left running")
    error.exit_code = exit_code if exit_code in (2, 3, 4) else 3
    return error


def log_reason(path: str, offset: int) -> str:
    """The reason a start failed, from what it wrote to its error log: clusterrun's error line, else the last one."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            lines = [line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "its error log cannot be read"
    errors = [line for line in lines if "error:" in line.lower() or "Error" in line]
    return (errors or lines or ["it wrote nothing"])[-1]


def _stop_child(one: Started) -> None:
    """Stop a primary this process spawned, with its workers (its process group): TERM, then KILL; reap it.

    The group outlives a reaped primary while a worker of it lives (its id is not reused until then), so the
    group is signalled even when the primary is gone: no worker is left behind.
    """
    pid = one.pid
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while not one.reaped and time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            one.reaped = True
        else:
            time.sleep(_POLL)
    if not one.reaped:
        _signal_group(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        one.reaped = True
    _signal_group(pid, signal.SIGKILL)  # a worker that outlived its primary


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_app(home: Home, name: str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the app gracefully through its control socket; whether it was running. ControlError if it stays."""
    path = socket_path(name)
    if not answers(path):
        pid = home.pid(name)
        if pid is None or not running(pid):
            return False
        _signal_group(pid, signal.SIGTERM)
    else:
        pid = int(request(path, "stop")["pid"])
    deadline = time.monotonic() + timeout
    while answers(path) or running(pid):
        if time.monotonic() > deadline:
            raise ControlError(f"app {name!r} (pid {pid}) did not stop within {timeout:g}s: clusterrun stop {name} "
                               "--timeout S, or kill it")
        time.sleep(_POLL)
    return True
