"""``--pid-file``: the primary's pid in a file, for init scripts and monitors that want one.

Written once the listeners are bound (a start that fails to bind leaves none), removed on exit. A file that
names a live process refuses the start (another clusterrun, most likely); one that names a dead process is a
leftover of a killed primary and is replaced.
"""

from __future__ import annotations

import contextlib
import os

from clusterrun.errors import ConfigError


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._written = False

    def write(self) -> None:
        other = _pid_in(self.path)
        if other is not None and other != os.getpid() and running(other):
            raise ConfigError(f"the pid file {self.path} names a running process ({other}): is another clusterrun "
                              "running? stop it, or give another --pid-file")
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w") as file:
            file.write(f"{os.getpid()}\n")
        os.replace(temporary, self.path)  # never a half-written file for a reader
        self._written = True

    def remove(self) -> None:
        if self._written and _pid_in(self.path) == os.getpid():  # ours still, not a successor's
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._written = False


def _pid_in(path: str) -> int | None:
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running(pid: int) -> bool:
    """The process runs: it exists and, where /proc tells, is not a zombie (exited, its parent not told yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
