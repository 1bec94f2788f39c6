"""The Node-style cluster API: messages, broadcast, events and hooks, end to end."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import FRESH, TEST_APPS, Cluster, run_to_exit, wait_until

MSG_APPS = ["msg_app:wsgi", "msg_app:asgi"]


def runner(run_cli: Callable[..., Cluster], app: str, workers: str, *extra: str) -> Cluster:
    return run_cli(app, workers, *extra, cwd=TEST_APPS, script="msg_runner.py")


def get(url: str) -> Any:
    response = FRESH.get(url)
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize("app, extra", [("msg_app:wsgi", ()), ("msg_app:wsgi", ("threads=4",)),
                                        ("msg_app:asgi", ())])
def test_a_message_goes_worker_to_primary_and_back(
    run_cli: Callable[..., Cluster], app: str, extra: tuple[str, ...]
) -> None:
    cluster = runner(run_cli, app, "1", *extra)
    url = cluster.wait_ready()
    get(url + "/send?text=hello")
    cluster.wait_for_line(r"event message 1 \{'text': 'hello', 'from': 1\}")
    wait_until(lambda: get(url + "/inbox")["inbox"] == [{"echo": "hello"}], "the echo to reach the worker")


@pytest.mark.parametrize("app", MSG_APPS)
def test_broadcast_reaches_every_other_worker_exactly_once(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "3", "--port", "0", cwd=TEST_APPS)
    url = cluster.wait_ready()
    sender = get(url + "/broadcast?text=flush")["id"]
    lines = cluster.wait_for_line(r"worker (\d) got message \{\"text\": \"flush\", \"from\": (\d)\}", count=2)
    assert sorted(int(m.group(1)) for m in lines) == sorted({1, 2, 3} - {sender})
    # rr: three new connections reach the three workers once each.
    inboxes = {answer["id"]: answer["inbox"] for answer in (get(url + "/inbox") for _ in range(3))}
    assert inboxes[sender] == []
    assert all(inboxes[other] == [{"text": "flush", "from": sender}] for other in {1, 2, 3} - {sender})


def _events(cluster: Cluster) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"event (\w+) (\d+)", cluster.output())]


def _ordered(events: list[tuple[str, int]], worker: int, names: list[str]) -> bool:
    seen = [name for name, wid in events if wid == worker and name in names]
    return seen == names


@pytest.mark.parametrize("app", MSG_APPS)
def test_events_fire_in_order_on_start_crash_reload_and_stop(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = runner(run_cli, app, "2")
    url = cluster.wait_ready()
    start = ["fork", "online", "listening"]
    assert all(_ordered(_events(cluster), wid, start) for wid in (1, 2))

    with pytest.raises(httpx.TransportError):
        FRESH.get(url + "/crash")
    cluster.wait_for_line(r"event listening 3")
    crashed = int(cluster.wait_for_line(r"event exit (\d) 1 None")[0].group(1))
    assert _ordered(_events(cluster), crashed, [*start, "disconnect", "exit"])
    assert _ordered(_events(cluster), 3, start)

    cluster.signal(signal.SIGHUP)
    cluster.wait_for_line(r"rolling restart complete")
    cluster.wait_for_line(r"event exit \d+ 0 None", count=2)
    events = _events(cluster)
    old = ({1, 2} - {crashed}) | {3}
    for wid in old:
        assert _ordered(events, wid, [*start, "disconnect", "exit"])
    for new in (4, 5):
        assert _ordered(events, new, start)
    # A slot's replacement listens before the old worker it replaces disconnects.
    assert events.index(("listening", 4)) < min(events.index(("disconnect", wid)) for wid in old)

    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
    assert all(_ordered(_events(cluster), wid, [*start, "disconnect", "exit"]) for wid in (4, 5))


@pytest.mark.parametrize("app", MSG_APPS)
def test_a_raising_handler_is_logged_and_the_cluster_goes_on(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = runner(run_cli, app, "1")
    url = cluster.wait_ready()
    get(url + "/send?text=boom")
    cluster.wait_for_line(r"the 'message' event handler echo raised; the cluster goes on")
    assert "RuntimeError: handler failed on purpose" in cluster.output()
    get(url + "/send?text=after")
    wait_until(lambda: get(url + "/inbox")["inbox"] == [{"echo": "after"}], "the cluster to answer again")
    assert cluster.proc.poll() is None


@pytest.mark.parametrize("app", MSG_APPS)
def test_a_message_that_is_not_json_raises_in_the_worker(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "1", "--port", "0", cwd=TEST_APPS)
    url = cluster.wait_ready()
    error = get(url + "/bad")["error"]
    assert error.startswith("the message is not JSON-serialisable (Object of type object is not JSON serializable)")


@pytest.mark.parametrize("app", MSG_APPS)
def test_hooks_module_from_the_command_line(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "1", "--port", "0", "--hooks", "msg_hooks", cwd=TEST_APPS)
    url = cluster.wait_ready()
    assert "hook fork 1" in cluster.output() and "hook listening 1" in cluster.output()
    get(url + "/send?text=ping")
    cluster.wait_for_line(r"hook message 1 ping")
    wait_until(lambda: get(url + "/inbox")["inbox"] == [{"echo": "ping"}], "the hook's reply")


def test_bad_hooks_are_a_configuration_error() -> None:
    result = run_to_exit("msg_app:asgi", "--hooks", "no_such_hooks", "--port", "0", cwd=TEST_APPS)
    assert result.returncode == 2
    assert "cannot load --hooks 'no_such_hooks': ModuleNotFoundError" in result.stderr
    result = run_to_exit("msg_app:asgi", "--hooks", "json", "--port", "0", cwd=TEST_APPS)
    assert result.returncode == 2
    assert "--hooks 'json' has no function named after a cluster event" in result.stderr


def test_cache_sample_invalidates_every_worker(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = run_cli("cache_app:app", "--workers", "3", "--port", "0", env={"CACHE_DEMO_DB": str(tmp_path / "db")})
    url = cluster.wait_ready() + "/greeting"
    warm = [get(url) for _ in range(6)]
    assert {a["greeting"] for a in warm} == {"hello"} and any(a["cached"] for a in warm)
    assert FRESH.put(url, params={"text": "hi"}).json()["greeting"] == "hi"
    wait_until(lambda: {get(url)["greeting"] for _ in range(3)} == {"hi"}, "every worker to drop its cache")


def test_runner_sample_logs_the_cluster_events(run_cli: Callable[..., Cluster]) -> None:
    cluster = run_cli(script="runner.py", env={"BIND": "127.0.0.1:0"})
    url = cluster.wait_ready()
    cluster.wait_for_line(r"worker [12] \(slot \d, pid \d+\) is serving; live: \[1, 2\]")
    assert get(url + "/")["worker"]["id"] in (1, 2)
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
    assert len(re.findall(r"worker \d exited \(code 0\)", cluster.output())) == 2
