"""The process the app sees: --chdir, --env-file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from helpers import FRESH, TEST_APPS, assert_config_error, run_to_exit


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
