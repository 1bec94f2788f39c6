"""deploy/: the examples work as written, as far as this machine can tell."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import FRESH, TEST_APPS, run_to_exit

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def docker_cmd() -> list[str]:
    line = next(line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    command: list[str] = json.loads(line[len("CMD "):])  # exec form: a JSON list, as Docker reads it
    return command


def kubernetes_args() -> list[str]:
    text = (DEPLOY / "kubernetes" / "deployment.yaml").read_text()
    line = next(line.strip() for line in text.splitlines() if line.strip().startswith("args: "))
    arguments: list[str] = json.loads(line[len("args: "):])  # a flow sequence of strings is JSON too
    return arguments


def test_the_image_and_the_deployment_run_the_same_command() -> None:
    command = docker_cmd()
    assert command[0] == "clusterrun" and command == kubernetes_args()
    text = (DEPLOY / "kubernetes" / "deployment.yaml").read_text()
    assert "path: /livez" in text and "path: /readyz" in text
    grace = int(text.split("terminationGracePeriodSeconds:")[1].split()[0])
    delay = float(command[command.index("--shutdown-delay") + 1])
    drain = float(command[command.index("--graceful-timeout") + 1])
    assert grace > delay + drain  # Kubernetes must not SIGKILL a pod still draining


def test_the_images_command_is_valid_and_serves_its_probes(run_cli: Any) -> None:
    arguments = docker_cmd()[2:]  # the options, without the program and the app
    assert run_to_exit("config", "app:app", *arguments, cwd=TEST_APPS).returncode == 0
    local = [("127.0.0.1:0" if a.startswith("0.0.0.0:") else a) for a in arguments]  # no fixed ports here
    cluster = run_cli("sup_app:wsgi", *local, cwd=TEST_APPS)
    cluster.wait_ready()
    base = cluster.wait_for_line(r"metrics on (\S+)/metrics")[0].group(1)
    assert FRESH.get(base + "/readyz").status_code == 200 and FRESH.get(base + "/livez").status_code == 200


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_systemd_units_verify(tmp_path: Path) -> None:
    for unit in ("shop.service", "shop.socket"):
        text = (DEPLOY / "systemd" / unit).read_text()
        # The unit's own paths do not exist on this machine: point them at this Python and a folder that does.
        text = text.replace("/srv/shop/.venv/bin/clusterrun", f"{Path(sys.executable).resolve()} -m clusterrun")
        (tmp_path / unit).write_text(text.replace("WorkingDirectory=/srv/shop", f"WorkingDirectory={tmp_path}"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", "shop.socket", "shop.service"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    service = (DEPLOY / "systemd" / "shop.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    options = exec_start.split()[2:]  # after the program and the app
    assert "--bind" not in options  # the listener comes from shop.socket
    assert run_to_exit("config", "app:app", *options, cwd=TEST_APPS).returncode == 0
