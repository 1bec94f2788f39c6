"""Unit tests of the inline engine's loop (adapters/engine/reactor.py): asyncio's loop API, on ``selectors``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import pytest
from clusterrun.adapters.engine.reactor import SelectorLoop


def test_timers_run_in_order_and_cancel() -> None:
    loop = SelectorLoop()
    ran: list[str] = []
    start = loop.time()
    loop.call_at(start + 0.03, ran.append, "third")
    loop.call_later(0.01, ran.append, "second")
    loop.call_later(0.02, ran.append, "never").cancel()
    loop.call_soon(ran.append, "first")
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    loop.close()
    assert ran == ["first", "second", "third"]


def test_readers_and_writers() -> None:
    loop = SelectorLoop()
    left, right = socket.socketpair()
    got: list[bytes] = []
    loop.add_writer(left.fileno(), lambda: (left.send(b"ping"), loop.remove_writer(left.fileno())))
    loop.add_reader(right.fileno(), lambda: got.append(right.recv(10)))
    loop.run_until(lambda: bool(got))
    assert got == [b"ping"]
    assert loop.remove_reader(right.fileno()) is True and loop.remove_reader(right.fileno()) is False
    assert loop.remove_writer(left.fileno()) is False
    loop.close()
    left.close()
    right.close()


def test_call_soon_threadsafe_wakes_the_loop() -> None:
    loop = SelectorLoop()
    woken: list[str] = []
    thread = threading.Thread(target=loop.call_soon_threadsafe, args=(woken.append, "from a thread"))
    loop.call_soon(thread.start)
    loop.run_until(lambda: bool(woken))  # no timer: only the self-pipe can wake the select
    thread.join()
    loop.close()
    assert woken == ["from a thread"]


def test_a_callback_that_raises_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    loop = SelectorLoop()
    ran: list[int] = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(ran.append, 1)
    with caplog.at_level(logging.ERROR, logger="clusterrun"):
        loop.run_until(lambda: bool(ran))
    loop.close()
    assert ran == [1]
    (record,) = caplog.records
    assert record.getMessage().startswith("Exception in callback") and record.exc_info is not None


def test_signal_handler_runs_on_the_loop() -> None:
    loop = SelectorLoop()
    got: list[str] = []
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
        loop.run_until(lambda: bool(got))
        assert got == ["usr2"]
        assert loop.remove_signal_handler(signal.SIGUSR2) is True
    finally:
        loop.close()
        signal.signal(signal.SIGUSR2, previous)
