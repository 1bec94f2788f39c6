"""systemd's notify protocol (sd_notify), for ``Type=notify`` and ``Type=notify-reload`` units.

When systemd starts clusterrun with ``NOTIFY_SOCKET`` set, the primary tells it, in datagrams of
``KEY=value`` lines: ``READY=1`` once every worker of the first generation serves (not at bind time);
``STATUS=...`` a line people read in ``systemctl status``, refreshed every second; ``RELOADING=1`` with
``MONOTONIC_USEC=`` when a rolling restart starts and ``READY=1`` when it ends; ``STOPPING=1`` on a graceful
stop; and, when ``WATCHDOG_USEC`` is set for this process, ``WATCHDOG=1`` every half of it, from the primary's
own loop, so that a wedged primary stops pinging and systemd restarts it. The protocol is a few lines: one
unconnected datagram per message to the socket's path (a leading ``@`` means Linux's abstract namespace).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from clusterrun.host.timers import Timers

logger = logging.getLogger("clusterrun")

STATUS_EVERY = 1.0


class Notifier:
    def __init__(self, timers: Timers, status: Callable[[], str], environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.timers = timers
        self.status_text = status
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        usec = environ.get("WATCHDOG_USEC", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_every = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else 0.0
        self._sock: socket.socket | None = None
        self._reloading = False
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def start(self) -> None:
        """Begin the periodic status (and the watchdog pings, if systemd asked for them)."""
        if not self.enabled:
            return
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.set_inheritable(False)
        self._status_tick()
        if self.watchdog_every:
            self._ping()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def filenos(self) -> list[int]:
        return [self._sock.fileno()] if self._sock is not None else []

    # The moments systemd cares about.

    def ready(self) -> None:
        self._reloading = False
        self.send("READY=1", f"STATUS={self.status_text()}")

    def reloading(self) -> None:
        self._reloading = True
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                  "STATUS=reloading: replacing the workers one at a time")

    def reload_finished(self) -> None:
        if self._reloading:
            self.ready()

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: draining the workers")

    def send(self, *lines: str) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):  # systemd gone or the socket full: never the primary's problem
            self._sock.sendto("\n".join(lines).encode(), self.address)

    def _status_tick(self) -> None:
        if self._sock is None:
            return
        text = self.status_text()
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")
        self.timers.add(STATUS_EVERY, self._status_tick)

    def _ping(self) -> None:
        # A timer of the primary's loop: it fires only while the loop turns, which is what systemd checks.
        if self._sock is None:
            return
        self.send("WATCHDOG=1")
        self.timers.add(self.watchdog_every, self._ping)
