"""--log-max-size and --log-keep: the primary rotates the log files its writers append to, with no writer told.

Clusters are started as ``clusterrun start`` will start them (helpers.start_in_home: stdout and stderr appended to
files under a CLUSTERRUN_HOME in tmp_path), and always stopped and reaped.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clusterrun.host.timers import Timers
from clusterrun.ops.rotation import Rotation, rotate

from helpers import (
    FRESH,
    TEST_APPS,
    Cluster,
    assert_config_error,
    run_to_exit,
    stop_and_reap,
    wait_until,
)

MAX = 2048


def numbers(path: Path) -> list[int]:
    """The request numbers of the access lines in ``path`` (GET /n/<number>), in the file's order."""
    text = path.read_text() if path.exists() else ""
    assert "\0" not in text, f"{path.name} has a hole: a writer went on at its old offset after the truncation"
    return [int(m.group(1)) for m in re.finditer(r"GET /n/(\d+) ", text)]


@pytest.mark.parametrize("app", ["sup_app:wsgi", "sup_app:asgi"])
def test_the_logs_rotate_past_the_size_and_every_writer_goes_on(named: Callable[..., Cluster], tmp_path: Path,
                                                                 app: str) -> None:
    cluster = named("rot", app, "--workers", "2", "--access-log", "--log-max-size", str(MAX), "--log-keep", "2")
    url = cluster.wait_ready()
    out = tmp_path / "home" / "logs" / "rot-out.log"
    sent = 0

    def send_until(done: Callable[[], bool]) -> bool:
        nonlocal sent
        sent += 1
        assert FRESH.get(f"{url}/n/{sent}").status_code == 200  # a new connection each: both workers write
        return done()

    # Until the copies shifted twice: FILE.1 moved to FILE.2, then a new FILE.1.
    wait_until(lambda: send_until(lambda: Path(f"{out}.2").exists() and Path(f"{out}.1").exists()), "two rotations")
    wait_until(lambda: send_until(lambda: bool(numbers(out))), "a line in the truncated file")
    assert not Path(f"{out}.3").exists()  # --log-keep 2
    older, old, current = numbers(Path(f"{out}.2")), numbers(Path(f"{out}.1")), numbers(out)
    # Each file goes on where the one before ended (a line in the copy's window could be lost: none duplicated).
    assert older and old and current
    assert older == sorted(older) and old == sorted(old) and current == sorted(current)
    assert max(older) < min(old) and max(old) < min(current)
    for rotated in (Path(f"{out}.1"), Path(f"{out}.2")):
        assert rotated.stat().st_size > MAX  # copied once past the size, whole
    assert "rotating" in cluster.output() and str(out) in cluster.output()


def test_the_log_file_and_the_access_log_file_rotate_too(named: Callable[..., Cluster], tmp_path: Path) -> None:
    log, access = tmp_path / "clusterrun.log", tmp_path / "access.log"
    cluster = named("files", "sup_app:wsgi", "--workers", "1", "--access-log", "--log-file", str(log),
                    "--access-log-file", str(access), "--log-max-size", "1K", "--log-keep", "1", "--log-level",
                    "debug")
    wait_until(lambda: log.exists() and "ready: 1 worker" in log.read_text(), "the ready line in --log-file")
    url = re.findall(r"listening on (\S+)", log.read_text())[0]
    count = 0

    def rotated() -> bool:
        nonlocal count
        count += 1
        FRESH.get(f"{url}/n/{count}")
        return Path(f"{access}.1").exists() and Path(f"{log}.1").exists()

    wait_until(rotated, "--log-file and --access-log-file rotated")
    assert not Path(f"{access}.2").exists()
    wait_until(lambda: rotated() and bool(numbers(access)), "an access line after the truncation")
    assert cluster.proc.poll() is None


@pytest.mark.parametrize("value", ["10X", "-1", "ten"])
def test_a_bad_size_is_named(value: str) -> None:
    result = run_to_exit("sup_app:wsgi", "--log-max-size", value, cwd=TEST_APPS)
    assert_config_error(result, 2, f"bad --log-max-size value {value!r}", "10M")


def test_a_rotation_shifts_the_copies_and_drops_the_oldest(tmp_path: Path) -> None:
    # In-process: the file operations alone, with copies already there.
    log = tmp_path / "app.log"
    for index, text in ((1, "one\n"), (2, "two\n"), (3, "three\n")):
        Path(f"{log}.{index}").write_text(text)
    log.write_text("now\n")
    log.chmod(0o640)
    rotate(str(log), 3)
    assert Path(f"{log}.1").stat().st_mode & 0o777 == 0o640  # as private as the file
    assert [Path(f"{log}.{i}").read_text() for i in (1, 2, 3)] == ["now\n", "one\n", "two\n"]
    assert log.read_text() == "" and not Path(f"{log}.4").exists()


def test_keep_0_only_truncates(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("now\n")
    rotate(str(log), 0)
    assert log.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["app.log"]


def test_a_stdout_opened_without_append_rotates_with_no_hole(tmp_path: Path) -> None:
    # A shell's `clusterrun ... > out.log`: opened for writing at an offset, not for appending.
    out = tmp_path / "out.log"
    with open(out, "wb") as stdout, open(tmp_path / "err.log", "ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterrun", "sup_app:wsgi", "--port", "0", "--workers", "2", "--access-log",
             "--no-control", "--log-max-size", "1K", "--log-keep", "1"],
            cwd=TEST_APPS, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    cluster = Cluster(proc, tmp_path / "err.log")
    try:
        url = cluster.wait_ready()
        count = 0

        def send() -> bool:
            nonlocal count
            count += 1
            FRESH.get(f"{url}/n/{count}")
            return Path(f"{out}.1").exists()

        wait_until(send, "a rotation")
        first = count
        wait_until(lambda: not send() or any(n > first for n in numbers(out)), "a line after the rotation")
        assert all(n > first - 10 for n in numbers(out))  # numbers() fails on a hole of zeros
    finally:
        stop_and_reap(cluster)


def test_a_file_that_cannot_be_rotated_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # In-process, the timer driven by hand: a file moved away and never made again.
    rotation = Rotation(Timers(lambda: 0.0), 10, 1, [str(tmp_path / "gone.log")])
    with caplog.at_level(logging.WARNING, logger="clusterrun"):
        for _ in range(3):
            rotation.check()
    assert [r.getMessage() for r in caplog.records if "cannot rotate" in r.getMessage()] == [
        f"cannot rotate the log file {tmp_path / 'gone.log'} ([Errno 2] No such file or directory: "
        f"'{tmp_path / 'gone.log'}'); trying again every 1s"]
    rotation.stop()
