"""End-to-end: every request handler can tell which worker it runs in (issue #2, point 7).

One numbering everywhere: ``id`` 1..N and ``index`` 0..N-1 at start, the same in the JSON of the
sample apps, the ``X-Worker-Id`` header, ``clusterrun.current_worker()``, the WSGI environ, the ASGI
scope state, the worker's environment variables, its process title and its log lines.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import SAMPLE_APP_PAIR, TEST_APPS, Cluster, answers_from_every_worker, get, ready_line, wait_until

WORKERS = 2
HAS_SETPROCTITLE = importlib.util.find_spec("setproctitle") is not None
RAW_APPS = ["e2e_wsgi_raw:app", "e2e_asgi_raw:app", "e2e_asgi_class:app"]  # tests/apps; all report identity


def current_worker(body: dict[str, Any]) -> dict[str, int]:
    worker = body["current_worker"]
    assert isinstance(worker, dict), body
    return worker


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_sample_app_names_a_live_worker_in_json_header_and_title(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", str(WORKERS), "--port", "0")
    url = cluster.wait_ready()
    pids = ready_line(cluster).pids
    assert sorted(pids) == sorted(cluster.worker_pids())
    workers = []
    for pid, response in answers_from_every_worker(url, pids).items():
        body = response.json()
        worker = body["worker"]
        assert worker["pid"] == pid == body["pid"]
        assert pid in cluster.worker_pids()
        assert response.headers.get("X-Worker-Id") == str(worker["id"]), response.headers
        if HAS_SETPROCTITLE:  # the process title carries the same numbering
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            assert f"worker {worker['id']}" in title and f"index {worker['index']}" in title, title
        workers.append(worker)
    assert sorted(w["id"] for w in workers) == list(range(1, WORKERS + 1))
    assert sorted(w["index"] for w in workers) == list(range(WORKERS))


@pytest.mark.parametrize("app", RAW_APPS)
def test_every_identity_source_agrees(run_cli: Callable[..., Cluster], app: str) -> None:
    """current_worker(), environ["clusterrun.worker"] or scope["state"]["clusterrun.worker"], and the env vars."""
    cluster = run_cli(app, "--workers", str(WORKERS), "--port", "0", cwd=TEST_APPS)
    url = cluster.wait_ready()
    pids = ready_line(cluster).pids
    assert sorted(pids) == sorted(cluster.worker_pids())
    workers = []
    for pid, response in answers_from_every_worker(url, pids, current_worker).items():
        body = response.json()
        worker = body["current_worker"]
        assert worker["pid"] == pid == body["pid"]
        assert body["request_worker"] == worker, f"the {body['interface']} request's worker differs: {body}"
        assert body["env"] == {"id": str(worker["id"]), "index": str(worker["index"])}, body
        workers.append(worker)
    assert sorted(w["id"] for w in workers) == list(range(1, WORKERS + 1))
    assert sorted(w["index"] for w in workers) == list(range(WORKERS))


@pytest.mark.parametrize("app", ["e2e_wsgi_raw:app", "e2e_asgi_raw:app"])
def test_worker_log_lines_carry_its_identity(run_cli: Callable[..., Cluster], app: str) -> None:
    """A handler's logging.getLogger(...).warning(...) line names the worker's id, index and pid."""
    cluster = run_cli(app, "--workers", str(WORKERS), "--port", "0", cwd=TEST_APPS)
    url = cluster.wait_ready()
    pids = ready_line(cluster).pids
    logged: dict[int, tuple[str, dict[str, int]]] = {}  # pid: the token it logged, the worker it said it is

    def log_on_a_new_connection() -> bool:
        token = uuid.uuid4().hex
        response = get(url, f"/log?{token}")
        assert response.status_code == 200, response.text
        worker = current_worker(response.json())
        logged.setdefault(worker["pid"], (token, worker))
        return set(logged) == set(pids)

    wait_until(log_on_a_new_connection, "a logged request in every worker")
    for pid, (token, worker) in logged.items():
        [line] = cluster.wait_for_line(rf"e2e-marker {token}$")
        assert "WARNING" in line.string, line.string
        assert f"worker {worker['id']} index {worker['index']} pid {pid}" in line.string, line.string
