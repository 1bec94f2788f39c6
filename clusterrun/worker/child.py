"""The worker side of a fork: become a worker, then hand over to the runtime.

Everything here runs in the child right after ``os.fork()``. It must never
return into the primary's code: ``run`` always ends in ``os._exit``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from clusterrun import identity, logs
from clusterrun.config.options import Config
from clusterrun.errors import EXIT_BOOT, EXIT_ERROR, EXIT_OK, BootError
from clusterrun.host import priority, privileges
from clusterrun.wire.channel import Channel
from clusterrun.wire.heartbeat import DUMP_SIGNAL
from clusterrun.wire.pages import WorkerPages
from clusterrun.worker import hooks as workerhooks
from clusterrun.worker.current import CurrentWorker

if TYPE_CHECKING:  # a type only: at run time the core imports adapters lazily (see api.prepare_engine)
    from clusterrun.adapters.entry import LoadedApp

logger = logging.getLogger("clusterrun")


# Signals the primary listens to; a worker must not act on them as the primary would.
_PRIMARY_SIGNALS = (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD, signal.SIGTERM)


def run(
    config: Config, worker_id: int, index: int, channel_sock: socket.socket, sockets: Sequence[socket.socket],
    inherited_fds: Sequence[int], pages: WorkerPages, preloaded: LoadedApp | None = None,
    signal_mask: set[int | signal.Signals] | None = None,
) -> NoReturn:
    code = EXIT_ERROR
    try:
        _leave_primary(inherited_fds)
        priority.restore()
        # On SIGUSR1 (sent by the primary to a hung worker before killing it), every thread's Python
        # traceback goes to the log: at C level, so it works while Python code is stuck.
        faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True)
        info = CurrentWorker(worker_id, index, os.getpid())  # current_worker() gives it, with send, disconnect
        _quit_and_abort(info)  # before the signals held since the fork arrive: a SIGABRT would dump core
        if signal_mask is not None:  # held since the fork (signals.fork_holding_signals): now they are ours
            signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        identity.become(info)
        logs.setup(config, info)  # as root still: the log files open whatever folder they are in
        # --user: right after the fork, before the serving modules and the app are imported (privileges.py).
        privileges.drop(privileges.check(config.run_as))
        _set_title(config, info)
        _die_with_primary()  # after the drop: a change of credentials clears the parent-death signal
        channel = Channel(channel_sock)
        from clusterrun.worker.runtime import serve  # here: it imports adapters (see api.prepare_engine)

        code = serve(config, info, channel, sockets, pages, preloaded)
    except BootError as exc:
        code = EXIT_BOOT
        logger.error("%s", exc)
    except BaseException:
        logger.critical("worker failed:\n%s", traceback.format_exc())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _leave_primary(inherited_fds: Sequence[int]) -> None:
    """Drop what belongs to the primary: its signal handling and the descriptors of its other ends."""
    signal.set_wakeup_fd(-1)
    for signum in _PRIMARY_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the primary decides how workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _quit_and_abort(info: identity.WorkerInfo) -> None:
    """gunicorn's worker signals: SIGQUIT runs the worker_int hooks and quits at once (no drain), SIGABRT the
    worker_abort hooks and quits too, and SIGINT runs the worker_int hooks.

    SIGABRT is what the primary's watchdog sends a hung worker with the request for its tracebacks, a second before
    it kills it: a Python handler runs at the next bytecode (or when a blocking call is interrupted), so the
    worker_abort hooks run unless the worker is stuck in C code, which the SIGKILL ends. SIGINT alone stops no
    worker: Ctrl-C reaches the whole process group, and the primary decides how its workers stop.
    """

    def quit_now(signum: int, frame: Any) -> None:
        workerhooks.interrupted(info)
        _leave_now(info, EXIT_OK)

    def abort_now(signum: int, frame: Any) -> None:
        workerhooks.aborted(info)
        _leave_now(info, EXIT_ERROR)

    signal.signal(signal.SIGQUIT, quit_now)
    # Without worker_abort hooks the watchdog's SIGABRT changes nothing: the SIGKILL that follows ends the worker.
    signal.signal(signal.SIGABRT, abort_now if workerhooks.wanted("worker_abort") else signal.SIG_IGN)
    if workerhooks.wanted("worker_int"):
        signal.signal(signal.SIGINT, lambda signum, frame: workerhooks.interrupted(info))


def _leave_now(info: identity.WorkerInfo, code: int) -> NoReturn:
    """Exit from a signal handler, with no drain: the worker_exit hooks run first, as gunicorn's do."""
    try:
        workerhooks.exit(info)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        os._exit(code)


def _set_title(config: Config, info: identity.WorkerInfo) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"clusterrun: worker {info.id} index {info.index} [{config.app}]")


def _die_with_primary() -> None:
    """Linux: the kernel sends SIGTERM if the primary dies; elsewhere end of file on the channel does."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
