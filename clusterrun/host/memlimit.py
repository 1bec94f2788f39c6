"""The container's memory limit (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``), for --max-memory.

When --max-memory is not given and the cgroup limits memory, each worker gets an even share of 90% of the
limit (the rest for the primary and the kernel's page cache), so that a growing worker is recycled the
no-drop way before the kernel's OOM killer ends the whole container.
"""

from __future__ import annotations

from pathlib import Path

MIB = 1024 * 1024
_UNLIMITED = 1 << 60  # cgroup v1 writes a page-rounded 2**63 - 1 for "no limit"
SHARE = 0.9


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process's cgroup may use; None when unlimited or unknown."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes", root / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= _UNLIMITED:
            return None
        return int(text)
    return None


def per_worker_mib(limit: int, workers: int) -> int:
    """Each worker's share of the limit, in MiB (at least 1)."""
    return max(1, int(limit * SHARE / max(1, workers) / MIB))
