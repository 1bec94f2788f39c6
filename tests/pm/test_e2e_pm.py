"""The process manager end to end: ``clusterrun start|ls|describe|restart|save|stop all|resurrect|delete``.

Each test has its own $CLUSTERRUN_HOME under tmp_path. A background start detaches its apps (setsid): their
primaries are not this process's children, so the module makes it a child subreaper, and the fixture's teardown
stops every primary it saw (SIGTERM to its process group, SIGKILL after a deadline) and reaps it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, alive, children_of, wait_until

PR_SET_CHILD_SUBREAPER = 36


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PM:
    """Runs ``clusterrun`` commands with this test's home; remembers every primary's pid it saw."""

    def __init__(self, home: Path, folder: Path) -> None:
        self.home = home
        self.folder = folder
        self.seen: set[int] = set()

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        # As a user's shell has them: no PYTHONUNBUFFERED (the test runner's may have it), no option variables.
        dropped = ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY", "PYTHONUNBUFFERED")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env["CLUSTERRUN_HOME"] = str(self.home)
        result = subprocess.run([sys.executable, "-m", "clusterrun", *args], cwd=self.folder, capture_output=True,
                                text=True, timeout=DEADLINE * 3, stdin=subprocess.DEVNULL, env=env)
        self.note_pids()
        return result

    def note_pids(self) -> None:
        for path in (self.home / "pids").glob("*.pid") if (self.home / "pids").is_dir() else ():
            with contextlib.suppress(OSError, ValueError):
                self.seen.add(int(path.read_text()))

    def pid(self, name: str) -> int:
        return int((self.home / "pids" / f"{name}.pid").read_text())

    def write(self, text: str) -> Path:
        path = self.folder / "clusterrun.toml"
        path.write_text(text)
        return path


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PM]:
    folder = tmp_path / "project"
    folder.mkdir()
    manager = PM(tmp_path / "home", folder)
    try:
        yield manager
    finally:
        manager.note_pids()
        # Only a clusterrun still: a primary that start reaped itself (a failed set) may have left its pid to another.
        manager.seen = {pid for pid in manager.seen if is_clusterrun(pid)}
        for pid in manager.seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + DEADLINE
        while any(alive(pid) for pid in manager.seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in manager.seen | set(children_of(os.getpid())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        # Reap what came to us: the primaries, and any worker whose primary died first.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def is_clusterrun(pid: int) -> bool:
    try:
        return b"clusterrun" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def apps_file(pm: PM, a_port: int, b_port: int, extra: str = "") -> Path:
    return pm.write(f"""
[[apps]]
name = "alpha"
app = "env_app:app"
cwd = "{TEST_APPS}"
workers = 2
port = {a_port}
env = {{GREETING = "hello from dev", ONLY_ALPHA = "1"}}
[apps.env_production]
GREETING = "hello from production"

