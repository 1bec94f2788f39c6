"""The respawn backoff as options (--restart-delay, --restart-delay-max: PM2's exp_backoff_restart_delay), end to
end: the delays a crash-looping slot waits, as the primary's log says them, and bad values refused."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import FRESH, SUP_APP_PAIR, TEST_APPS, Cluster, assert_config_error, run_to_exit, start

_RESPAWN = r"respawning slot (\d+) in ([0-9.]+)s"


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_crash_looping_slot_waits_as_the_backoff_options_say(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    cluster = start(run_cli, app, "--workers", "2", "--max-restarts", "20", "--restart-delay", "0.25",
                    "--restart-delay-max", "1", env={"SUP_BREAK_FILE": str(broken)})
    url = cluster.wait_ready()
    broken.touch()  # from now on a new worker fails to import: each respawn of the slot dies unstable
    with contextlib.suppress(httpx.TransportError):
        FRESH.get(url + "/crash")
    lines = cluster.wait_for_line(_RESPAWN, count=6)
    assert len({m.group(1) for m in lines}) == 1, cluster.output()  # one slot loops, the other serves
    delays = [float(m.group(2)) for m in lines[:6]]
    # The crash that took a request: at once; the first unstable death: at once; then 0.25 doubling, capped at 1.
    assert delays == [0, 0, 0.25, 0.5, 1, 1], cluster.output()
    broken.unlink()
    cluster.wait_status(lambda s: s["ready"] == 2, "the slot serving again")
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--restart-delay", "-1"], {}, "bad --restart-delay value '-1': give a number of seconds >= 0"),
    (["--restart-delay-max", "soon"], {}, "bad --restart-delay-max value 'soon'"),
    (["--restart-delay", "2", "--restart-delay-max", "1"], {},
     "bad --restart-delay-max 1: it is below --restart-delay 2"),
    (["--restart-delay", "30"], {}, "bad --restart-delay-max 10: it is below --restart-delay 30"),
    ([], {"CLUSTERRUN_RESTART_DELAY_MAX": "0.01"}, "the environment variable CLUSTERRUN_RESTART_DELAY_MAX"),
])
def test_a_bad_backoff_value_is_one_line_and_exit_2(args: list[str], env: dict[str, str], expected: str) -> None:
    result = run_to_exit("sup_app:wsgi", "--port", "0", *args, cwd=TEST_APPS, env={**os.environ, **env})
    assert_config_error(result, 2, expected)


def test_the_backoff_options_come_from_the_config_file(tmp_path: Path) -> None:
    file = tmp_path / "clusterrun.toml"
    file.write_text('app = "sup_app:wsgi"\nrestart-delay = 0.5\nrestart_delay_max = 4\n')
    result = run_to_exit("config", "--config", str(file), cwd=TEST_APPS)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^restart-delay +0\.5 +clusterrun\.toml: restart-delay$", result.stdout, re.M), result.stdout
    assert re.search(r"^restart-delay-max +4\.0 +clusterrun\.toml: restart-delay-max$", result.stdout, re.M)
    file.write_text('app = "sup_app:wsgi"\nrestart-delay = true\n')
    assert_config_error(run_to_exit("config", "--config", str(file), cwd=TEST_APPS), 2,
                        "bad --restart-delay value true", "clusterrun.toml")
