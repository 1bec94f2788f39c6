"""The heartbeat's terms, which both ends of the fork must agree on: how often a worker beats, when it is late, and
the signal that asks it for a dump of its threads."""

from __future__ import annotations

import signal

# The signal a worker's faulthandler answers with a dump of every thread's traceback.
DUMP_SIGNAL = signal.SIGUSR1



# Shortest --timeout: below it, a heartbeat often enough to prove a healthy loop would cost real CPU.
MIN_TIMEOUT = 0.5



def heartbeat_interval(timeout: float) -> float:
    """How often a worker's loop says it is alive: four beats per --timeout, at most one a second."""
    return min(1.0, timeout / 4) if timeout > 0 else 1.0



def late_after(timeout: float) -> float:
    """Silence after which a worker is late: primary-side policies pass it nothing new until it beats again.

    Two missed beats and some slack: a worker busy in a long inline request is late too, which is right, since
    it could not serve a new connection before that request ends.
    """
    return 2.5 * heartbeat_interval(timeout)
