"""What the tests share: the end-to-end harness, waiting with a deadline, and the HTTP probes.

Fixtures live in conftest.py; everything else a test module needs from outside itself is here, so
that test modules import ``helpers`` and never each other. ``Cluster`` wraps a ``python -m
clusterrun`` subprocess (started by conftest's ``run_cli``) whose output goes to a file under
``tmp_path``: it waits for log lines, reads the real listener addresses and sends signals.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clusterrun.ctl.client import exchange

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_APPS = ROOT / "sample_apps"
TEST_APPS = Path(__file__).resolve().parent / "apps"
DEADLINE = 30.0  # seconds any awaited state may take on a loaded 2-core CI machine

# Each behaviour is tested for a WSGI app and an ASGI app: these are the pairs, as APP arguments.
SUP_APP_PAIR = ["sup_app:wsgi", "sup_app:asgi"]  # tests/apps/sup_app.py: identity, /slow, /crash, /hang...
SAMPLE_APP_PAIR = ["flask_app:app", "starlette_app:app"]  # sample_apps/
HEAVY_RESULT = sum(i * i for i in range(100_000))  # what sample_apps' /heavy computes
POLICIES = ["rr", "least-conn", "sticky", "shared", "balanced", "reuseport"]  # every --policy


class Cluster:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, pattern: str, count: int = 1, timeout: float = DEADLINE) -> list[re.Match[str]]:
        """Wait until ``pattern`` matched ``count`` log lines; fail with the log if the process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = [m for line in self.output().splitlines() if (m := regex.search(line))]
            if len(matches) >= count:
                return matches
            if self.proc.poll() is not None:
                matches = [m for line in self.output().splitlines() if (m := regex.search(line))]
                if len(matches) >= count:
                    return matches
                pytest.fail(f"clusterrun exited ({self.proc.returncode}) before {pattern!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} within {timeout}s:\n{self.output()}")
            time.sleep(0.02)

    def wait_ready(self) -> str:
        self.wait_for_line(r"ready: \d+ workers? serving")
        return self.urls()[0]

    def urls(self) -> list[str]:
        return [m.group(1) for m in self.wait_for_line(r'listening on ([^\s"]+)')]

    def status(self) -> dict[str, Any]:
        """``clusterrun status --json``, asked straight on the control socket (the path its log line gives)."""
        path = self.wait_for_line(r"control socket (\S+): clusterrun status")[0].group(1)
        answer = ask_control(path, b'{"command": "status"}\n')
        assert answer["ok"], answer
        return answer

    def wait_status(self, predicate: Callable[[dict[str, Any]], object], what: str) -> dict[str, Any]:
        """Poll the status until ``predicate(status)``; the status that satisfied it."""
        deadline = time.monotonic() + DEADLINE
        while True:
            status = self.status()
            if predicate(status):
                return status
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no status with {what} within {DEADLINE}s; last: {status}\n{self.output()}")
            time.sleep(0.05)

    def serving(self) -> dict[int, dict[str, Any]]:
        """The workers serving now, by slot index, as the status reports them."""
        return {w["index"]: w for w in self.status()["workers"] if w["state"] == "ready"}

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"clusterrun did not exit within {timeout}s:\n{self.output()}")

    def worker_pids(self) -> list[int]:
        """Live children of the primary, from /proc (Linux), so tests can check for leftovers."""
        return children_of(self.proc.pid)


def ask_control(path: str, request: bytes) -> dict[str, Any]:
    """Send ``request`` (raw bytes, valid or not) to a control socket; its one JSON answer, ok or not."""
    return exchange(path, request, timeout=DEADLINE)


