"""The fixtures of the suite: ``run_cli`` (the real CLI in a subprocess, always reaped) and ``client``.

``run_cli`` starts ``python -m clusterrun`` in its own session with its output
going to a file under ``tmp_path`` (no pipe to fill), and yields a ``Cluster``
(tests/helpers.py) that can wait for log lines, read the real listener addresses
and send signals. In ``finally`` the whole process group is killed and the primary
reaped. Everything that is not a fixture lives in helpers.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

# helpers' asserts get pytest's introspection on failure, as they had when they lived in conftest and test modules.
pytest.register_assert_rewrite("helpers")

from helpers import DEADLINE, FRESH, SAMPLE_APPS, Cluster, limit_descriptors, start_in_home, stop_and_reap  # noqa: E402


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start ``clusterrun ARGS`` (cwd: sample_apps by default); every process is stopped and reaped after."""
    started: list[Cluster] = []

    def start(
        *args: str, cwd: Path = SAMPLE_APPS, env: dict[str, str] | None = None, script: str | None = None,
        nofile: int | None = None,
    ) -> Cluster:
        """``clusterrun ARGS``, or with ``script`` a runner script of the Cluster API: ``python SCRIPT ARGS``.

        ``nofile``: the soft descriptor limit of the cluster (``ulimit -n``), workers included.
        """
        log = tmp_path / f"clusterrun-{len(started)}.log"
        # TMPDIR: what the cluster leaves in the temp folder when it is SIGKILLed below (the folder of --metrics)
        # goes with the test's own folder.
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path), **(env or {})}
        full_env.pop("WEB_CONCURRENCY", None) if "WEB_CONCURRENCY" not in (env or {}) else None
        full_env.pop("CLUSTERRUN_SCHED_POLICY", None) if "CLUSTERRUN_SCHED_POLICY" not in (env or {}) else None
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *([script] if script else ["-m", "clusterrun"]), *args], cwd=cwd, stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=full_env, start_new_session=True,
                preexec_fn=None if nofile is None else functools.partial(limit_descriptors, nofile),
            )
        cluster = Cluster(proc, log)
        started.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(cluster.proc.pid, signal.SIGKILL)
            cluster.proc.wait(DEADLINE)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """This test's $CLUSTERRUN_HOME."""
    return tmp_path / "home"


@pytest.fixture
def named(home: Path) -> Iterator[Callable[..., Cluster]]:
    """``named(NAME, APP, *flags)``: a cluster started as ``clusterrun start`` starts one (helpers.start_in_home), in
    ``home``; each is stopped and reaped after the test."""
    started: list[Cluster] = []

    def start(name: str, app: str, *args: str) -> Cluster:
        started.append(start_in_home(home, name, app, *args))
        return started[-1]

    try:
        yield start
    finally:
        for cluster in started:
            stop_and_reap(cluster)


@pytest.fixture(scope="session", autouse=True)
def _close_fresh_client() -> Iterator[None]:
    yield
    FRESH.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=DEADLINE) as http:
        yield http


@pytest.fixture(scope="session", autouse=True)
def _private_control_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every cluster the suite starts puts its control socket under a folder of the session's own.

    Not the user's: a cluster of the developer's named like a test app (flask_app) would refuse the test's
    cluster of the same name, and the tests would see each other's sockets in clusterrun ls otherwise. The temp
    folder and HOME are the session's too: the commands also look in clusterrun-UID there and in
    ~/.clusterrun/run (where clusters started without a runtime folder go), which must not show the user's.
    """
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    private = {"XDG_RUNTIME_DIR": str(runtime), "TMPDIR": str(tmp_path_factory.mktemp("tmp")),
               "HOME": str(tmp_path_factory.mktemp("home"))}
    saved = {name: os.environ.get(name) for name in private}
    os.environ.update(private)
    yield runtime
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
