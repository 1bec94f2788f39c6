"""clusterrun top, as a person sees it: in a real pseudo-terminal, and as plain text in a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import sys
import time
from typing import Any

import pytest

from helpers import DEADLINE, FRESH, TEST_APPS, run_to_exit, start

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """``clusterrun top NAME`` on the child side of a pty; what it drew, escape sequences removed."""

    def __init__(self, *args: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: run top (from a folder where no checkout shadows the package)
            os.chdir(TEST_APPS)
            os.execv(sys.executable, [sys.executable, "-m", "clusterrun", "top", *args])
        self.screen = b""
        self.reaped = False

    def wait_for(self, *texts: str) -> str:
        deadline = time.monotonic() + DEADLINE
        while not all(text in self.text for text in texts):
            if time.monotonic() > deadline:
                pytest.fail(f"{texts} never on screen:\n{self.text[-3000:]}")
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:  # the child closed its side
                    pytest.fail(f"top ended before {texts} showed:\n{self.text[-3000:]}")
        return self.text

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.screen).decode(errors="replace")

    def press(self, key: str) -> None:
        os.write(self.fd, key.encode())

    def wait_exit(self) -> int:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.reaped = True
                return os.waitstatus_to_exitcode(status)
            with_data, _, _ = select.select([self.fd], [], [], 0.1)
            if with_data:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:
                    pass
        pytest.fail("top did not exit")

    def close(self) -> None:
        if not self.reaped:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_top_in_a_terminal_shows_every_worker_and_scales_with_a_key(run_cli: Any) -> None:
    cluster = start(run_cli, "metrics_app:wsgi", "--workers", "2", "--name", "mon", "--metrics", "127.0.0.1:0")
    url = cluster.wait_ready()
    for _ in range(20):
        assert FRESH.get(url).status_code == 200
    pids = [str(w["pid"]) for w in cluster.status()["workers"]]
    terminal = Terminal("mon")
    try:
        terminal.wait_for(*pids, "REQ/S", "P99", "keys: q quit")
        terminal.press("+")
        status = cluster.wait_status(lambda s: s["ready"] == s["target"] == 3, "a third worker serving")
        terminal.wait_for(*(str(w["pid"]) for w in status["workers"]))
        terminal.press("q")
        assert terminal.wait_exit() == 0
    finally:
        terminal.close()


def test_top_in_a_pipe_prints_plain_frames(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:asgi", "--workers", "2", "--name", "piped")
    cluster.wait_ready()
    result = run_to_exit("top", "piped", "--count", "2", cwd=TEST_APPS)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout  # no escape sequences into a file or a pipe
    assert result.stdout.count("REQ/S") == 2 and "latency needs --metrics" in result.stdout
    for worker in cluster.status()["workers"]:
        assert str(worker["pid"]) in result.stdout
