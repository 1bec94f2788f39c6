"""Unit tests of the door: Cluster.on routes worker hooks to the worker, cluster events to the primary."""

from __future__ import annotations

import os

import pytest

from clusterrun import Cluster
from clusterrun.errors import ConfigError
from clusterrun.identity import WorkerInfo
from clusterrun.worker import hooks as workerhooks

# Events and hooks


def test_the_door_routes_worker_hooks_to_the_worker_and_cluster_events_to_the_primary() -> None:
    cluster = Cluster("app:app", bind="127.0.0.1:0")
    seen: list[object] = []
    try:
        cluster.on("worker_init", seen.append)
        cluster.on("exit")(seen.append)  # as a decorator
        workerhooks.init(WorkerInfo(1, 0, os.getpid()))
        assert seen == [WorkerInfo(1, 0, os.getpid())]  # the hook ran as the worker would run it
        assert cluster.events.wanted("exit") and not cluster.events.wanted("online")
        with pytest.raises(ConfigError, match=r"unknown cluster event 'bogus': choose one of fork, .*, on_exit, "
                                              r".*, pre_request, .*, worker_exit$"):
            cluster.on("bogus", print)
        with pytest.raises(ConfigError, match="the handler for event 'worker_exit' is a int, not a function"):
            cluster.on("worker_exit", 3)
    finally:
        workerhooks.clear()


def test_setup_primary_takes_env_and_args_and_names_anything_else() -> None:
    cluster = Cluster("app:app", bind="127.0.0.1:0")
    seen: list[object] = []
    cluster.on("setup", seen.append)
    cluster.setup_primary(env={"A": "1"}, args=["--x"])
    cluster.setup_primary(env={"B": "2"})
    assert seen[-1] == cluster.settings == {"env": {"A": "1", "B": "2"}, "args": ["--x"]} and len(seen) == 2
    with pytest.raises(ConfigError, match=r"setup_primary\(\) has no setting 'silent': it takes env, args"):
        cluster.setup_primary(silent=True)
    with pytest.raises(ConfigError, match="env entry 'A': 1 is not a variable name and a string value"):
        cluster.setup_primary(env={"A": 1})
    with pytest.raises(ConfigError, match=r"fork\(env=\.\.\.\): env is a list; give a dict of strings"):
        cluster.fork(env=["A=1"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"setup_primary\(args='--x'\): give a list of strings"):
        cluster.setup_primary(args="--x")


# gunicorn's server hooks (its docs, "Server Hooks"), ssl_context of 21.0 included.
GUNICORN_HOOKS = ("on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init", "worker_int",
                  "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit", "worker_exit",
                  "nworkers_changed", "on_exit", "ssl_context")


def test_every_gunicorn_hook_name_is_accepted() -> None:
    cluster = Cluster("app:app", bind="127.0.0.1:0")
    try:
        for name in GUNICORN_HOOKS:
            cluster.on(name, lambda *args: None)
    finally:
        workerhooks.clear()


def test_post_request_takes_two_to_four_parameters_as_in_gunicorn() -> None:
    cluster = Cluster("app:app", bind="127.0.0.1:0")
    try:
        cluster.on("post_request", lambda worker, req: None)
        cluster.on("post_request", lambda worker, req, environ: None)
        with pytest.raises(ConfigError, match=r"the post_request hook .* takes 1 parameter: give it \(worker, req\)"):
            cluster.on("post_request", lambda worker: None)
        with pytest.raises(ConfigError, match="a second ssl_context hook"):
            cluster.on("ssl_context", lambda config, factory: factory())
            cluster.on("ssl_context", lambda config, factory: factory())
    finally:
        workerhooks.clear()
