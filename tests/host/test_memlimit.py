"""--max-memory from a container's memory limit: reading cgroup v1 and v2, and each worker's share."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterrun.config.build import build_config
from clusterrun.host.memlimit import cgroup_memory_limit


@pytest.mark.parametrize("files, expected", [
    ({"memory.max": "2147483648\n"}, 2 << 30),  # v2
    ({"memory.max": "max\n"}, None),
    ({"memory/memory.limit_in_bytes": "536870912\n"}, 512 << 20),  # v1
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1 for "no limit"
    ({}, None),
])
def test_the_cgroup_memory_limit_is_read_from_v1_or_v2(tmp_path: Path, files: dict[str, str],
                                                       expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_memory_limit(tmp_path) == expected


def test_each_worker_gets_a_share_unless_max_memory_is_given() -> None:
    config = build_config("app:app", {"workers": "4"}, environ={}, cpus=4, memory_limit=lambda: 2 << 30)
    assert config.max_memory == 460  # 90% of 2 GiB over 4 workers, in MiB
    assert config.sources["max_memory"] == "cgroup memory limit 2048 MiB"
    given = build_config("app:app", {"workers": "4", "max_memory": "300"}, environ={}, cpus=4,
                         memory_limit=lambda: 2 << 30)
    assert given.max_memory == 300 and given.sources["max_memory"] == "--max-memory"
    unlimited = build_config("app:app", {"workers": "4"}, environ={}, cpus=4, memory_limit=lambda: None)
    assert unlimited.max_memory == 0
