"""gunicorn's server hooks under their names (issue 26, item 7), from a gunicorn-style --hooks module.

tests/apps/gunicorn_hooks.py writes one line per hook call to $HOOK_LOG: what each was given, and the pid of
the process it ran in, so that each test sees where and when each hook ran.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import DEADLINE, FRESH, SUP_APP_PAIR, TEST_APPS, Cluster, wait_until

# The inline WSGI engine, WSGI on the stack (--threads 2: the bridge), ASGI on clusterrun's HTTP/1.1 protocol, and
# ASGI on uvicorn's (--http uvicorn).
ENGINES = [
    pytest.param("sup_app:wsgi", (), id="wsgi-inline"),
    pytest.param("sup_app:wsgi", ("--threads", "2"), id="wsgi-threads"),
    pytest.param("sup_app:asgi", (), id="asgi"),
    pytest.param("sup_app:asgi", ("--http", "uvicorn"), id="asgi-uvicorn"),
]


def _lines(log: Path, name: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split()[1:] for line in log.read_text().splitlines() if line.split()[0] == name]


def _names(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()]


def _run(run_cli: Callable[..., Cluster], app: str, log: Path, *args: str, **env: str) -> Cluster:
    return run_cli(app, "--port", "0", "--hooks", "gunicorn_hooks", *args, cwd=TEST_APPS,
                   env={"HOOK_LOG": str(log), **env})


@pytest.mark.parametrize(("app", "args"), ENGINES)
def test_pre_and_post_request_run_in_the_worker_around_each_request(
    run_cli: Callable[..., Cluster], app: str, args: tuple[str, ...], tmp_path: Path,
) -> None:
    log = tmp_path / "hooks.log"
    cluster = _run(run_cli, app, log, "--workers", "1", *args)
    url = cluster.wait_ready()
    answer = FRESH.get(url + "/some/wh%20ere", params={"a": "1"}, headers={"X-Token": "abc"})
    assert answer.status_code == 200
    pid = answer.json()["pid"]
    wait_until(lambda: _lines(log, "post_request"), "the post_request line")
    worker = f"1/0/{pid}"
    [pre] = _lines(log, "pre_request")
    # req under gunicorn's names: the path not decoded, the query, the target as sent, headers in upper case.
    assert pre == [worker, str(pid), "GET", "/some/wh%20ere", "a=1", "/some/wh%20ere?a=1", "abc", "1.1"]
    [post] = _lines(log, "post_request")
    kind = "scope" if app.endswith("asgi") else "environ"  # the WSGI environ for a WSGI app, also on the bridge
    assert post == [worker, str(pid), "GET", "/some/wh%20ere", kind, "200", "200_OK"]
    assert _names(log).index("pre_request") < _names(log).index("post_request")


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_request_hooks_that_raise_are_logged_and_the_requests_go_on(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path,
) -> None:
    log = tmp_path / "hooks.log"
    cluster = _run(run_cli, app, log, "--workers", "1", HOOK_RAISE="1")
    url = cluster.wait_ready()
    answers = [FRESH.get(url + "/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert len({a.json()["pid"] for a in answers}) == 1  # the same worker: none died of it
    wait_until(lambda: len(_lines(log, "post_request")) == 3, "three post_request lines")
    cluster.wait_for_line(r"the pre_request hook pre_request raised; the request goes on", count=3)
    cluster.wait_for_line(r"the post_request hook post_request raised; the request goes on", count=3)
    assert "RuntimeError: the APM agent is down" in cluster.output()


def test_the_fork_hooks_and_the_number_of_workers(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cluster = _run(run_cli, "sup_app:wsgi", log, "--workers", "2")
    cluster.wait_ready()
    wait_until(lambda: len(_lines(log, "post_worker_init")) == 2, "both workers' post_worker_init")
    names = _names(log)
    assert names[0] == "nworkers_changed" and _lines(log, "nworkers_changed") == [["2", "None"]]
    assert names[1] == "on_starting"  # gunicorn's order: the arbiter sets its number of workers when it is made
    pre, post = _lines(log, "pre_fork"), _lines(log, "post_fork")
    assert [p[1] for p in pre] == [str(cluster.pid)] * 2  # in the primary
    assert sorted(p[0] for p in pre) == ["1/0/0", "2/1/0"]  # no pid before the fork
    assert all(p[0].endswith(f"/{p[1]}") for p in post)  # in the child, which knows its pid
    assert {p[2] for p in post} == {"sup_app:wsgi"}
    for wid in ("1", "2"):  # pre_fork, then post_fork (before the app loads), then post_worker_init
        calls = [line.split() for line in log.read_text().splitlines()]
        assert [c[0] for c in calls if len(c) > 1 and c[1].startswith(wid + "/")] == [
            "pre_fork", "post_fork", "post_worker_init"]

    cluster.signal(signal.SIGTTIN)  # one more: the number changes, one more fork
    wait_until(lambda: len(_lines(log, "post_worker_init")) == 3, "the third worker")
    assert _lines(log, "nworkers_changed")[-1] == ["3", "2"]

    victim = int(post[0][1])
    os.kill(victim, signal.SIGKILL)  # a crash: reaped in the primary, then respawned
    wait_until(lambda: _lines(log, "child_exit"), "the child_exit line")
    [gone] = _lines(log, "child_exit")
    assert gone[0].endswith(f"/{victim}") and gone[1] == str(cluster.pid)
    wait_until(lambda: len(_lines(log, "post_worker_init")) == 4, "the respawned worker")
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
    assert len(_lines(log, "child_exit")) == 4  # the crashed one, then the three stopped
    assert "pre_exec" not in _names(log)  # never: the primary is never re-executed
    assert "the pre_exec hook pre_exec never runs" in cluster.output()


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_sigquit_runs_worker_int_in_every_worker(run_cli: Callable[..., Cluster], app: str, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cluster = _run(run_cli, app, log, "--workers", "2", "--graceful-timeout", "60")
    url = cluster.wait_ready()
    pids = {FRESH.get(url + "/").json()["pid"] for _ in range(4)} | set(cluster.worker_pids())
    cluster.signal(signal.SIGQUIT)  # gunicorn's quick stop: SIGQUIT to each worker
    assert cluster.wait_exit() == 0
    assert {line[1] for line in _lines(log, "worker_int")} == {str(pid) for pid in pids}
    assert {line[1] for line in _lines(log, "worker_exit")} == {str(pid) for pid in pids}


def test_sigint_to_a_worker_runs_worker_int_and_it_serves_on(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cluster = _run(run_cli, "sup_app:wsgi", log, "--workers", "1")
    url = cluster.wait_ready()
    pid = FRESH.get(url + "/").json()["pid"]
    os.kill(pid, signal.SIGINT)  # as Ctrl-C sends it to the whole process group: the primary decides
    wait_until(lambda: _lines(log, "worker_int"), "the worker_int line")
    assert _lines(log, "worker_int") == [[f"1/0/{pid}", str(pid)]]
    assert FRESH.get(url + "/").json()["pid"] == pid


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_worker_abort_runs_when_the_watchdog_ends_a_hung_worker(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path,
) -> None:
    log = tmp_path / "hooks.log"
    cluster = _run(run_cli, app, log, "--workers", "1", "--timeout", "1")
    url = cluster.wait_ready()
    pid = FRESH.get(url + "/").json()["pid"]
    with pytest.raises(httpx.HTTPError):
        FRESH.get(url + "/hang")  # the worker's loop is stuck in the app: no heartbeat
    wait_until(lambda: _lines(log, "worker_abort"), "the worker_abort line")
    assert _lines(log, "worker_abort") == [[f"1/0/{pid}", str(pid)]]
    cluster.wait_for_line(r"sent no heartbeat")
    wait_until(lambda: FRESH.get(url + "/").json()["pid"] != pid, "a new worker")


def test_a_post_fork_hook_that_raises_is_a_boot_failure(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    hooks = tmp_path / "bad_hooks.py"
    hooks.write_text("def post_fork(config, worker):\n    raise OSError('no such device')\n")
    cluster = run_cli("sup_app:wsgi", "--port", "0", "--hooks", "bad_hooks", cwd=TEST_APPS,
                      env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert cluster.wait_exit(DEADLINE) == 3
    assert "the post_fork hook post_fork raised OSError: no such device" in cluster.output()


@pytest.mark.parametrize("args", [(), ("--threads", "2")], ids=["inline", "threads"])
def test_post_request_runs_after_a_streamed_body_and_a_file(
    run_cli: Callable[..., Cluster], args: tuple[str, ...], tmp_path: Path,
) -> None:
    """Bodies that are no list: post_request runs when the app's iterable is closed, the file sent whole."""
    log = tmp_path / "hooks.log"
    cluster = _run(run_cli, "engine_app:app", log, "--workers", "1", *args)
    url = cluster.wait_ready()
    file = FRESH.get(url + "/file?300000")
    assert file.status_code == 200 and len(file.content) == 300000
    stream = FRESH.get(url + "/stream")
    assert stream.status_code == 200 and stream.headers["transfer-encoding"] == "chunked"
    wait_until(lambda: len(_lines(log, "post_request")) == 2, "the post_request lines")
    assert [line[2:] for line in _lines(log, "post_request")] == [["GET", "/file", "environ", "200", "200_OK"],
                                                                  ["GET", "/stream", "environ", "200", "200_OK"]]
