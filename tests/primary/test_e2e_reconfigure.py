"""SIGHUP and ``clusterrun reload NAME --config`` read the configuration file again, as gunicorn's SIGHUP: what can
change without a rebind is taken (workers, timeouts, limits ...), what cannot is logged as needing a restart and
kept, and a file that no longer reads changes nothing. Real CLI, real signals, a real file edited in place."""

from __future__ import annotations

import contextlib
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import FRESH, SUP_APP_PAIR, TEST_APPS, Cluster, get, run_to_exit, wait_until

NAME = "reconfigured"


def write(file: Path, app: str, log_level: str = "info", **options: object) -> None:
    """A clusterrun.toml for ``app`` with ``options`` (TOML values: ints, floats, quoted strings)."""
    lines = [f'app = "{app}"', f'name = "{NAME}"', 'bind = ["127.0.0.1:0"]', f'log-level = "{log_level}"']
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in options.items()]
    file.write_text("\n".join(lines) + "\n")


def launch(run_cli: Callable[..., Cluster], file: Path, *args: str) -> tuple[Cluster, str]:
    cluster = run_cli("--config", str(file), *args, cwd=TEST_APPS)
    return cluster, cluster.wait_ready()


def reloaded(cluster: Cluster, count: int) -> dict[str, object]:
    """The status once the ``count``-th rolling restart has completed."""
    cluster.wait_for_line(r"rolling restart complete", count=count)
    return cluster.wait_status(lambda s: s["reload"]["id"] == count and s["reload"]["state"] == "complete"
                               and s["ready"] == s["target"], f"rolling restart {count} complete")


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_sighup_takes_workers_and_timeout_from_the_file_and_keeps_the_bind(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path
) -> None:
    file = tmp_path / "clusterrun.toml"
    write(file, app, workers=2, timeout=120)
    cluster, url = launch(run_cli, file)
    first = {w["pid"] for w in cluster.status()["workers"]}
    write(file, app, workers=3, timeout=2, **{"max-requests": 1000})
    file.write_text(file.read_text().replace('"127.0.0.1:0"', '"127.0.0.1:1"'))  # a bind change: not taken
    cluster.signal(signal.SIGHUP)
    status = reloaded(cluster, 1)
    assert status["target"] == 3, status
    workers = status["workers"]
    assert isinstance(workers, list) and not first & {w["pid"] for w in workers if w["state"] == "ready"}
    output = cluster.output()
    assert "configuration re-read: --workers 2 -> 3; --timeout 120 -> 2; --max-requests 0 -> 1000" in output
    assert "needs a restart: --bind changed from 127.0.0.1:0 to 127.0.0.1:1 (kept as it was)" in output
    assert cluster.urls() == [url] and get(url).status_code == 200  # still on the address it started with
    # The new --timeout is in force: a worker whose loop hangs is found hung (at 120 s it would outlast the test).
    with contextlib.suppress(httpx.TransportError):
        FRESH.get(url + "/hang", timeout=0.5)
    cluster.wait_for_line(r"sent no heartbeat for [0-9.]+s \(--timeout\)")
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_file_that_no_longer_reads_changes_nothing_and_the_cluster_serves_on(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path
) -> None:
    file = tmp_path / "clusterrun.toml"
    write(file, app, workers=2)
    cluster, url = launch(run_cli, file)
    before = {w["pid"] for w in cluster.status()["workers"]}
    file.write_text(file.read_text().replace("workers = 2", "workers = = 3"))  # no longer TOML
    cluster.signal(signal.SIGHUP)
    line = cluster.wait_for_line(r"the configuration was not re-read: .*")[0].group(0)
    assert "clusterrun.toml" in line and line.endswith("nothing changed, the cluster keeps serving"), line
    write(file, app, workers=2, timeout="soon")  # TOML, but a bad value: the same
    cluster.signal(signal.SIGHUP)
    lines = cluster.wait_for_line(r"the configuration was not re-read: .*", count=2)
    assert "bad --timeout value 'soon'" in lines[1].group(0)
    status = cluster.status()
    assert status["reload"]["id"] == 0 and {w["pid"] for w in status["workers"]} == before, status
    assert get(url).status_code == 200
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