[[apps]]
name = "beta"
app = "env_app:app"
cwd = "{TEST_APPS}"
workers = 1
bind = "127.0.0.1:{b_port}"
env = {{GREETING = "beta dev"}}
[apps.env_production]
GREETING = "beta production"
{extra}""")


def greeting(port: int) -> Any:
    return httpx.get(f"http://127.0.0.1:{port}/?names=GREETING", timeout=DEADLINE).json()["env"]["GREETING"]


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def one_error_line(result: subprocess.CompletedProcess[str], code: int, command: str, *expected: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"clusterrun {command}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def test_two_apps_start_with_an_env_list_restart_save_stop_all_and_resurrect(pm: PM) -> None:
    a_port, b_port = free_port(), free_port()
    apps_file(pm, a_port, b_port)

    started = pm("start", "--env", "production")
    assert started.returncode == 0, started.stdout + started.stderr
    table = started.stdout.splitlines()
    assert table[0].split() == ["NAME", "PID", "WORKERS", "LISTENING", "STATUS"]
    assert table[1].split()[:3] == ["alpha", str(pm.pid("alpha")), "2/2"]
    assert table[2].split()[:3] == ["beta", str(pm.pid("beta")), "1/1"]
    # start returned while both serve, with the production environment over env.
    assert greeting(a_port) == "hello from production"
    assert greeting(b_port) == "beta production"
    assert (pm.home / "logs" / "alpha-error.log").is_file() and (pm.home / "logs" / "beta-out.log").is_file()

    listed = pm("ls")
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["alpha", "beta"]

    logged = pm("logs", "alpha", "--err", "--lines", "50")  # the logs of an app start began, tagged with its name
    assert logged.returncode == 0, logged.stderr
    assert any(line.startswith("alpha") and "ready: 2 workers" in line for line in logged.stdout.splitlines())

    described = pm("describe", "alpha")
    assert described.returncode == 0, described.stderr
    assert "GREETING=****" in described.stdout and "ONLY_ALPHA=****" in described.stdout
    assert "hello from" not in described.stdout  # the values stay hidden
    assert str(pm.pid("alpha")) in described.stdout and "production" in described.stdout

    old = pm.pid("alpha")
    restarted = pm("restart", "alpha")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert pm.pid("alpha") != old and not alive(old)
    assert greeting(a_port) == "hello from production"

    reloaded = pm("reload", "all")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert reloaded.stdout.count("complete: ") == 2
    assert greeting(b_port) == "beta production"

    saved = pm("save")
    assert saved.returncode == 0, saved.stderr
    assert [app["name"] for app in json.loads((pm.home / "dump.json").read_text())] == ["alpha", "beta"]

    stopped = pm("stop", "all")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert refuses(a_port) and refuses(b_port)
    assert not any(alive(pid) for pid in pm.seen)
    assert pm("ls").stdout.strip() == "no cluster is running"

    resurrected = pm("resurrect")
    assert resurrected.returncode == 0, resurrected.stdout + resurrected.stderr
    assert greeting(a_port) == "hello from production"
    assert greeting(b_port) == "beta production"

    deleted = pm("delete", "all")
    assert deleted.returncode == 0, deleted.stderr
    assert refuses(a_port) and refuses(b_port)
    assert list((pm.home / "apps").iterdir()) == []
    assert (pm.home / "logs" / "alpha-error.log").is_file()  # delete keeps the logs


def test_a_bare_app_starts_in_the_background_by_its_flags(pm: PM) -> None:
    port = free_port()
    pm.folder = TEST_APPS  # the app's module is found from the folder start runs in
    started = pm("start", "env_app:app", "--workers", "1", "--port", str(port), "--name", "solo")
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.splitlines()[1].split()[:3] == ["solo", str(pm.pid("solo")), "1/1"]
    assert greeting(port) is None
    # The terminal is not held: the primary is in a session of its own, its stdin /dev/null.
    pid = pm.pid("solo")
    assert os.getsid(pid) == pid
    assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
    assert os.readlink(f"/proc/{pid}/fd/2") == str(pm.home / "logs" / "solo-error.log")
    assert pm("stop", "solo").returncode == 0
    assert refuses(port)
    # Started again by its name alone: with the settings it was first started with.
    again = pm("start", "solo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert greeting(port) is None
    restarted = pm("restart", "all")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert greeting(port) is None


def test_an_apps_prints_reach_its_out_log_as_they_are_made(pm: PM) -> None:
    """stdout is a file in the background, where Python would hold prints 8 KiB at a time (and cut lines of
    several workers into each other): start runs the app unbuffered."""
    port = free_port()
    pm.folder = TEST_APPS
    started = pm("start", "env_app:printing", "--workers", "2", "--port", str(port), "--name", "talker")
    assert started.returncode == 0, started.stdout + started.stderr
    httpx.get(f"http://127.0.0.1:{port}/hello", timeout=DEADLINE).raise_for_status()
    out_log = pm.home / "logs" / "talker-out.log"
    wait_until(lambda: "served /hello\n" in out_log.read_text(), "the print in talker-out.log")
    assert pm("stop", "talker").returncode == 0


def test_an_app_that_fails_to_boot_stops_the_whole_set(pm: PM) -> None:
    good, bad = free_port(), free_port()
    pm.write(f"""
[[apps]]
name = "good"
app = "env_app:app"
cwd = "{TEST_APPS}"
workers = 1
port = {good}

