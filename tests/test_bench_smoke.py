"""The benchmark still runs end to end: one short clusterrun measurement, and its table is written.

No timing is asserted (timings belong in the benchmark's own output), and nothing
is installed: ``--no-install`` runs clusterrun from the interpreter running the tests. The one exception is
the compiled section, whose pure-Python build goes into a venv of the test's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterrun.config.options import Config

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


def _default_policy() -> str:
    """The policy clusterrun uses without --policy: the bench divides its ratios by this server's figures."""
    return str(next(f.default for f in dataclasses.fields(Config) if f.name == "policy"))


def test_quick_bench_writes_a_table_with_a_clusterrun_row(tmp_path: Path) -> None:
    if not shutil.which("wrk") and not _loopback_works():
        pytest.skip("no load generator can run: wrk is not on PATH and no TCP socket can be opened on 127.0.0.1")
    out = tmp_path / "results"
    default = f"clusterrun {_default_policy()}"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-install", "--servers", default.replace(" ", "-"),
         "--apps", "asgi,wsgi", "--duration", "1", "--warmup", "1", "--patience", "0", "--out", str(out),
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
    assert re.search(rf"^\| {default} \| [\d,]+ ", text, re.MULTILINE), text
    assert "## raw ASGI hello, keep-alive" in text and "## raw ASGI hello, close" in text, text
    # Server CPU per request, split into user and system, and over the default policy's (its own row: 1.00x).
    assert (f"| server CPU µs/req | user µs/req | sys µs/req | CPU vs {default} |") in text, text
    cells = re.search(rf"^\| {default} \| [\d,]+ .*\| (\d+) \| (\d+) \| (\d+) \| (\S+) \|$", text, re.MULTILINE)
    assert cells, text
    total, user, system = (int(v) for v in cells.groups()[:3])
    assert cells.group(4) == "1.00x" and total > 0 and abs(total - (user + system)) <= 1, text
    # Issue 24's targets name the peer they need; none ran here, so each line says what was not measured.
    targets = text.split("## Targets (issue 24)", 1)[1].split("## Server commands", 1)[0]
    assert "SKIP  raw WSGI hello, keep-alive: granian not measured" in targets, targets
    assert "SKIP  raw WSGI hello, close: uWSGI http-socket not measured" in targets, targets
    # Issue 25's block is there; its apps (Starlette, FastAPI) did not run, so it holds no line.
    asgi_targets = text.split("## Targets (issue 25)", 1)[1].split("## Server commands", 1)[0]
    assert "```\n```" in asgi_targets, asgi_targets


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