def test_reload_config_reads_the_file_again_and_the_command_line_still_wins(
    run_cli: Callable[..., Cluster], tmp_path: Path
) -> None:
    file = tmp_path / "clusterrun.toml"
    write(file, "sup_app:wsgi", workers=2, **{"max-requests": 0})
    cluster, _url = launch(run_cli, file, "--max-requests", "50")
    write(file, "sup_app:wsgi", workers=3, **{"max-requests": 7}, policy="shared", log_level="debug")
    result = run_to_exit("reload", NAME, "--config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        # --max-requests 50 from the command line wins over the file
        "configuration re-read: --workers 2 -> 3; --log-level info -> debug",
        "needs a restart (kept as it was): --policy changed from rr to shared",
        f"rolling restart 1 of {NAME} started",
    ] and lines[3].startswith("rolling restart 1 complete: "), result.stdout
    status = cluster.wait_status(lambda s: s["target"] == s["ready"] == 3, "3 workers serving")
    assert status["policy"] == "rr"
    cluster.wait_for_line(r"\[primary pid \d+\] DEBUG spawned worker")  # the primary's own level too
    file.write_text("workers = [")
    result = run_to_exit("reload", NAME, "--config")
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.startswith("clusterrun reload: error: the configuration was not re-read: cannot read ")
    assert result.stderr.rstrip().endswith("nothing changed") and len(result.stderr.splitlines()) == 1
    wait_until(lambda: cluster.status()["reload"]["id"] == 1, "the status")
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


HOOKS = '''
import logging

log = logging.getLogger("clusterrun")


def post_fork(config, worker):
    log.warning("hooks {version}: post_fork of worker %d", worker.id)


def on_reload(config):
    log.warning("hooks {version}: on_reload")
'''


def test_sighup_imports_the_hooks_module_anew_and_a_broken_one_changes_nothing(
    run_cli: Callable[..., Cluster], tmp_path: Path
) -> None:
    hooks = tmp_path / "edited_hooks.py"
    hooks.write_text(HOOKS.format(version="v1"))
    file = tmp_path / "clusterrun.toml"
    write(file, "sup_app:wsgi", workers=2, hooks="edited_hooks")
    # No bytecode cache: an edit within the same second, of the same size, must not be read from a stale .pyc.
    cluster = run_cli("--config", str(file), cwd=TEST_APPS,
                      env={"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"})
    url = cluster.wait_ready()
    cluster.wait_for_line(r"hooks v1: post_fork of worker 2")
    hooks.write_text(HOOKS.format(version="v2"))
    cluster.signal(signal.SIGHUP)
    reloaded(cluster, 1)
    after = cluster.output().split("received SIGHUP", 1)[1]
    assert "--hooks edited_hooks imported again: 2 hooks" in after
    assert "hooks v2: on_reload" in after and "hooks v2: post_fork of worker 3" in after, after
    assert "hooks v1" not in after, after  # the old functions run no more, in the primary or in a new worker
    hooks.write_text("def post_fork(config, worker) oops\n")
    cluster.signal(signal.SIGHUP)
    line = cluster.wait_for_line(r"the configuration was not re-read: .*")[0].group(0)
    assert "cannot load --hooks 'edited_hooks': SyntaxError" in line, line
    assert cluster.status()["reload"]["id"] == 1 and get(url).status_code == 200
    cluster.signal(signal.SIGUSR2)  # a plain rolling restart: the v2 hooks are still the ones in place
    reloaded(cluster, 2)
    last = cluster.output().split("received SIGUSR2", 1)[1]
    assert "hooks v2: on_reload" in last and "hooks v2: post_fork" in last and "hooks v1" not in last, last
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


def test_sighup_finds_the_file_and_relative_paths_where_the_cluster_started_after_chdir(
    run_cli: Callable[..., Cluster], tmp_path: Path
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    shutil.copy(TEST_APPS / "sup_app.py", apps / "sup_app.py")
    file = tmp_path / "clusterrun.toml"  # found as ./clusterrun.toml, in the folder the cluster starts in
    write(file, "sup_app:wsgi", workers=1, chdir="apps")
    cluster = run_cli(cwd=tmp_path)  # the primary then moves to apps/ (--chdir), before it serves
    cluster.wait_ready()
    write(file, "sup_app:wsgi", workers=2, chdir="apps")
    cluster.signal(signal.SIGHUP)
    status = reloaded(cluster, 1)
    assert status["target"] == 2 and "configuration re-read: --workers 1 -> 2" in cluster.output()
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
