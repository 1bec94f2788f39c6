"""The process the app sees (--chdir, --env-file), and the primary as a container's PID 1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import DEADLINE, FRESH, TEST_APPS, assert_config_error, children_of, run_to_exit, wait_until


def test_chdir_and_an_app_dir_taken_from_it(run_cli: Any, tmp_path: Path) -> None:
    cluster = run_cli("env_app:app", "--port", "0", "--workers", "1", "--chdir", str(TEST_APPS.parent),
                      "--app-dir", "apps", cwd=tmp_path)
    body = FRESH.get(cluster.wait_ready()).json()
    assert body["cwd"] == str(TEST_APPS.parent)


def test_env_file_sets_what_is_not_set_already(run_cli: Any, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('GREETING="hello world"\nexport SHOP_MODE=prod\nKEPT=from-file\n')
    cluster = run_cli("env_app:app", "--port", "0", "--workers", "1", "--env-file", str(env_file),
                      cwd=TEST_APPS, env={"KEPT": "from-environment"})
    body = FRESH.get(cluster.wait_ready() + "/?names=GREETING,SHOP_MODE,KEPT").json()
    assert body["env"] == {"GREETING": "hello world", "SHOP_MODE": "prod", "KEPT": "from-environment"}


def test_bad_chdir_and_env_file_are_named(tmp_path: Path) -> None:
    assert_config_error(run_to_exit("env_app:app", "--chdir", str(tmp_path / "nope"), cwd=TEST_APPS), 2,
                        "bad --chdir value", "no such directory")
    assert_config_error(run_to_exit("env_app:app", "--env-file", str(tmp_path / ".env"), cwd=TEST_APPS), 2,
                        "bad --env-file value", "no such file")
    result = run_to_exit("env_app:app", "--chdir", str(tmp_path), "--app-dir", "apps", cwd=TEST_APPS,
                         env={**os.environ})
    assert_config_error(result, 2, "bad --app-dir value 'apps': no such directory in")


def _pid_namespaces_work() -> bool:
    if shutil.which("unshare") is None or os.getuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _pid_namespaces_work(), reason="needs unshare and root, for a PID namespace")
def test_as_pid_1_the_primary_reaps_orphans_it_never_forked(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with open(log, "wb") as out:
        outer = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "clusterrun", "env_app:orphan",
             "--port", "0", "--workers", "1", "--no-control"],
            cwd=TEST_APPS, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: "ready: 1 worker serving" in log.read_text(), "the cluster to serve")
        url = next(line for line in log.read_text().splitlines() if "listening on" in line).rsplit(" ", 1)[1]
        [primary] = children_of(outer.pid)  # PID 1 inside the namespace
        workers = set(children_of(primary))
        assert FRESH.get(url).text == "left an orphan\n"
        orphans: set[int] = set()

        def orphan_seen_and_gone() -> bool:
            now = set(children_of(primary)) - workers
            orphans.update(now)
            return bool(orphans) and not (orphans & now)  # reparented to the primary, then reaped: no zombie

        wait_until(orphan_seen_and_gone, "the orphan to be reparented to the primary and reaped")
    finally:
        os.killpg(outer.pid, signal.SIGTERM)
        outer.wait(DEADLINE)