def _strace_can_attach() -> str | None:
    """Why strace cannot count another process's calls here (not installed, ptrace not allowed), or None."""
    if not shutil.which("strace"):
        return "strace is not on PATH"
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stdin=subprocess.DEVNULL)
    tracer = subprocess.Popen(["strace", "-q", "-o", "/dev/null", "-p", str(target.pid)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and tracer.poll() is None:
            status = Path(f"/proc/{target.pid}/status").read_text()
            if f"TracerPid:\t{tracer.pid}\n" in status:
                return None
            time.sleep(0.01)
        return "strace could not attach to another process here"
    finally:
        for proc in (tracer, target):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        if tracer.stderr:
            tracer.stderr.close()


def test_syscalls_section_writes_calls_per_request(tmp_path: Path) -> None:
    """Issue 24's syscalls section, clusterrun's default policy alone, in quick mode: both loads have a table
    whose total is a positive count per request, with the requests it was divided by."""
    why = _strace_can_attach()
    if why:
        pytest.skip(why)
    out = tmp_path / "results"
    default = f"clusterrun {_default_policy()}"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--section", "syscalls", "--quick", "--no-install", "--servers",
         default.replace(" ", "-"), "--patience", "0", "--out", str(out), "--venv", str(tmp_path / "unused-venv")],
        cwd=ROOT, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    tables = sorted(out.glob("*-syscalls-quick.md"))
    assert len(tables) == 1, f"expected one syscalls table in {out}: {sorted(out.iterdir())}"
    assert not list(out.glob("latest*")), "a filtered run must not replace the committed latest-syscalls.md"
    text = tables[0].read_text()
    for load in ("keep-alive", "a new connection per request"):
        section = text.split(f"## raw WSGI hello, {load}: system calls per request of one worker", 1)
        assert len(section) == 2, text
        body = section[1].split("\n## ", 1)[0]
        assert f"| system call | {default} |" in body, body
        total = re.search(r"^\| \*\*total\*\* \| \*\*(\d+\.\d+)\*\* \|$", body, re.MULTILINE)
        assert total and float(total.group(1)) > 0, body
        assert re.search(r"^\| requests traced \| [1-9][\d,]*( †)? \|$", body, re.MULTILINE), body


def test_compiled_section_compares_the_two_builds(tmp_path: Path) -> None:
    """Issue 24's compiled section on raw WSGI hello, quick: the interpreter running the tests is the compiled
    build, the section installs the pure one into a venv under tmp_path, and the table has both builds' CPU per
    request and their ratio for both loads; each server's log named the build it was meant to run."""
    from clusterrun.adapters.entry import engine_build

    if engine_build() != "compiled":
        pytest.skip("the compiled section compares against the compiled build; this install is pure Python")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--section", "compiled", "--quick", "--no-install", "--apps", "wsgi",
         "--patience", "0", "--out", str(out), "--venv", str(tmp_path / "unused-venv"),
         "--pure-venv", str(tmp_path / "pure")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    tables = sorted(out.glob("*-compiled-quick.md"))
    assert len(tables) == 1, f"expected one compiled table in {out}: {sorted(out.iterdir())}"
    text = tables[0].read_text()
    assert "FAIL" not in text, text
    cell = r"\d+\.\d \(\d+\.\d \+ \d+\.\d\)( †)?"
    for load in ("keep-alive", "new connection"):
        row = rf"^\| raw WSGI hello \| {_default_policy()} \| {load} \| {cell} \| {cell} \| \d+\.\d\dx \|"
        assert re.search(row, text, re.MULTILINE), text


def test_static_and_http2_sections_measure_clusterrun(tmp_path: Path) -> None:
    """Issue 28's sections, clusterrun alone, quick: the static table has a measured row for each file and the
    304 (asked with the ETag clusterrun sent) on both engines; the http2 table has an HTTP/2 row, driven by
    bench/h2load.py, beside the HTTP/1.1 one, without errors."""
    if not shutil.which("wrk"):
        pytest.skip("the static and http2 sections load with wrk")
    pytest.importorskip("h2")
    out = tmp_path / "results"
    for section, extra in (("static", []), ("http2", ["--apps", "asgi"])):
        proc = subprocess.run(
            [sys.executable, str(RUN), "--section", section, "--quick", "--no-install", "--servers", "clusterrun",
             *extra, "--patience", "0", "--out", str(out), "--venv", str(tmp_path / "unused-venv")],
            cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
    assert not list(out.glob("latest*")), "a filtered run must not replace the committed tables"
    static = "".join(p.read_text() for p in out.glob("*-static-quick.md"))
    for row in ("1 KiB style.css", "64 KiB app.js", "1 MiB photo.jpg", "304 for style.css (If-None-Match)"):
        for engine in ("inline WSGI engine", "asyncio stack (ASGI)"):
            server = rf"clusterrun [\w-]+, {re.escape(engine)}"
            line = rf"^\| {re.escape(row)} \| {server} \| [\d,]+( †)? \| \d+\.\d .*\| 0 \|$"
            assert re.search(line, static, re.MULTILINE), static
    http2 = "".join(p.read_text() for p in out.glob("*-http2-quick.md"))
    for protocol in ("HTTP/1.1", "HTTP/2"):
        line = rf"^\| clusterrun [\w-]+ \| {re.escape(protocol)} \| [\d,]+( †)? \| \d+\.\d .*\| 0 \|$"
        assert re.search(line, http2, re.MULTILINE), http2
