"""Patience with a shared machine: re-measure what another job disturbed, within a fixed budget of seconds.

On a 2-core box another job's test run halves what a server gets, and the rows
stop being comparable. A measurement during which more than DISTURBED_CORES
were busy elsewhere is repeated once, after waiting for the machine to be quiet;
the less disturbed of the two is kept. The budget bounds the whole run's extra
time, so that "full < 15 min" holds however busy the machine is; what is still
disturbed afterwards is marked in the tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import procs
from loadgen import LoadResult
from procs import DISTURBED_CORES, CpuUse

Measured = tuple[LoadResult, CpuUse]

_WINDOW = 0.5  # seconds per look at the machine while waiting for it to be quiet


class Patience:
    def __init__(self, seconds: float) -> None:
        self.left = seconds
        self.waited = 0.0
        self.retries = 0

    def wait_quiet(self, sid: int) -> bool:
        """Wait, while the budget lasts, for a window in which nothing but the (idle) server ``sid`` ran."""
        while self.left > 0:
            before, own = procs.cpu_sample(sid), time.process_time()
            time.sleep(_WINDOW)
            use = procs.cpu_use(before, procs.cpu_sample(sid), _WINDOW, time.process_time() - own)
            self.left -= _WINDOW
            self.waited += _WINDOW
            if use.elsewhere_cores <= DISTURBED_CORES:
                return True
        return False

    def retry(self, sid: int, duration: float, first: Measured,
              measure: Callable[[], Measured]) -> tuple[LoadResult, CpuUse, bool]:
        """``first`` if it was undisturbed (or there is no budget left); else the less disturbed of it and one
        more measurement taken once the machine is quiet. The bool says whether it was measured again."""
        if first[1].elsewhere_cores <= DISTURBED_CORES or self.left < duration:
            return (*first, False)
        if not self.wait_quiet(sid) or self.left < duration:
            return (*first, False)
        began = time.monotonic()
        again = measure()
        self.left -= time.monotonic() - began
        self.retries += 1
        best = again if again[1].elsewhere_cores < first[1].elsewhere_cores else first
        return (*best, True)
