"""How many CPUs this process may really use, for ``--workers auto``.

The CPU affinity mask (what taskset, cpusets and most schedulers set), capped
by a cgroup CPU quota when one is set (what Docker's ``--cpus`` and Kubernetes
CPU limits set). ``os.cpu_count()`` sees neither.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """At least 1: the affinity count, lowered to the cgroup quota when there is one."""
    count = _affinity_count()
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _affinity_count() -> int:
    sched_getaffinity = getattr(os, "sched_getaffinity", None)
    if sched_getaffinity is not None:  # Linux; macOS has no affinity API
        return len(sched_getaffinity(0))
    return os.cpu_count() or 1


def cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``; None when unlimited."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ratio(parts[0], parts[1])
        return None
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        quota, period = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:  # v1 writes -1 for "no quota"
        return None
    return q / p


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
