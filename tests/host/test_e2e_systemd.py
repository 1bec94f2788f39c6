"""systemd, through its real protocols: notify datagrams on a socket set as NOTIFY_SOCKET, socket activation
with LISTEN_FDS, and the pid file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import DEADLINE, FRESH, TEST_APPS, assert_config_error, run_to_exit, start, wait_until


class NotifySocket:
    """A datagram socket standing in for systemd's: every message the primary sends, in order."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def poll(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait_for(self, key: str, count: int = 1) -> list[dict[str, str]]:
        wait_until(lambda: sum(key in m for m in self.poll()) >= count, f"{count} {key} message(s)")
        return self.messages

    def states(self) -> list[str]:
        """The messages that change the unit's state, in order (STATUS and WATCHDOG lines left out)."""
        return [key for m in self.poll() for key in m if key in ("READY", "RELOADING", "STOPPING")]


@pytest.mark.parametrize("app", ["sup_app:wsgi", "sup_app:asgi"])
@pytest.mark.parametrize("abstract", [False, True])
def test_ready_reloading_ready_stopping_in_order(run_cli: Any, tmp_path: Path, app: str, abstract: bool) -> None:
    address = f"@clusterrun-test-{os.getpid()}-{tmp_path.name}" if abstract else str(tmp_path / "notify")
    with NotifySocket(address) as systemd:
        cluster = start(run_cli, app, "--workers", "2", env={"NOTIFY_SOCKET": address})
        cluster.wait_ready()
        first_ready = systemd.wait_for("READY")
        assert "STATUS" in first_ready[-1] and "2/2 workers ready" in first_ready[-1]["STATUS"]
        cluster.signal(signal.SIGHUP)
        messages = systemd.wait_for("READY", 2)
        reloading = next(m for m in messages if "RELOADING" in m)
        assert abs(int(reloading["MONOTONIC_USEC"]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 60e6
        cluster.signal(signal.SIGTERM)
        systemd.wait_for("STOPPING")
        assert cluster.wait_exit() == 0
        assert systemd.states() == ["READY", "RELOADING", "READY", "STOPPING"]


def test_watchdog_pings_stop_while_the_primary_is_stopped(run_cli: Any, tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with NotifySocket(address) as systemd:
        cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", env={"NOTIFY_SOCKET": address,
                                                                          "WATCHDOG_USEC": "200000"})
        cluster.wait_ready()
        systemd.wait_for("WATCHDOG", 3)  # every 100 ms
        os.kill(cluster.pid, signal.SIGSTOP)  # a wedged primary
        try:
            systemd.poll()
            before = sum("WATCHDOG" in m for m in systemd.messages)
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:  # six ping intervals of silence expected
                systemd.poll()
            assert sum("WATCHDOG" in m for m in systemd.messages) == before
        finally:
            os.kill(cluster.pid, signal.SIGCONT)
        systemd.wait_for("WATCHDOG", before + 2)  # it pings again once its loop turns


def test_socket_activation_serves_on_the_passed_listener(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    # As systemd does: the listener at descriptor 3, LISTEN_PID the pid of the process it execs.
    script = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd != 3 and os.close(fd); "
              "os.environ['LISTEN_PID'] = str(os.getpid()); "
              "os.execv(sys.executable, [sys.executable, '-m', 'clusterrun', *sys.argv[2:]])")
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(listener.fileno()), "sup_app:asgi", "--workers", "2"],
            cwd=TEST_APPS, stdout=out, stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),),
            env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}, start_new_session=True,
        )
    listener.close()  # the cluster holds it now
    try:
        wait_until(lambda: "ready: 2 workers serving" in log.read_text(), "the activated cluster to serve")
        assert f"listening on http://127.0.0.1:{port} (fd 3, web, from systemd)" in log.read_text()
        pids = {FRESH.get(f"http://127.0.0.1:{port}/").json()["pid"] for _ in range(4)}
        assert len(pids) == 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(DEADLINE)
            pytest.fail(f"the activated cluster did not stop on SIGTERM:\n{log.read_text()}")
    assert code == 0, log.read_text()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate (Debian's systemd package) is not installed here")
def test_socket_activation_through_systemd_socket_activate(tmp_path: Path) -> None:
    # systemd's own tool: it listens, and on the first connection execs clusterrun with the listener as fd 3.
    path = tmp_path / "web.sock"
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["systemd-socket-activate", "--listen", str(path), "--fdname=web", "-E", "PYTHONUNBUFFERED=1",
             sys.executable, "-m", "clusterrun", "sup_app:wsgi", "--workers", "2", "--no-control"],
            cwd=TEST_APPS, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: f"Listening on {path}" in log.read_text(), "systemd-socket-activate to listen")
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=DEADLINE) as http:
            # The first connection starts the cluster and is served by it; later ones spread over both workers.
            assert http.get("http://localhost/", headers={"Connection": "close"}).status_code == 200
            wait_until(lambda: "ready: 2 workers serving" in log.read_text(), "the activated cluster to serve")
            pids = {http.get("http://localhost/", headers={"Connection": "close"}).json()["pid"] for _ in range(4)}
        assert len(pids) == 2
        assert f"listening on unix:{path} (fd 3, web, from systemd)" in log.read_text()
        os.kill(proc.pid, signal.SIGTERM)  # the same process: systemd-socket-activate exec'd clusterrun
        assert proc.wait(DEADLINE) == 0, log.read_text()
        assert path.exists()  # the listener is systemd's: never unlinked by clusterrun
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE)


