"""``$CLUSTERRUN_HOME``: the folder where the process manager keeps background apps' logs, pid files and records.

One definition for the writer (clusterrun.pm) and the readers (clusterrun.ctl's logs command).
"""

from __future__ import annotations

import os


def state_home() -> str:
    """``$CLUSTERRUN_HOME``, by default ``~/.clusterrun``."""
    return os.environ.get("CLUSTERRUN_HOME") or os.path.join(os.path.expanduser("~"), ".clusterrun")
