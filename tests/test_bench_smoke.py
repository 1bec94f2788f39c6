"""The benchmark still runs end to end: one short clusterrun measurement, and its table is written.

No timing is asserted (timings belong in the benchmark's own output), and nothing
is installed: ``--no-install`` runs clusterrun from the interpreter running the tests.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

RUN = ROOT / "bench" / "run.py"

# Long by nature (see tox.ini): run on one interpreter of the CI matrix.
pytestmark = pytest.mark.slow


def _loopback_works() -> bool:
    """The Python fallback client needs only asyncio and a TCP socket on 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
    except OSError:
        return False
    return True


def test_quick_bench_writes_a_table_with_a_clusterrun_row(tmp_path: Path) -> None:
    if not shutil.which("wrk") and not _loopback_works():
        pytest.skip("no load generator can run: wrk is not on PATH and no TCP socket can be opened on 127.0.0.1")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-install", "--servers", "clusterrun-rr", "--apps", "asgi",
         "--duration", "1", "--warmup", "1", "--patience", "0", "--out", str(out),
         "--venv", str(tmp_path / "unused-venv")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    tables = sorted(out.glob("*-quick.md"))
    assert len(tables) == 1, f"expected one table in {out}: {sorted(out.iterdir())}"
    assert (out / tables[0].name.replace(".md", ".json")).exists()
    assert not (out / "latest.md").exists(), "a filtered run must not replace the committed latest.md"
    text = tables[0].read_text()
    # A measured row: a req/s figure after the server name, not "failed: ..." (the numbers themselves vary).
    assert re.search(r"^\| clusterrun rr \| [\d,]+ ", text, re.MULTILINE), text
    assert "## raw ASGI hello, keep-alive" in text and "## raw ASGI hello, close" in text, text


def test_policies_and_reload_sections_write_their_tables(tmp_path: Path) -> None:
    """One clusterrun server through each new section (issues 4 and 5), in quick mode: the tables are there."""
    if not _loopback_works():
        pytest.skip("the sections' tagged client needs a TCP socket on 127.0.0.1")
    out = tmp_path / "results"
    for section, heading in (("policies", "## Starlette sample: fairness"),
                             ("reload", "## Requests during a rolling restart under load")):
        proc = subprocess.run(
            [sys.executable, str(RUN), "--section", section, "--quick", "--no-install", "--servers", "clusterrun-rr",
             "--apps", "starlette", "--workers", "2", "--patience", "0", "--out", str(out),
             "--venv", str(tmp_path / "unused-venv")],
            cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        tables = sorted(out.glob(f"*-{section}-quick.md"))
        assert len(tables) == 1, f"expected one {section} table in {out}: {sorted(out.iterdir())}"
        text = tables[0].read_text()
        assert heading in text, text
        # A measured row (a number after the server name), not "failed: ...": the numbers themselves vary.
        assert re.search(r"^\| clusterrun rr \| (complete|[\d,]+)", text, re.MULTILINE), text
    assert not list(out.glob("latest*")), "a filtered run must not replace the committed latest-*.md"
