"""Unit tests of the primary's signals across a fork."""

from __future__ import annotations

import os
import signal
import time


def test_a_signal_sent_right_after_a_fork_acts_once_the_child_reset_its_handlers() -> None:
    """The defect: SIGTERM to a just-forked worker ran the primary's inherited handler and was lost."""
    from clusterrun.host.signals import fork_holding_signals

    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))  # as the primary's
    try:
        pid, mask = fork_holding_signals()
        if pid == 0:  # a slow start: the signal arrives before the child has reset the handlers
            time.sleep(0.3)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            time.sleep(5)
            os._exit(0)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
