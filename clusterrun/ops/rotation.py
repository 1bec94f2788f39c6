"""Size-based rotation of the log files (--log-max-size, --log-keep), done by the primary on a timer.

Which files: the primary's stdout and stderr when they are regular files (``clusterrun start`` hands it
``$CLUSTERRUN_HOME/logs/NAME-out.log`` and ``NAME-error.log``), and --log-file and --access-log-file; one file
named twice (``2>&1``, or --log-file naming stderr's file) is rotated once.

How: copy, then truncate in place (logrotate's ``copytruncate``). The writers are the primary and every worker,
each with its own descriptor of the file; for stdout and stderr those descriptors are inherited and nobody could
reopen them by name. Every one of them appends (O_APPEND: ``clusterrun start`` opens them so, Python's logging
opens --log-file so, and the primary sets it on a stdout or stderr a shell's ``>`` opened without), so after
the truncation each next write lands at the new end, at offset 0: no writer is told anything, and the file gets
no hole. A shift renames FILE.1 to FILE.2 and so on (dropping the
copy past --log-keep), then the file is copied to FILE.1 up to its end and truncated at once.

Why a timer, in a loop that otherwise never polls: nothing tells the primary that a file grew (inotify would wake
it at every line written), and the timer runs only with --log-max-size.

The window: a line appended between the copy reaching the end and the truncation (a few microseconds, only
under a steady stream of writes) is in neither file: it is lost. No line is ever duplicated. A file is checked
once a second (an ``os.stat`` each), so it may pass SIZE by what is written within a second; the copy runs in the
primary's loop, in the kernel where it can (``os.copy_file_range``): a 10 MiB file holds the loop for a few ms.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import sys

from clusterrun.host.timers import NO_TIMER, Timers

logger = logging.getLogger("clusterrun")

CHECK_EVERY = 1.0  # seconds between two looks at the files' sizes
_CHUNK = 1 << 20


def descriptor_path(fd: int) -> str | None:
    """The path of the regular file open on ``fd``, or None (a terminal, a pipe, /dev/null, no way to know)."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        if sys.platform == "darwin":
            return fcntl.fcntl(fd, fcntl.F_GETPATH, b"\0" * 1024).rstrip(b"\0").decode()  # type: ignore[attr-defined]
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None  # "(deleted)": gone from its folder


def rotate(path: str, keep: int) -> None:
    """Shift FILE.1 .. FILE.keep-1 up by one, copy FILE to FILE.1, truncate FILE (with ``keep`` 0: only that)."""
    if keep:
        for index in range(keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}.{index}", f"{path}.{index + 1}")
    with open(path, "rb") as source:
        if keep:
            # The copy is as private as the file (a log may hold what the app printed of its secrets).
            copy = os.open(f"{path}.1", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(copy, stat.S_IMODE(os.fstat(source.fileno()).st_mode))
                _copy_to_end(source.fileno(), copy)
            finally:
                os.close(copy)
        # At once after the copy read the end: what comes between the two is the window the docstring names.
        os.truncate(path, 0)


def _copy_to_end(source: int, target: int) -> None:
    while True:
        try:
            copied = os.copy_file_range(source, target, _CHUNK)
        except (AttributeError, OSError):  # not Linux, or a file system across which the kernel cannot copy
            data = os.read(source, _CHUNK)
            copied = os.write(target, data) if data else 0
        if not copied:
            return


def _append(fd: int) -> None:
    """Make every write through ``fd`` an append (a shell's ``> FILE`` opens it without O_APPEND).

    The flag belongs to the open file, which the workers forked later share: after a truncation each of them then
    writes at the new end, where without it each would go on at its old offset and leave a hole of zeros.
    """
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_APPEND:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)


class Rotation:
    """The files to watch and the timer that watches them; ``start`` in the primary, ``stop`` when it stops."""

    def __init__(self, timers: Timers, max_size: int, keep: int, paths: list[str]) -> None:
        self.timers = timers
        self.max_size = max_size
        self.keep = keep
        self.paths = paths
        self.failing: set[str] = set()
        self.timer = NO_TIMER

    @classmethod
    def of(cls, timers: Timers, max_size: int, keep: int, log_file: str, access_log_file: str) -> Rotation | None:
        """The rotation the options ask for, or None (--log-max-size 0)."""
        if not max_size:
            return None
        paths: list[str] = []
        seen: set[tuple[int, int]] = set()
        for fd in (1, 2):
            if descriptor_path(fd) is not None:
                _append(fd)
        for path in (descriptor_path(1), descriptor_path(2), log_file or None, access_log_file or None):
            if path is None:
                continue
            try:
                info = os.stat(path)
            except OSError:
                info = None  # --log-file not made yet: the primary's logging opens it later
            if info is not None and ((info.st_dev, info.st_ino) in seen or not stat.S_ISREG(info.st_mode)):
                continue
            if info is not None:
                seen.add((info.st_dev, info.st_ino))
            paths.append(os.path.abspath(path))
        return cls(timers, max_size, keep, paths)

    def start(self) -> None:
        if self.paths:
            logger.info("rotating %s past %d bytes, keeping %d", ", ".join(self.paths), self.max_size, self.keep)
        self.timer = self.timers.add(CHECK_EVERY, self.check)

    def check(self) -> None:
        for path in self.paths:
            try:
                if os.stat(path).st_size > self.max_size:
                    rotate(path, self.keep)
            except OSError as exc:  # moved away, a full disk, no permission: the next look tries again
                if path not in self.failing:  # said once, not every second
                    logger.warning("cannot rotate the log file %s (%s); trying again every %gs", path, exc,
                                   CHECK_EVERY)
                self.failing.add(path)
            else:
                self.failing.discard(path)
        self.timer = self.timers.add(CHECK_EVERY, self.check)

    def stop(self) -> None:
        self.timer.cancel()
