"""``clusterrun logs NAME|all``: the last lines of background apps' logs, tagged by app, filtered by worker, and
followed across a rotation until Ctrl-C.

Clusters are started as ``clusterrun start`` will start them (helpers.start_in_home: stdout and stderr appended to
``$CLUSTERRUN_HOME/logs``), with CLUSTERRUN_HOME in tmp_path; every one is stopped and reaped.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from clusterrun.ctl.logs import worker_of

from helpers import DEADLINE, FRESH, Cluster, run_to_exit, wait_until


def logs(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_to_exit("logs", *args, env={**os.environ, "CLUSTERRUN_HOME": str(home)})


def tagged(output: str, name: str) -> list[str]:
    """The lines of ``name``, without their tag."""
    return [line.split(" | ", 1)[1] for line in output.splitlines() if line.split(" | ", 1)[0].rstrip() == name]


def get_logged(url: str, number: int, log: Path) -> None:
    """``GET /n/NUMBER``, and its access line in ``log`` (or a file it was rotated to) before the next request.

    Each worker writes its own access lines, after its response: two requests sent back to back, one to each
    worker under rr, may be logged in either order. One at a time, the log's order is the requests'.
    """
    FRESH.get(f"{url}/n/{number}")
    line = f"GET /n/{number} "

    def logged() -> bool:
        for path in log.parent.glob(f"{log.name}*"):
            with contextlib.suppress(FileNotFoundError):  # rotated away between the listing and the read
                if line in path.read_text():
                    return True
        return False

    wait_until(logged, f"request {number}'s access line")


def test_logs_prints_the_last_lines_of_each_app_tagged_and_by_worker(named: Callable[..., Cluster],
                                                                      home: Path) -> None:
    shop = named("shop", "sup_app:wsgi", "--workers", "2", "--access-log")
    api = named("api", "sup_app:asgi", "--workers", "1", "--access-log")
    shop_url, api_url = shop.wait_ready(), api.wait_ready()
    out = home / "logs" / "shop-out.log"
    for number in range(1, 21):
        get_logged(shop_url, number, out)
    FRESH.get(f"{api_url}/a/1")
    wait_until(lambda: "GET /a/1 " in (home / "logs" / "api-out.log").read_text(), "api's access line")

    result = logs(home, "shop", "--lines", "5")
    assert result.returncode == 0, result.stderr
    lines = tagged(result.stdout, "shop")
    assert [re.search(r"GET /n/(\d+) ", line).group(1) for line in lines[:5]] == ["16", "17", "18", "19", "20"]  # type: ignore[union-attr]
    assert len(lines) == 10  # and the error log's last 5
    assert f"{out} (last 5 lines):" in result.stdout and "shop-error.log (last 5 lines):" in result.stdout

    err = tagged(logs(home, "shop", "--err", "--lines", "100").stdout, "shop")
    assert any("ready: 2 workers serving" in line for line in err) and not any("GET /n/" in line for line in err)

    one = tagged(logs(home, "shop", "--out", "--worker", "1", "--lines", "100").stdout, "shop")
    by_one = [line for line in out.read_text().splitlines() if "[worker 1 index" in line]
    assert one == by_one and 0 < len(one) < 20  # rr: the other worker answered the rest

    both = logs(home, "--lines", "1", "--out").stdout  # no name: all, as pm2 logs
    assert any("GET /a/1 " in line for line in tagged(both, "api")), both
    assert any("GET /n/20 " in line for line in tagged(both, "shop")), both
    assert "api  | " in both  # the names padded to one width


def test_an_unknown_name_is_one_line_with_the_known_ones(named: Callable[..., Cluster], home: Path) -> None:
    named("shop", "sup_app:wsgi", "--workers", "1").wait_ready()
    result = logs(home, "shpo")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "no logs for 'shpo'" in result.stderr and "the apps with logs: shop" in result.stderr


def test_follow_goes_on_across_a_rotation_and_a_replaced_file_and_ends_on_ctrl_c(
        named: Callable[..., Cluster], home: Path, tmp_path: Path) -> None:
    cluster = named("rot", "sup_app:wsgi", "--workers", "2", "--access-log", "--log-max-size", "2K")
    url = cluster.wait_ready()
    out = home / "logs" / "rot-out.log"
    for number in (1, 2, 3):
        get_logged(url, number, out)
    followed = tmp_path / "followed"
    with open(followed, "wb") as output:
        command = [sys.executable, "-m", "clusterrun", "logs", "rot", "--follow", "--lines", "2", "--out"]
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "CLUSTERRUN_HOME": str(home)}, start_new_session=True)
    try:
        sent = 3

        def send() -> str:
            nonlocal sent
            sent += 1
            get_logged(url, sent, out)
            return followed.read_text()

        wait_until(lambda: "GET /n/3 " in followed.read_text(), "the last lines, printed")
        wait_until(lambda: "GET /n/4 " in send(), "the follower reading")
        wait_until(lambda: send() and Path(f"{out}.1").exists(), "a rotation")
        send()  # the last one: written after the rotation
        wait_until(lambda: f"GET /n/{sent} " in followed.read_text(), "the line written after the rotation, followed")
        seen = [int(n) for n in re.findall(r"^rot \| .*GET /n/(\d+) ", followed.read_text(), re.MULTILINE)]
        assert seen[:2] == [2, 3]  # the last 2 lines, then what came after them
        assert seen == sorted(set(seen))  # in order, none twice
        assert {int(n) for n in re.findall(r"GET /n/(\d+) ", out.read_text())} <= set(seen)

        # logrotate's create: the file moved away, a new one made under its name.
        out.rename(tmp_path / "moved.log")
        out.write_text("a line of the new file\n")
        wait_until(lambda: "rot | a line of the new file" in followed.read_text(), "the new file's line")

        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(DEADLINE) == 0
        assert "Traceback" not in followed.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(DEADLINE)


def test_a_line_names_its_worker_in_text_and_json_and_an_app_print_names_none() -> None:
    # In-process: what --worker keeps.
    assert worker_of(b"2026-12-07 14:25:09 [worker 12 index 1 pid 7] INFO ...") == 12
    assert worker_of(b'{"message": "x", "worker": {"id": 3, "index": 0, "pid": 9}}') == 3
    assert worker_of(b'{"message": "x", "primary": 8}') is None
    assert worker_of(b"2026-12-07 14:25:01 [primary pid 8] INFO ready") is None
    assert worker_of(b"hello from print()") is None
