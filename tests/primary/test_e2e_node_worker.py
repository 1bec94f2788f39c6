"""Node's Worker and Cluster calls from a runner (tests/apps/node_runner.py), end to end: kill(), disconnect(),
is_dead(), is_connected(), exited_after_disconnect, process, fork(env), setup_primary(), the error event, and
the worker's own current_worker().disconnect()."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable

import httpx
import pytest

from helpers import DEADLINE, FRESH, TEST_APPS, Cluster, wait_until

APPS = ["node_app:wsgi", "node_app:asgi"]


def runner(run_cli: Callable[..., Cluster], app: str, workers: str, *extra: str) -> Cluster:
    return run_cli(app, workers, *extra, cwd=TEST_APPS, script="node_runner.py")


def ask(url: str, path: str) -> dict[str, object]:
    response = FRESH.get(url + path)
    response.raise_for_status()
    answer: dict[str, object] = response.json()
    return answer


def exit_line(cluster: Cluster, worker_id: int | str) -> re.Match[str]:
    return cluster.wait_for_line(rf"^exit ({worker_id}) code (\S+) signal (\S+) after (\S+) dead (\S+) "
                                 r"process (\S+) (\S+) (\S+)$")[0]


def answer_from(url: str, worker_id: int, path: str = "/") -> dict[str, object]:
    """GET ``path`` on new connections (rr: each to the next worker) until worker ``worker_id`` answers."""
    found: list[dict[str, object]] = []
    wait_until(lambda: (answer := ask(url, path))["id"] == worker_id and not found.append(answer),
               f"worker {worker_id} to answer")
    return found[0]


@pytest.mark.parametrize("app", APPS)
def test_kill_and_disconnect_are_planned_exits_and_the_cluster_keeps_fewer(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = runner(run_cli, app, "3")
    url = cluster.wait_ready()
    killed = ask(url, "/ask?cmd=kill")["id"]
    exit_line(cluster, killed)
    disconnected = ask(url, "/ask?cmd=disconnect")["id"]  # rr passes nothing more to the killed one
    assert disconnected != killed
    for worker_id in (killed, disconnected):
        line = exit_line(cluster, worker_id)
        # Both drained on SIGTERM or the stop frame (code 0), planned, dead inside the handler, process filled.
        assert line.groups()[1:] == ("0", "None", "True", "True", "True", "0", "None"), line.group(0)
        cluster.wait_for_line(rf"^disconnect {worker_id} connected False$")
    status = cluster.wait_status(lambda s: s["target"] == 1 and s["ready"] == 1, "one worker kept")
    assert [w["id"] for w in status["workers"]] == [id for id in (1, 2, 3) if id not in (killed, disconnected)]
    assert not re.search(r"^listening 4 ", cluster.output(), re.MULTILINE)  # neither was respawned
    cluster.wait_for_line(r"^nworkers 2 3$")  # gunicorn's nworkers_changed hears of each
    cluster.wait_for_line(r"^nworkers 1 2$")
    assert ask(url, "/")["id"] not in (killed, disconnected)


@pytest.mark.parametrize("app", APPS)
def test_a_crash_is_no_planned_exit_and_sending_to_the_dead_is_an_error_event(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = runner(run_cli, app, "1")
    url = cluster.wait_ready()
    cluster.wait_for_line(r"^listening 1 index 0 connected True dead False after None$")
    with pytest.raises(httpx.TransportError):
        FRESH.get(url + "/crash")
    line = exit_line(cluster, 1)
    assert line.groups()[1:] == ("1", "None", "False", "True", "True", "1", "None"), line.group(0)
    cluster.wait_for_line(r"^listening 2 ")  # a crash is respawned: the slot is kept
    ask(url, "/ask?cmd=send-dead")
    cluster.wait_for_line(r"^send-dead raised MessageError$")
    cluster.wait_for_line(r"^error 1 MessageError$")
    # Killed from outside is a crash too; kill("SIGKILL") from the runner is planned, whatever the signal.
    pid = int(ask(url, "/")["pid"])  # type: ignore[call-overload]
    os.kill(pid, signal.SIGKILL)
    line = exit_line(cluster, 2)
    assert line.groups()[1:] == ("None", "SIGKILL", "False", "True", "True", "None", "SIGKILL"), line.group(0)
    cluster.wait_for_line(r"^listening 3 ")
    # The worker asks for its own SIGKILL, which may land before it answers: that request may be cut.
    with contextlib.suppress(httpx.TransportError):
        ask(url, "/ask?cmd=kill9")
    line = exit_line(cluster, 3)
    assert line.groups()[1:] == ("None", "SIGKILL", "True", "True", "True", "None", "SIGKILL"), line.group(0)


@pytest.mark.parametrize("app", APPS)
def test_fork_env_reaches_the_worker_its_respawn_and_replacement_and_setup_primary_every_fork(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = runner(run_cli, app, "1")
    url = cluster.wait_ready()
    cluster.wait_for_line(r"^setup \{'env': \{'Y': '2'\}, 'args': \['--from-setup'\]\} settings "
                          r"\{'env': \{'Y': '2'\}, 'args': \['--from-setup'\]\}$")
    first = ask(url, "/")
    assert (first["X"], first["Y"], first["args"]) == (None, "2", ["--from-setup"])
    ask(url, "/ask?cmd=fork-env")
    cluster.wait_for_line(r"^forked 2$")
    cluster.wait_for_line(r"^nworkers 2 1$")
    cluster.wait_for_line(r"^listening 2 index 1 ")
    forked = answer_from(url, 2)
    assert (forked["X"], forked["Y"], forked["args"]) == ("1", "2", ["--from-setup"])
    # Its slot's respawn keeps the variable; worker 1 ignores /crash?if_env=X.
    wait_until(lambda: _crash_if_x(url), "worker 2 to take the crash request")
    exit_line(cluster, 2)
    cluster.wait_for_line(r"^listening 3 index 1 ")
    respawned = answer_from(url, 3)
    assert (respawned["X"], respawned["Y"]) == ("1", "2")
    assert ask(url, "/")["id"] in (1, 3) and answer_from(url, 1)["X"] is None
    # A rolling restart's replacement of the slot keeps it too.
    cluster.signal(signal.SIGHUP)
    cluster.wait_for_line(r"rolling restart complete")
    cluster.wait_for_line(r"^listening 5 index 1 ")
    assert answer_from(url, 5)["X"] == "1" and answer_from(url, 4)["X"] is None


def _crash_if_x(url: str) -> bool:
    try:
        FRESH.get(url + "/crash?if_env=X")
    except httpx.TransportError:
        return True
    return False


@pytest.mark.parametrize("app, extra", [("node_app:wsgi", ()), ("node_app:wsgi", ("threads=4",)),
                                        ("node_app:asgi", ())])
def test_the_worker_disconnects_itself_and_its_slot_is_respawned(
    run_cli: Callable[..., Cluster], app: str, extra: tuple[str, ...]
) -> None:
    cluster = runner(run_cli, app, "2", *extra)
    url = cluster.wait_ready()
    left = ask(url, "/leave")  # answered: the request that decides it finishes
    assert left["connected"] is True
    line = exit_line(cluster, left["id"])  # type: ignore[arg-type]
    assert line.groups()[1:] == ("0", "None", "True", "True", "True", "0", "None"), line.group(0)
    cluster.wait_for_line(rf"^listening 3 index {left['index']} ")
    status = cluster.wait_status(lambda s: s["target"] == 2 and s["ready"] == 2, "both slots serving")
    assert left["id"] not in [w["id"] for w in status["workers"]]
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit(DEADLINE) == 0


def test_the_restart_runner_sample_replaces_every_worker_while_requests_succeed(
    run_cli: Callable[..., Cluster]
) -> None:
    cluster = run_cli(script="restart_runner.py", env={"BIND": "127.0.0.1:0", "WORKERS": "3"})
    url = cluster.wait_ready()
    answers: list[int] = []
    failures: list[str] = []
    done = threading.Event()

    def traffic() -> None:
        """New connections, one after another, from before the restart until after it: each must be answered."""
        while not done.is_set():
            try:
                response = FRESH.get(url + "/")
            except httpx.TransportError as exc:
                failures.append(repr(exc))
                continue
            if response.status_code == 200:
                answers.append(response.json()["worker"]["id"])
            else:
                failures.append(response.text)

    client = threading.Thread(target=traffic)
    client.start()
    try:
        wait_until(lambda: answers, "the first answer")
        assert ask(url, "/restart")["worker"]["id"] in (1, 2, 3)  # type: ignore[index]
        serving = cluster.wait_for_line(r"every worker was restarted; serving: \[(.*)\]")[0].group(1)
        count = len(answers)
        wait_until(lambda: len(answers) > count + 3, "answers after the restart")
    finally:
        done.set()
        client.join(DEADLINE)
    assert failures == []
    assert serving == "4, 5, 6"
    assert len(re.findall(r"worker \d left \(exited_after_disconnect True\); worker \d replaces it",
                          cluster.output())) == 3
    assert set(answers[-3:]) <= {4, 5, 6} and set(answers) & {1, 2, 3}
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


def test_a_disconnected_worker_that_overruns_graceful_timeout_is_killed(run_cli: Callable[..., Cluster]) -> None:
    cluster = runner(run_cli, "node_app:wsgi", "2", "graceful_timeout=1")
    url = cluster.wait_ready()
    failed: list[BaseException] = []

    def slow() -> None:
        try:
            FRESH.get(url + "/slow?s=60")
        except httpx.TransportError as exc:
            failed.append(exc)

    client = threading.Thread(target=slow)
    client.start()
    try:
        busy = int(cluster.wait_for_line(r"slow request in worker (\d+)")[0].group(1))
        ask(url, f"/ask?cmd=disconnect&id={busy}")  # answered by the other worker
        line = exit_line(cluster, busy)
        assert line.groups()[1:] == ("None", "SIGKILL", "True", "True", "True", "None", "SIGKILL"), line.group(0)
        assert "did not finish within --graceful-timeout 1s: killing it" in cluster.output()
    finally:
        client.join(DEADLINE)
    assert failed  # its request in flight was cut off
