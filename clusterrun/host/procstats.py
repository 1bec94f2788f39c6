"""What the kernel says of a process: its CPU seconds and resident memory, read from /proc (Linux) or ps."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100



_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096



@dataclass
class _Sample:
    at: float
    cpu_seconds: float



class ProcSampler:
    """Each worker's resident memory and CPU use, the CPU as a percentage since the previous look."""

    def __init__(self) -> None:
        self._last: dict[int, _Sample] = {}

    def sample(self, pid: int, started: float, now: float) -> tuple[int | None, float | None, float | None]:
        """(RSS bytes, CPU seconds, CPU %) of ``pid``; its first look averages over its life from ``started``."""
        cpu = cpu_seconds(pid)
        rss = rss_bytes(pid)
        if cpu is None:
            return rss, None, None
        previous = self._last.get(pid) or _Sample(started, 0.0)
        self._last[pid] = _Sample(now, cpu)
        elapsed = now - previous.at
        percent = 100.0 * (cpu - previous.cpu_seconds) / elapsed if elapsed > 0 else 0.0
        return rss, cpu, round(max(0.0, percent), 1)

    def forget_except(self, pids: Iterable[int]) -> None:
        live = set(pids)
        for pid in [pid for pid in self._last if pid not in live]:
            del self._last[pid]



def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime



def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return None
