"""Worker-side and primary-side hooks (--hooks): reopening a pool after --preload, and their order."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from helpers import FRESH, start, wait_until


@pytest.mark.parametrize("app", ["pool_app:wsgi", "pool_app:asgi"])
def test_worker_init_reopens_what_preload_made_in_the_primary(run_cli: Any, app: str, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cluster = start(run_cli, app, "--workers", "2", "--preload", "--hooks", "pool_hooks",
                    env={"POOL_HOOK_LOG": str(log)})
    url = cluster.wait_ready()
    answers = [FRESH.get(url).json() for _ in range(4)]
    assert {a["imported_in"] for a in answers} == {cluster.pid}  # imported once, in the primary
    assert all(a["pool_pid"] == a["pid"] for a in answers)  # yet each worker uses a pool of its own
    assert len({a["pid"] for a in answers}) == 2

    cluster.signal(signal.SIGHUP)
    cluster.wait_status(lambda s: s["reload"]["state"] == "complete", "the rolling restart")
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
    lines = log.read_text().splitlines()
    names = [line.split()[0] for line in lines]
    assert names[0] == "on_starting" and names[-1] == "on_exit"
    assert names.index("when_ready") > max(i for i, n in enumerate(names[:4]) if n == "worker_init")
    assert names.count("worker_init") == 4 and names.count("worker_exit") == 4  # 2 first, 2 after the reload
    assert names.count("on_reload") == 1 and names.index("on_reload") > names.index("when_ready")


def test_a_worker_init_that_raises_is_a_boot_failure_that_names_it(run_cli: Any, tmp_path: Path) -> None:
    cluster = start(run_cli, "pool_app:wsgi", "--workers", "2", "--hooks", "pool_hooks",
                    env={"POOL_HOOK_LOG": str(tmp_path / "hooks.log"), "POOL_HOOK_FAIL": "1"})
    assert cluster.wait_exit() == 3
    output = cluster.output()
    assert "the worker_init hook worker_init raised RuntimeError: cannot reach the database" in output
    assert output.count("failed to boot") == 1
    wait_until(lambda: cluster.worker_pids() == [], "no worker left")
