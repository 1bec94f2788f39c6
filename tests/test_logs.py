"""Unit tests of log set-up: the few settings it reads, and the host's logging put back."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from clusterrun import logs

# Logs


@dataclass(frozen=True)
class _LogSettings:
    """Only what logs.setup reads (logs.LogSettings): the leaf takes no Config."""

    log_file: str
    log_level: str = "info"
    log_format: str = "json"
    log_config: str = ""
    access_log: bool = False
    access_log_file: str = ""
    run_as: None = None


def test_log_setup_reads_its_few_settings_and_puts_everything_back(tmp_path: Path) -> None:
    path = tmp_path / "primary.log"
    own = logging.getLogger("clusterrun")
    before = (list(own.handlers), own.level, own.propagate)
    restore = logs.setup(_LogSettings(str(path)))
    try:
        own.info("hello")
    finally:
        restore()
    entry = json.loads(path.read_text())
    assert (entry["message"], entry["level"], entry["primary"]) == ("hello", "info", os.getpid())
    assert (list(own.handlers), own.level, own.propagate) == before
