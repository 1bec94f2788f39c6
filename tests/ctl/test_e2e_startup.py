"""``clusterrun startup systemd``: the unit that resurrects the saved apps at boot, printed and installed."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clusterrun.ctl.startup import Target

from helpers import run_to_exit


def fields(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_printed_unit_resurrects_as_the_invoking_user(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_to_exit("startup", "systemd", env={**os.environ, "CLUSTERRUN_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    unit = fields(result.stdout)
    user = pwd.getpwuid(os.getuid()).pw_name
    folder = os.path.dirname(sys.executable)
    assert unit["User"] == [user]
    assert unit["Type"] == ["oneshot"] and unit["RemainAfterExit"] == ["yes"]
    assert f"CLUSTERRUN_HOME={home}" in unit["Environment"]
    path = next(value for value in unit["Environment"] if value.startswith("PATH="))
    assert path.split("=", 1)[1].split(":")[0] == folder  # the clusterrun in use comes first
    assert unit["ExecStart"] == [f"{folder}/clusterrun resurrect"]  # the venv's script, as pip installed it
    assert unit["ExecStop"] == [f"{folder}/clusterrun stop all"]
    assert unit["WantedBy"] == ["multi-user.target"]
    assert f"# save as /etc/systemd/system/clusterrun-{user}.service" in result.stdout


def test_install_writes_a_user_unit_under_xdg_config_home_and_says_how_to_enable_it(tmp_path: Path) -> None:
    config = tmp_path / "config"
    env = {**os.environ, "CLUSTERRUN_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(config)}
    result = run_to_exit("startup", "systemd", "--install", "--user", env=env)
    assert result.returncode == 0, result.stderr
    unit_file = config / "systemd" / "user" / "clusterrun.service"
    unit = fields(unit_file.read_text())
    assert "User" not in unit  # the user's own systemd runs it as them
    assert unit["WantedBy"] == ["default.target"] and unit["ExecStart"][0].endswith("clusterrun resurrect")
    assert f"wrote {unit_file}" in result.stdout
    user = pwd.getpwuid(os.getuid()).pw_name
    for command in ("systemctl --user daemon-reload", "systemctl --user enable clusterrun.service",
                    f"loginctl enable-linger {user}"):
        assert command in result.stdout


def test_root_installs_a_system_unit_named_after_the_user() -> None:
    # Not written here (that would be the machine's /etc): where it would go.
    target = Target("alice", "/home/alice/.clusterrun", "/opt/venv/bin/clusterrun", "/opt/venv/bin:/usr/bin", True)
    assert target.unit_path() == Path("/etc/systemd/system/clusterrun-alice.service")


def test_another_init_system_is_refused() -> None:
    result = run_to_exit("startup", "launchd")
    assert result.returncode == 2 and "init system 'launchd' is not supported" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("kind", ["system", "user"])
def test_the_unit_verifies(tmp_path: Path, kind: str) -> None:
    # systemd's own check of the unit as written: every directive known, ExecStart/ExecStop programs found.
    env = {**os.environ, "CLUSTERRUN_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    if kind == "user":
        assert run_to_exit("startup", "systemd", "--install", "--user", env=env).returncode == 0
        unit = tmp_path / "config" / "systemd" / "user" / "clusterrun.service"
    else:
        unit = tmp_path / "clusterrun-test.service"
        unit.write_text(run_to_exit("startup", "systemd", env=env).stdout)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *(["--user"] if kind == "user" else []),
                             unit.name], cwd=unit.parent, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