[[apps]]
name = "broken"
app = "e2e_boom_import:app"
cwd = "{TEST_APPS}"
workers = 1
port = {bad}
""")
    result = pm("start")
    line = one_error_line(result, 3, "start", "'broken' failed to boot", "e2e-boom: DATABASE_URL is not set")
    assert "broken-error.log" in line
    assert refuses(good) and refuses(bad)
    assert not any(alive(pid) for pid in pm.seen)
    assert children_of(os.getpid()) == []  # no primary and no worker left behind
    assert not (pm.home / "pids" / "good.pid").exists()
    assert list((pm.home / "apps").iterdir()) == []  # nothing recorded of a start that did not happen
    assert pm("ls").stdout.strip() == "no cluster is running"


def test_an_app_that_does_not_serve_by_the_deadline_is_stopped_with_its_workers(pm: PM) -> None:
    port = free_port()
    pm.folder = TEST_APPS
    result = pm("start", "pm_slow_import:app", "--workers", "2", "--port", str(port), "--boot-timeout", "2")
    one_error_line(result, 3, "start", "'pm_slow_import' failed to boot", "did not serve within 2s")
    assert not any(alive(pid) for pid in pm.seen)
    assert children_of(os.getpid()) == []  # the workers, stuck in the import, were killed with their primary
    assert refuses(port)


def test_bad_input_gets_one_line_with_the_fix(pm: PM) -> None:
    a_port, b_port = free_port(), free_port()
    one_error_line(pm("resurrect"), 2, "resurrect", "no dump at", "run clusterrun save")
    one_error_line(pm("describe", "nosuch"), 2, "describe", "no app named 'nosuch'", "known: none")

    apps_file(pm, a_port, b_port, extra=f'\n[[apps]]\nname = "alpha"\napp = "env_app:app"\nport = {free_port()}\n')
    one_error_line(pm("start"), 2, "start", "two apps are named 'alpha'")

    apps_file(pm, a_port, b_port, extra=f'\n[[apps]]\nname = "gamma"\napp = "env_app:app"\nport = {a_port}\n')
    one_error_line(pm("start"), 2, "start", "'alpha' and 'gamma'", f"127.0.0.1:{a_port}")

    apps_file(pm, a_port, b_port, extra='\n[[apps]]\nname = "delta"\napp = "env_app:app"\nworkerz = 2\n')
    one_error_line(pm("start"), 2, "start", "unknown key 'workerz'", "did you mean 'workers'?")

    # A bad value is refused before any app of the set is spawned, naming the file and the app it is in.
    apps_file(pm, a_port, b_port, extra='\n[[apps]]\nname = "gamma"\napp = "env_app:app"\nworkers = "lots"\n')
    one_error_line(pm("start"), 2, "start", "bad --workers value 'lots'", "clusterrun.toml [[apps]] 'gamma'")
    assert not (pm.home / "logs" / "alpha-error.log").exists()

    apps_file(pm, a_port, b_port, extra='\n[[apps]]\napp = "env_app:app"\nport = 0\n')
    one_error_line(pm("start"), 2, "start", "has no name")

    apps_file(pm, a_port, b_port)
    one_error_line(pm("start", "--env", "prodution"), 2, "start", "--env prodution", "env_prodution")
    one_error_line(pm("start", "--only", "omega"), 2, "start", "--only omega", "alpha, beta")

    # A stale pid file (its process gone) is removed, and said so; the start goes on.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (pm.home / "pids").mkdir(parents=True, exist_ok=True)
    (pm.home / "pids" / "beta.pid").write_text(f"{dead.pid}\n")
    started = pm("start", "--only", "beta")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"removed the stale pid file {pm.home / 'pids' / 'beta.pid'} (pid {dead.pid} is not running)" \
        in started.stderr

    # Already running: refused with the fix, and nothing of the set is started (alpha stays down).
    again = pm("start")
    one_error_line(again, 2, "start", "app 'beta' is already running", "clusterrun restart beta")
    assert refuses(a_port)

    one_error_line(pm("restart", "nosuch"), 2, "restart", "no app named 'nosuch'", "known: beta")
    one_error_line(pm("stop", "nosuch"), 1, "stop", "no cluster named 'nosuch' is running (running: beta)")
    one_error_line(pm("delete", "nosuch"), 2, "delete", "known: beta")
