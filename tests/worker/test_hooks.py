"""Unit tests of the worker's hooks: the ones of its start that fail it, and ssl_context's checks."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from clusterrun.errors import BootError
from clusterrun.identity import WorkerInfo
from clusterrun.worker import hooks as workerhooks

CONFIG: Any = object()  # the hooks pass the Config on without reading it


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    yield
    workerhooks.clear()


def test_without_an_ssl_context_hook_the_default_factory_is_used() -> None:
    def factory() -> ssl.SSLContext:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    assert workerhooks.ssl_context(CONFIG, factory) is factory


def test_an_ssl_context_hook_that_returns_no_context_fails_the_worker_s_boot() -> None:
    workerhooks.add("ssl_context", lambda config, factory: "TLSv1.3")
    with pytest.raises(BootError, match=r"the ssl_context hook .*<lambda> returned a str, not an ssl\.SSLContext"):
        workerhooks.ssl_context(CONFIG, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))()


def test_an_ssl_context_hook_customizes_the_default_context() -> None:
    def tls13(config: Any, factory: Any) -> ssl.SSLContext:
        context: ssl.SSLContext = factory()
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context

    workerhooks.add("ssl_context", tls13)
    made = workerhooks.ssl_context(CONFIG, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))()
    assert made.minimum_version is ssl.TLSVersion.TLSv1_3


def test_post_worker_init_is_worker_init_s_moment() -> None:
    seen: list[str] = []
    workerhooks.add("worker_init", lambda worker: seen.append("worker_init"))
    workerhooks.add("post_worker_init", lambda worker: seen.append("post_worker_init"))
    workerhooks.init(WorkerInfo(1, 0, os.getpid()))
    assert seen == ["worker_init", "post_worker_init"]  # in the order they were registered


def test_a_post_fork_hook_that_raises_is_named_in_the_boot_failure() -> None:
    def post_fork(config: Any, worker: Any) -> None:
        raise OSError("no such device")

    workerhooks.add("post_fork", post_fork)
    with pytest.raises(BootError, match=r"the post_fork hook .*post_fork raised OSError: no such device"):
        workerhooks.post_fork(CONFIG, WorkerInfo(1, 0, os.getpid()))
