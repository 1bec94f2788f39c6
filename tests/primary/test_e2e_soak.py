"""A short soak with chaos (bench/soak.py): kills, pauses (SIGSTOP, SIGCONT) and reloads under load, every 2 s,
with --max-requests 500 recycling workers all along.

The full soak is ``python bench/soak.py`` (60 s per policy; the record 600 s); here 10 s per policy, as a
regression test of the verdict: the cluster up at the end and exiting 0, no more failed requests than the
connections the killed workers held, and a primary whose memory stays flat.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT

# Long by nature (see tox.ini): run on one interpreter of the CI matrix.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", ["rr", "least-conn", "shared", "reuseport", "default"])
def test_faults_under_load_cost_at_most_the_requests_in_flight(policy: str) -> None:
    soak = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "10", "--every", "2", "--policy", policy,
         "--json"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert soak.stdout, soak.stderr
    result = json.loads(soak.stdout.splitlines()[-1])
    assert result["error"] == "", result
    assert sum(result["faults"].values()) == 4
    assert result["requests"] > 500 and result["recycles"] > 0  # --max-requests 500: young workers all along
    assert result["serving_at_end"] == 2 and result["exit_code"] == 0
    assert result["failed"] <= result["allowed"], result
    assert result["passed"], result
    assert soak.returncode == 0
