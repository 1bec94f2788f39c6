"""Unit tests of how a worker's message callbacks receive a handle (clusterrun.worker.messaging)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

import clusterrun
from clusterrun.worker import messaging


@pytest.fixture
def callbacks() -> Iterator[list[Any]]:
    """The callbacks' calls; the module's registrations are put back as they were after."""
    saved = list(messaging._callbacks)
    messaging._callbacks.clear()
    calls: list[Any] = []
    yield calls
    messaging._callbacks[:] = saved


def test_two_argument_callbacks_get_the_handle_and_one_argument_ones_the_message(callbacks: list[Any]) -> None:
    clusterrun.on_message(lambda message: callbacks.append(("one", message)))
    clusterrun.on_message(lambda message, handle: callbacks.append(("two", message, handle)))
    clusterrun.on_message(lambda *args: callbacks.append(("star", *args)))
    ours, theirs = socket.socketpair()
    try:
        messaging.dispatch({"m": 1}, lambda coroutine: None)
        messaging.dispatch({"m": 2}, lambda coroutine: None, ours)
        assert callbacks == [("one", {"m": 1}), ("two", {"m": 1}, None), ("star", {"m": 1}, None),
                             ("one", {"m": 2}), ("two", {"m": 2}, ours), ("star", {"m": 2}, ours)]
        assert ours.fileno() >= 0  # taken: the app's to close
    finally:
        ours.close()
        theirs.close()


def test_a_handle_no_callback_takes_is_closed(callbacks: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    clusterrun.on_message(lambda message: callbacks.append(message))
    ours, theirs = socket.socketpair()
    try:
        messaging.dispatch("hello", lambda coroutine: None, ours)
        assert callbacks == ["hello"]
        assert ours.fileno() == -1
        assert "no on_message callback takes (message, handle): closed it" in caplog.text
    finally:
        theirs.close()


def test_serve_connection_outside_a_worker_says_where_it_works() -> None:
    with socket.socket() as sock, pytest.raises(clusterrun.MessageError, match=r"works only inside a clusterrun"):
        clusterrun.serve_connection(sock)