def test_fd_bind_form_and_a_descriptor_that_is_no_listener(tmp_path: Path) -> None:
    not_listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fd = not_listening.fileno()
    with not_listening:
        script = ("import os, sys; os.execv(sys.executable, [sys.executable, '-m', 'clusterrun', *sys.argv[1:]])")
        result = subprocess.run(
            [sys.executable, "-c", script, "sup_app:wsgi", "--bind", f"fd://{fd}"],
            cwd=TEST_APPS, capture_output=True, text=True, timeout=DEADLINE, pass_fds=(fd,),
        )
    assert_config_error(result, 2, f"cannot bind fd://{fd}", "not a listening socket")


def test_the_pid_file_lives_as_long_as_the_primary(run_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "clusterrun.pid"
    path.write_text("999999\n")  # a killed primary's leftover: replaced
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--pid-file", str(path))
    cluster.wait_ready()
    assert path.read_text() == f"{cluster.pid}\n"
    second = run_to_exit("sup_app:wsgi", "--port", "0", "--name", "other", "--pid-file", str(path), cwd=TEST_APPS)
    assert_config_error(second, 2, f"the pid file {path} names a running process ({cluster.pid})")
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
    assert not path.exists()


@pytest.mark.parametrize("app", ["sup_app:wsgi", "sup_app:asgi"])
def test_readyz_turns_503_at_sigterm_while_the_delay_keeps_serving(run_cli: Any, app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--health", "127.0.0.1:0", "--shutdown-delay", "1.5")
    url = cluster.wait_ready()
    health = cluster.wait_for_line(r"health on (\S+)/livez")[0].group(1)
    assert FRESH.get(health + "/livez").status_code == 200
    wait_until(lambda: FRESH.get(health + "/readyz").status_code == 200, "/readyz to answer 200")
    cluster.signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_until(lambda: FRESH.get(health + "/readyz").status_code == 503, "/readyz to answer 503")
    print(f"/readyz turned 503 {1000 * (time.monotonic() - signalled):.0f} ms after SIGTERM")  # measured only
    for _ in range(4):  # the delay: still serving, on new connections too
        assert FRESH.get(url).status_code == 200
    assert cluster.proc.poll() is None
    assert cluster.wait_exit() == 0
    assert "serving 1.5s more (--shutdown-delay) before draining" in cluster.output()


def test_the_metrics_endpoint_answers_the_probes_too(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--metrics", "127.0.0.1:0")
    cluster.wait_ready()
    base = cluster.wait_for_line(r"metrics on (\S+)/metrics")[0].group(1)
    assert FRESH.get(base + "/readyz").text == "1/1 workers serving\n"
    assert FRESH.get(base + "/nothing").status_code == 404


def test_a_sighup_whose_configuration_does_not_read_still_ends_the_reload_for_systemd(
    run_cli: Any, tmp_path: Path
) -> None:
    # Type=notify-reload: systemd sends SIGHUP and waits for RELOADING=1, then READY=1, whatever the outcome.
    address = str(tmp_path / "notify")
    config = tmp_path / "clusterrun.toml"
    config.write_text("workers = 2\n")
    with NotifySocket(address) as systemd:
        cluster = start(run_cli, "sup_app:wsgi", "--config", str(config), env={"NOTIFY_SOCKET": address})
        cluster.wait_ready()
        systemd.wait_for("READY")
        config.write_text("workers = = 3\n")
        cluster.signal(signal.SIGHUP)
        systemd.wait_for("READY", 2)
        assert "the configuration was not re-read" in cluster.output()
        assert cluster.status()["reload"]["id"] == 0
        cluster.signal(signal.SIGTERM)
        assert cluster.wait_exit() == 0
        assert systemd.states() == ["READY", "RELOADING", "READY", "STOPPING"]
