"""The watchdog: a worker that stops beating, or whose app overruns --request-timeout, is dumped and killed."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping

from clusterrun.host.timers import NO_TIMER, Timers
from clusterrun.primary.handle import WorkerHandle, WorkerState

logger = logging.getLogger("clusterrun")


# Time a hung worker gets to write its tracebacks before SIGKILL.
_DUMP_GRACE = 1.0



class Watchdog:
    """Kills a worker that cannot serve, after a dump of its threads' tracebacks; the slot's respawn follows.

    Two deadlines, each off at 0: ``timeout`` (--timeout), for a worker whose event loop went silent (no
    heartbeat: hung); ``request_timeout`` (--request-timeout, uWSGI's harakiri), for an inline worker whose app
    has run one stretch of a request that long (its stamp: clusterrun.wire.requestclock). Not a poll: it wakes at the
    earliest moment a worker could be overdue, else one period from now.
    """

    def __init__(self, timeout: float, clock: Callable[[], float], timers: Timers,
                 workers: Mapping[int, WorkerHandle], request_timeout: float = 0.0) -> None:
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._clock = clock
        self._timers = timers
        self._workers = workers  # the primary's own, by pid
        # Workers found overdue: being dumped and killed. Weak: a reaped worker's handle must not stay alive here.
        self._killing: weakref.WeakSet[WorkerHandle] = weakref.WeakSet()
        self._period = min((t for t in (timeout, request_timeout) if t > 0), default=0.0)
        self._timer = NO_TIMER  # the next check

    def start(self) -> None:
        if self._period:
            self._timer = self._timers.add(self._period, self._check)

    def retime(self, timeout: float, request_timeout: float) -> None:
        """New deadlines (the configuration was re-read): the next check comes within the new period."""
        self._timer.cancel()
        self.timeout, self.request_timeout = timeout, request_timeout
        self._period = min((t for t in (timeout, request_timeout) if t > 0), default=0.0)
        self.start()

    def _check(self) -> None:
        now = self._clock()
        wake = now + self._period  # a worker that starts being watched after now cannot be overdue sooner
        for handle in list(self._workers.values()):
            if handle in self._killing:
                continue
            if self.timeout > 0 and handle.state in (WorkerState.READY, WorkerState.DRAINING):
                due = handle.last_seen + self.timeout
                if now >= due:
                    self._kill_hung(handle, now - handle.last_seen)
                    continue
                wake = min(wake, due)
            running = handle.pages.request_clock.running_since() if self.request_timeout > 0 else None
            if running is not None:
                since, request = running
                due = since + self.request_timeout
                if now >= due:
                    self._killing.add(handle)
                    logger.error("%s: request %s ran %.1fs, past --request-timeout %g s: killing and respawning "
                                 "the worker (its threads' tracebacks follow)", handle.info, request or "-",
                                 now - since, self.request_timeout)
                    self._dump_and_kill(handle)
                    continue
                wake = min(wake, due)
        # Never at once: a stamp at its deadline to the microsecond must not spin the primary.
        self._timer = self._timers.add(max(0.05, wake - now), self._check)

    def _kill_hung(self, handle: WorkerHandle, silence: float) -> None:
        self._killing.add(handle)
        if is_stopped(handle.pid):
            # A stopped process runs no signal handler: there is no traceback to wait for.
            logger.error("%s sent no heartbeat for %.1fs (--timeout): it is stopped (SIGSTOP or a "
                         "debugger), so no traceback can be taken; killing it", handle.info, silence)
            handle.kill()
            return
        running = handle.pages.request_clock.running_since()  # with --request-timeout: the request its app runs
        during = f" while its app ran request {running[1] or '-'}" if running is not None else ""
        logger.error("%s sent no heartbeat for %.1fs (--timeout)%s: its threads' tracebacks follow, then it "
                     "is killed", handle.info, silence, during)
        self._dump_and_kill(handle)

    def _dump_and_kill(self, handle: WorkerHandle) -> None:
        handle.dump_threads()
        # With the dump, gunicorn's word to a timed-out worker: its SIGABRT handler runs the worker_abort hooks and
        # exits. The dump goes first all the same: faulthandler writes it from the C signal handler, at once, where
        # a Python handler waits for the next bytecode. A worker stuck in C code gets the SIGKILL.
        handle.abort()
        self._timers.add(_DUMP_GRACE, lambda: _kill_unless_reaped(handle))



def _kill_unless_reaped(handle: WorkerHandle) -> None:
    """SIGKILL for a worker still there: one that left on SIGABRT is reaped, and its pid may be another's by now."""
    if handle.state is not WorkerState.EXITED:
        handle.kill()


def is_stopped(pid: int) -> bool:
    """The process is stopped by a signal or traced (Linux /proc; elsewhere: not known, so False)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False
