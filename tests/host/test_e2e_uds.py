"""Unix socket listeners as a reverse proxy of another user needs them: mode, stale files, removal."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from helpers import TEST_APPS, assert_config_error, get, run_to_exit, start


@pytest.mark.parametrize("app", ["sup_app:wsgi", "sup_app:asgi"])
@pytest.mark.parametrize("given, mode", [((), 0o666), (("--uds-mode", "660"), 0o660)])
def test_the_socket_file_has_the_mode_given_and_goes_away_on_exit(
    run_cli: Any, tmp_path: Path, app: str, given: tuple[str, ...], mode: int
) -> None:
    path = tmp_path / "app.sock"
    cluster = run_cli(app, "--workers", "1", "--bind", f"unix:{path}", *given, cwd=TEST_APPS)
    cluster.wait_ready()
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert get(f"unix:{path}").status_code == 200
    cluster.signal(15)
    assert cluster.wait_exit() == 0
    assert not path.exists()


def test_a_regular_file_at_the_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    result = run_to_exit("sup_app:wsgi", "--bind", f"unix:{path}", cwd=TEST_APPS)
    assert_config_error(result, 2, f"cannot bind unix:{path}", "not a socket")
    assert path.read_text() == "keep me"


def test_a_bad_mode_is_named(tmp_path: Path) -> None:
    result = run_to_exit("sup_app:wsgi", "--uds-mode", "rw-rw-rw-", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --uds-mode value 'rw-rw-rw-'", "octal")


def test_tcp_listeners_ignore_the_uds_mode(run_cli: Any) -> None:
    # The mode concerns socket files only: a TCP listener binds and serves as before.
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--uds-mode", "600")
    assert get(cluster.wait_ready()).status_code == 200