def read_head(sock: socket.socket) -> bytes:
    """What the server sends up to the end of a response head (``\r\n\r\n``), and whatever came with it;
    fails if the server closes first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection before a whole head: {data!r}"
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(DEADLINE)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets a process holds a descriptor of, from /proc (what /proc/net/* tables name)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def connections_held(pid: int) -> int:
    """TCP connections a process still holds a descriptor of, from /proc, listeners aside.

    Not "ESTABLISHED": a connection the client closed is in CLOSE_WAIT until the worker's event loop gets to
    it, and only then does the worker close it and count the close.
    """
    inodes = socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] != "0A":  # 0A: LISTEN
                count += 1
    return count


def limit_descriptors(soft: int) -> None:
    """Set the soft descriptor limit (``ulimit -n``), in a child between fork and exec."""
    _old, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def run_to_exit(
    *args: str, cwd: Path = SAMPLE_APPS, timeout: float = DEADLINE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run clusterrun to completion (for commands that must exit by themselves: errors, --help)."""
    env = {k: v for k, v in (env or os.environ).items() if k not in ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY")}
    return subprocess.run(
        [sys.executable, "-m", "clusterrun", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], code: int, *expected: str) -> str:
    """Exit ``code``, nothing on stdout, exactly one line on stderr that contains every ``expected`` text."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    assert result.stdout == "", output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message, got:\n{result.stderr}"
    assert lines[0].startswith("clusterrun: error: "), lines[0]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


# One client for "a new connection per request" (no keep-alive): building an httpx.Client per request
# costs an SSL context each time, which would dominate the suite's run time.
FRESH = httpx.Client(timeout=DEADLINE, limits=httpx.Limits(max_keepalive_connections=0))


def start(run_cli: Callable[..., Cluster], app: str, *args: str, env: dict[str, str] | None = None) -> Cluster:
    """``clusterrun APP --port 0 --log-level info ARGS`` for an app of tests/apps (through the ``run_cli`` fixture)."""
    return run_cli(app, "--port", "0", "--log-level", "info", *args, cwd=TEST_APPS, env=env)


def who(url: str) -> dict[str, int]:
    """The worker that answered ``url`` (``id``, ``index``, ``pid``: what sup_app's ``/`` says)."""
    # A new connection per call: under rr each one goes to the next worker.
    response = FRESH.get(url)
    response.raise_for_status()
    result: dict[str, int] = response.json()
    return result


def get(url: str, path: str = "/") -> httpx.Response:
    """One GET on a new connection (so that the primary hands it to the next worker); ``unix:PATH`` works too."""
    if url.startswith("unix:"):
        with httpx.Client(transport=httpx.HTTPTransport(uds=url[len("unix:"):]), timeout=DEADLINE) as http:
            return http.get("http://localhost" + path)
    with httpx.Client(timeout=DEADLINE) as http:
        return http.get(url + path)


def sample_worker(body: dict[str, Any]) -> dict[str, int]:
    """The worker a sample app's ``/`` says it ran in."""
    worker = body["worker"]
    assert isinstance(worker, dict), body
    return worker


def answers_from_every_worker(
    url: str, pids: list[int], worker_of: Callable[[dict[str, Any]], dict[str, int]] = sample_worker,
    path: str = "/",
) -> dict[int, httpx.Response]:
    """GET ``path`` on new connections until every pid in ``pids`` has answered; the first answer of each, by pid."""
    answers: dict[int, httpx.Response] = {}
    deadline = time.monotonic() + DEADLINE
    while set(answers) != set(pids):
        response = get(url, path)
        assert response.status_code == 200, response.text
        pid = worker_of(response.json())["pid"]
        assert pid in pids, f"answered by pid {pid}, not a worker of this cluster ({pids}): {response.text}"
        answers.setdefault(pid, response)
        if time.monotonic() > deadline:
            pytest.fail(f"only workers {sorted(answers)} of {sorted(pids)} answered within {DEADLINE}s")
    return answers


@dataclass(frozen=True)
class Ready:
    count: int
    app: str
    interface: str
    pids: list[int]


def ready_line(cluster: Cluster) -> Ready:
    """Wait for the ready line and parse it: ``ready: 2 workers serving APP (wsgi), pids 11, 12``."""
    match = cluster.wait_for_line(r"ready: (\d+) workers? serving (\S+) \((\w+)\), pids ([\d, ]+)$")[0]
    pids = [int(pid) for pid in match.group(4).split(",")]
    return Ready(int(match.group(1)), match.group(2), match.group(3), pids)


def start_in_home(home: Path, name: str, app: str, *args: str, env: dict[str, str] | None = None) -> Cluster:
    """A cluster started as ``clusterrun start`` starts one (the shared contract of issue 27): ``--name NAME``, its
    stdout and stderr appended (O_APPEND) to ``HOME/logs/NAME-out.log`` and ``NAME-error.log``, in its own session.
    The caller stops it (``stop_and_reap``); ``Cluster.log`` is the error log, where clusterrun's lines go."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(logs / f"{name}-out.log", flags, 0o600)
    err = os.open(logs / f"{name}-error.log", flags, 0o600)
    full_env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY")}
    full_env.update({"PYTHONUNBUFFERED": "1", "CLUSTERRUN_HOME": str(home), **(env or {})})
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterrun", app, "--name", name, "--port", "0", "--log-level", "info", *args],
            cwd=TEST_APPS, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
    finally:
        os.close(out)
        os.close(err)
    return Cluster(proc, logs / f"{name}-error.log")


def stop_and_reap(cluster: Cluster) -> None:
    """SIGTERM the cluster's process group, SIGKILL it if it is still there after the deadline; reap the primary."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(cluster.pid, 15)
    try:
        cluster.proc.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(cluster.pid, 9)
        cluster.proc.wait(DEADLINE)
