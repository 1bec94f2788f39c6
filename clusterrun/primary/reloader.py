"""``--reload``: a rolling restart whenever the code changes (development), watched by ``watchfiles``.

The primary never runs threads (it forks), and watchfiles runs one, so the watching happens in a child of its
own: it writes a line naming the changed files to a pipe, which the primary reads in its one wait and answers
with a rolling restart. If the new code fails to import, the rolling restart aborts with one error and the
old workers keep serving until a later change imports cleanly. A change during a rolling restart waits for it
to finish, then starts the next one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import logging
import os
import selectors
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clusterrun.config.options import Config
from clusterrun.errors import ConfigError
from clusterrun.host.signals import fork_holding_signals
from clusterrun.host.timers import Timers

logger = logging.getLogger("clusterrun")

DEFAULT_INCLUDE = ("*.py",)
_WATCHING = "\0watching"  # what the watcher sends once it watches (no path can be this line)
_RETRY = 0.5  # seconds between looks while a rolling restart is still running


def require_watchfiles() -> None:
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise ConfigError("--reload needs watchfiles: pip install watchfiles") from None


def make_reloader(config: Config, selector: selectors.BaseSelector, timers: Timers, busy: Callable[[], bool],
                  reload: Callable[[], None]) -> Reloader | None:
    if not config.reload:
        return None
    return Reloader(config.reload_dirs, config.reload_include, config.reload_exclude, selector, timers, busy, reload)


class Reloader:
    """The watcher child and the primary's end of its pipe."""

    def __init__(self, dirs: Sequence[str], include: Sequence[str], exclude: Sequence[str],
                 selector: selectors.BaseSelector, timers: Timers, busy: Callable[[], bool],
                 reload: Callable[[], None]) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs] or [os.getcwd()]
        self.include = tuple(include) or DEFAULT_INCLUDE
        self.exclude = tuple(exclude)
        self.selector = selector
        self.timers = timers
        self.busy = busy  # a rolling restart is running
        self.reload = reload
        self.pid = 0
        self._read_end = -1
        self._pending: set[str] = set()

    def start(self) -> None:
        """Fork the watcher; from now on a change reaches ``reload``."""
        read_end, write_end = os.pipe()
        pid, signal_mask = fork_holding_signals()
        if pid == 0:
            os.close(read_end)
            _watch(self.dirs, self.include, self.exclude, write_end, os.getppid(), signal_mask)  # never returns
        os.close(write_end)
        self.pid, self._read_end = pid, read_end
        os.set_blocking(read_end, False)
        self.selector.register(read_end, selectors.EVENT_READ, lambda mask: self._on_change())

    def filenos(self) -> list[int]:
        return [self._read_end] if self._read_end >= 0 else []

    def stop(self) -> None:
        if self._read_end >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self._read_end)
            os.close(self._read_end)
            self._read_end = -1
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0

    def _on_change(self) -> None:
        try:
            data = os.read(self._read_end, 65536)
        except BlockingIOError:
            return
        if not data:  # the watcher died: say so once, serve on without reloading
            logger.error("--reload: the file watcher exited; changes are no longer picked up")
            self.selector.unregister(self._read_end)
            return
        lines = data.decode(errors="replace").splitlines()
        if _WATCHING in lines:  # the watcher's first word: from now on, no change goes unseen
            logger.info("--reload: watching %s for %s%s", ", ".join(self.dirs), " ".join(self.include),
                        f" (except {' '.join(self.exclude)})" if self.exclude else "")
        self._pending.update(line for line in lines if line and line != _WATCHING)
        self._restart_when_idle()

    def _restart_when_idle(self) -> None:
        if not self._pending:
            return
        if self.busy():
            self.timers.add(_RETRY, self._restart_when_idle)
            return
        changed = sorted(self._pending)
        self._pending.clear()
        for path in changed:
            _forget_bytecode(path)
        shown = ", ".join(os.path.relpath(path) for path in changed[:3]) + (" ..." if len(changed) > 3 else "")
        logger.info("--reload: %s changed; rolling restart", shown)
        self.reload()


def _forget_bytecode(path: str) -> None:
    """Remove the cached bytecode of a changed source: Python trusts a .pyc whose source has the same size and
    the same mtime second, so an edit of equal length within a second of the last import would go unseen."""
    if path.endswith(".py"):
        with contextlib.suppress(OSError, ValueError):
            os.unlink(importlib.util.cache_from_source(path))


def _watch(dirs: list[str], include: tuple[str, ...], exclude: tuple[str, ...], out: int, primary: int,
           signal_mask: set[int | signal.Signals]) -> Any:
    """The watcher child: report every batch of changed files, one path per line; exit with the primary."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the primary's to handle
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        # Nothing of the primary's stays open here: its listeners, channels and control socket are its own.
        os.closerange(3, out)
        os.closerange(out + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
        import watchfiles

        class Wanted(watchfiles.DefaultFilter):
            def __call__(self, change: Any, path: str) -> bool:
                name = Path(path).name
                return (super().__call__(change, path) and any(fnmatch.fnmatch(name, p) for p in include)
                        and not any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in exclude))

        announced = False
        # watch() sets up its watches before its first wait, and with yield_on_timeout it yields at the latest
        # after rust_timeout: the first yield is the moment from which no change is missed.
        for changes in watchfiles.watch(*dirs, watch_filter=Wanted(), debounce=300, step=50, rust_timeout=300,
                                        yield_on_timeout=True, raise_interrupt=False):
            if os.getppid() != primary:
                break  # the primary is gone
            if not announced:
                os.write(out, f"{_WATCHING}\n".encode())
                announced = True
            if changes:
                os.write(out, "".join(f"{path}\n" for _change, path in changes).encode())
    except BrokenPipeError:
        pass  # the primary closed its end: it is stopping
    except BaseException:
        code = 1
        logger.exception("--reload: the file watcher failed")
    finally:
        sys.stderr.flush()
        os._exit(code)
