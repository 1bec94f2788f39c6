"""The control socket and its commands, end to end: clusterrun ls/status/reload/scale/stop/restart-worker.

Each test starts the real CLI, steers it with the real commands (``python -m clusterrun COMMAND``), and checks
what they print and exit with against what the cluster really does: its processes, its answers, its log.
The suite's clusters keep their sockets in a folder of the session's own (conftest: XDG_RUNTIME_DIR).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from clusterrun.host import controlsocket as control

from helpers import DEADLINE, FRESH, SUP_APP_PAIR, TEST_APPS, alive, ask_control, run_to_exit, start, wait_until, who


def command(*args: str) -> tuple[int, str, str]:
    result = run_to_exit(*args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


def status(name: str) -> dict[str, Any]:
    code, out, err = command("status", name, "--json")
    assert code == 0, err
    answer: dict[str, Any] = json.loads(out)
    return answer


def serving_ids(name: str) -> set[int]:
    return {w["id"] for w in status(name)["workers"] if w["state"] == "ready"}


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_status_shows_every_worker_and_what_it_served(run_cli: Any, app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--name", "shop")
    url = cluster.wait_ready()
    served: dict[int, int] = {}
    for _ in range(9):
        worker = who(url)
        served[worker["id"]] = served.get(worker["id"], 0) + 1

    # Counts come with the heartbeat (at most a second apart): wait for them, then compare each worker's.
    wait_until(lambda: {w["id"]: w["requests"] for w in status("shop")["workers"]} == served,
               f"status to count {served}")
    report = status("shop")
    assert report["name"] == "shop" and report["pid"] == cluster.pid and report["app"] == app
    assert report["binds"] == [url] and report["policy"] == "rr"
    assert (report["target"], report["ready"], report["restarts"]) == (2, 2, 0)
    workers = report["workers"]
    assert sorted(w["pid"] for w in workers) == sorted(cluster.worker_pids())
    assert [w["index"] for w in workers] == [0, 1] and {w["state"] for w in workers} == {"ready"}
    assert all(w["rss_bytes"] > 1_000_000 and w["cpu_seconds"] >= 0 and w["cpu_percent"] >= 0 for w in workers)

    code, text, _err = command("status", "shop")
    assert code == 0
    assert all(str(w["pid"]) in text for w in workers) and "2/2 ready" in text


def test_status_counts_open_connections_and_requests_in_flight(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:asgi", "--workers", "1", "--name", "busy", "--policy", "shared")
    url = cluster.wait_ready()
    with httpx.Client(timeout=DEADLINE) as http:
        slow = threading.Thread(target=http.get, args=(url + "/slow?s=3",))
        slow.start()
        try:
            wait_until(lambda: status("busy")["workers"][0]["in_flight"] == 1, "one request in flight")
            assert status("busy")["workers"][0]["connections"] == 1
        finally:
            slow.join()


def test_ls_lists_running_clusters_and_forgets_dead_ones(run_cli: Any) -> None:
    first = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "first")
    second = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "second")
    first.wait_ready()
    second.wait_ready()
    code, out, _err = command("ls", "--json")
    assert code == 0
    assert {(c["name"], c["pid"], c["ready"], c["target"]) for c in json.loads(out)} == {
        ("first", first.pid, 1, 1), ("second", second.pid, 1, 1)}
    code, out, _err = command("ls")
    assert "first" in out and str(second.pid) in out

    socket_file = Path(os.environ["XDG_RUNTIME_DIR"], "clusterrun", "first.sock")
    assert stat.S_IMODE(socket_file.stat().st_mode) == 0o600  # only its user may connect
    assert stat.S_IMODE(socket_file.parent.stat().st_mode) == 0o700
    os.killpg(first.pid, signal.SIGKILL)  # no cleanup: its socket file stays behind
    first.wait_exit()
    assert socket_file.exists()
    code, out, _err = command("ls", "--json")
    assert [c["name"] for c in json.loads(out)] == ["second"]
    assert not socket_file.exists()


def test_a_second_cluster_of_one_name_exits_2_and_a_dead_ones_name_is_free(run_cli: Any) -> None:
    first = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "api")
    first.wait_ready()
    result = run_to_exit("sup_app:wsgi", "--port", "0", "--name", "api", cwd=TEST_APPS)
    assert result.returncode == 2, result.stderr
    assert "a cluster named 'api' is already running" in result.stderr
    assert "clusterrun stop api" in result.stderr

    os.killpg(first.pid, signal.SIGKILL)
    first.wait_exit()
    again = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "api")
    again.wait_ready()
    assert status("api")["pid"] == again.pid


def test_reload_waits_until_every_worker_is_replaced_and_reports_an_abort(run_cli: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "2", "--name", "web",
                    env={"SUP_BREAK_FILE": str(broken)})
    url = cluster.wait_ready()
    before = serving_ids("web")
    # A keep-alive connection to each old worker: each lingers while it drains, up to --timeout-keep-alive,
    # so the replaced workers are still there when the reload completes. They serve no more: not counted.
    with httpx.Client(timeout=DEADLINE) as one, httpx.Client(timeout=DEADLINE) as two:
        assert {one.get(url).json()["id"], two.get(url).json()["id"]} == before
        code, out, err = command("reload", "web")
    assert code == 0, err
    assert "rolling restart 1 complete: 2 workers serving" in out, out
    after = serving_ids("web")
    assert len(after) == 2 and not after & before
    assert status("web")["reload"] == {"id": 1, "state": "complete", "reason": None}

    broken.touch()  # the next import of the app fails: a broken deploy
    code, out, err = command("reload", "web")
    assert code == 1
    assert "rolling restart 2 aborted" in err and "broken on purpose" in err
    assert serving_ids("web") == after  # the old workers keep serving
    assert FRESH.get(url).status_code == 200


def test_scale_sets_the_number_of_workers(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "2", "--name", "pool")
    cluster.wait_ready()
    code, out, err = command("scale", "pool", "+1")
    assert (code, out.strip()) == (0, "scaled to 3 workers"), err
    assert (status("pool")["target"], len(cluster.worker_pids())) == (3, 3)
    assert command("scale", "pool", "1")[0] == 0
    wait_until(lambda: len(cluster.worker_pids()) == 1, "the two retired workers to exit")
    code, _out, err = command("scale", "pool", "-1")
    assert code == 1 and "cannot scale to 0 workers" in err
    code, _out, err = command("scale", "pool", "many")
    assert code == 1 and "bad worker count 'many'" in err
    code, _out, err = command("scale", "pool", "5000")
    assert code == 1 and "cannot scale to 5000 workers: one cluster runs at most 1024" in err
    assert status("pool")["target"] == 1


def test_stop_drains_and_waits_for_the_primary(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "bye")
    url = cluster.wait_ready()
    socket_file = Path(os.environ["XDG_RUNTIME_DIR"], "clusterrun", "bye.sock")
    answers: list[int] = []
    with httpx.Client(timeout=DEADLINE) as http:
        slow = threading.Thread(target=lambda: answers.append(http.get(url + "/slow?s=1").status_code))
        slow.start()
        wait_until(lambda: status("bye")["workers"][0]["in_flight"] == 1, "the slow request to start")
        code, out, err = command("stop", "bye")
        slow.join()
    assert code == 0 and f"pid {cluster.pid}" in out, err
    assert answers == [200]
    assert not alive(cluster.pid) and cluster.wait_exit() == 0
    assert not socket_file.exists()


def test_restart_worker_replaces_one_worker(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "2", "--name", "one")
    cluster.wait_ready()
    victim = min(serving_ids("one"))
    other = max(serving_ids("one"))
    code, out, err = command("restart-worker", "one", str(victim))
    assert code == 0 and f"worker {victim} replaced" in out, err
    ids = serving_ids("one")
    assert victim not in ids and other in ids and len(ids) == 2
    code, _out, err = command("restart-worker", "one", "999")
    assert code == 1 and "no worker with id 999" in err


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_killed_worker_shows_in_its_slots_restarts(run_cli: Any, app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--name", "crashy")
    cluster.wait_ready()
    victim = status("crashy")["workers"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: status("crashy")["ready"] == 2 and victim["pid"] not in
               {w["pid"] for w in status("crashy")["workers"]}, "the slot to be respawned")
    report = status("crashy")
    row = next(w for w in report["workers"] if w["index"] == victim["index"])
    assert row["slot_restarts"] == 1 and "SIGKILL" in row["last_exit"]
    assert report["restarts"] == 1


def test_bad_requests_get_an_error_and_never_disturb_the_primary(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "sturdy")
    url = cluster.wait_ready()
    path = str(Path(os.environ["XDG_RUNTIME_DIR"], "clusterrun", "sturdy.sock"))
    assert "not JSON" in ask_control(path, b"status please\n")["error"]
    assert '"command"' in ask_control(path, b"[1, 2]\n")["error"]
    assert "unknown command 'explode'" in ask_control(path, b'{"command": "explode"}\n')["error"]
    assert "larger than" in ask_control(path, b"{" + b" " * (control.MAX_REQUEST + 10))["error"]
    assert "bad timeout" in ask_control(path, b'{"command": "stop", "timeout": "never"}\n')["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(path)  # says nothing: the primary must go on answering others meanwhile
        assert ask_control(path, b'{"command": "info"}\n')["name"] == "sturdy"
    assert FRESH.get(url).status_code == 200
    assert cluster.proc.poll() is None


def test_no_control_opens_no_socket(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "dark", "--no-control")
    cluster.wait_ready()
    assert not Path(os.environ["XDG_RUNTIME_DIR"], "clusterrun", "dark.sock").exists()
    code, _out, err = command("status", "dark")
    assert code == 1 and "no answer from" in err


def test_the_peer_credential_is_this_processs_uid() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert control.peer_uid(left) == os.getuid()
    assert control.allowed(os.getuid()) and control.allowed(0) and not control.allowed(None)
    assert not control.allowed(os.getuid() + 1)  # neither this user nor root


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to connect as another user")
def test_another_users_connection_is_refused(run_cli: Any) -> None:
    # The socket is made reachable to everyone on purpose (as a careless chmod would): the uid check must hold.
    base = Path(tempfile.mkdtemp(prefix="clusterrun-open-"))  # in the temp dir, which everyone may enter
    try:
        path = base / "control" / "ctl.sock"
        cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--control", str(path))
        cluster.wait_ready()
        for part, mode in ((base, 0o755), (path.parent, 0o755), (path, 0o666)):
            os.chmod(part, mode)
        answer = _ask_as(65534, str(path))
        assert answer.get("ok") is False and "permission denied: uid 65534" in answer.get("error", ""), answer
        assert ask_control(str(path), b'{"command": "status"}\n')["ok"] is True  # its own user is still served
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _ask_as(uid: int, path: str) -> dict[str, Any]:
    """Ask for the status from a forked child that became ``uid``: the answer it got."""
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reading)
            os.setgid(uid)
            os.setuid(uid)
            os.write(writing, json.dumps(ask_control(path, b'{"command": "status"}\n')).encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    answer: dict[str, Any] = json.loads(data or b"{}")
    return answer


@pytest.mark.parametrize("mode", [0o1777, 0o755])
def test_control_path_leaves_its_existing_folder_as_it_is(run_cli: Any, mode: int) -> None:
    # Issue 22: --control PATH chmodded the socket's folder to 0700 (a 1777 folder, $HOME): only a folder
    # clusterrun created itself is its to set.
    base = Path(tempfile.mkdtemp(prefix="clusterrun-mode-"))
    try:
        os.chmod(base, mode)
        cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--control", str(base / "ctl.sock"))
        cluster.wait_ready()
        assert ask_control(str(base / "ctl.sock"), b'{"command": "status"}\n')["ok"] is True
        assert stat.S_IMODE(os.stat(base).st_mode) == mode
        # A folder that did not exist is created, private.
        made = base / "made"
        other = start(run_cli, "sup_app:wsgi", "--workers", "1", "--control", str(made / "ctl.sock"))
        other.wait_ready()
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    finally:
        shutil.rmtree(base, ignore_errors=True)


class _FakeControl:
    """A socket file a squatter planted: it records what any connection sends it."""

    def __init__(self, path: Path) -> None:
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if data:
                    self.received.append(data)

    def close(self) -> None:
        self.done.set()
        self.thread.join(DEADLINE)
        self.sock.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to make a folder of another user")
@pytest.mark.parametrize("squat", ["another user's", "open to all"])
def test_a_squatted_control_folder_is_left_for_a_private_one(run_cli: Any, squat: str) -> None:
    # Issue 22: without XDG_RUNTIME_DIR the control folder is TMPDIR/clusterrun-<uid>, which another user may
    # create first: the start exited 2, and a socket planted there showed in ls and received stop.
    base = Path(tempfile.mkdtemp(prefix="cr-"))
    try:
        squatted, home = base / f"clusterrun-{os.getuid()}", base / "home"
        squatted.mkdir()
        home.mkdir()
        fake = _FakeControl(squatted / "sq.sock")
        os.chown(squatted / "sq.sock", 65534, 65534)
        if squat == "another user's":
            os.chown(squatted, 65534, 65534)
            os.chmod(squatted, 0o700)
        else:
            os.chmod(squatted, 0o777)
        before = os.stat(squatted)
        env = {**os.environ, "XDG_RUNTIME_DIR": "", "TMPDIR": str(base), "HOME": str(home)}
        try:
            cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "sq", env=env)
            cluster.wait_ready()
            cluster.wait_for_line(rf"control folder {squatted} .*not used")
            own = home / ".clusterrun" / "run" / "sq.sock"
            cluster.wait_for_line(rf"control socket {own}: clusterrun status sq")
            after = os.stat(squatted)
            assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)  # never chmodded nor taken

            listed = run_to_exit("ls", "--json", env=env)
            assert listed.returncode == 0, listed.stderr
            assert [c["pid"] for c in json.loads(listed.stdout)] == [cluster.pid]
            assert f"control folder {squatted}" in listed.stderr and "ignored" in listed.stderr
            assert run_to_exit("status", "sq", "--json", env=env).returncode == 0
            stopped = run_to_exit("stop", "sq", env=env)
            assert stopped.returncode == 0, stopped.stderr
            assert cluster.wait_exit() == 0
            assert fake.received == []  # the planted socket never got a command
        finally:
            fake.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to serve as another user")
def test_the_client_refuses_a_socket_served_by_another_user() -> None:
    # Wherever a socket is (an explicit --control), the client asks the server's uid before it sends anything.
    folder = Path(tempfile.mkdtemp(prefix="cr-theirs-"))  # in the temp dir, which that user may enter
    os.chown(folder, 65534, 65534)
    path = folder / "theirs.sock"
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reading)
            os.setgid(65534)
            os.setuid(65534)  # before listen(): the credentials a peer learns are the listener's at that moment
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            listener.listen(1)
            os.write(writing, b"1")
            listener.settimeout(DEADLINE)
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                conn.settimeout(5.0)
                os.write(writing, conn.recv(65536) or b"-")
        finally:
            os._exit(0)
    os.close(writing)
    try:
        assert os.read(reading, 1) == b"1"
        os.chown(path, 0, 0)  # a file that looks right: only the listener's credentials tell
        result = run_to_exit("status", "--control", str(path))
        assert result.returncode == 1 and "served by uid 65534" in result.stderr, result.stderr
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        shutil.rmtree(folder, ignore_errors=True)
        with os.fdopen(reading, "rb") as pipe:
            assert pipe.read() in (b"", b"-")  # it got no request


def test_a_cluster_started_without_a_runtime_folder_is_found_from_a_shell_with_one(run_cli: Any,
                                                                                  tmp_path: Path) -> None:
    """A systemd unit starts clusters with no $XDG_RUNTIME_DIR (their sockets go to the temp folder); a login shell
    has one. ls, status and stop from that shell must still find them."""
    base, home = tmp_path / "tmp", tmp_path / "home"
    base.mkdir()
    home.mkdir()
    booted = {**os.environ, "XDG_RUNTIME_DIR": "", "TMPDIR": str(base), "HOME": str(home)}
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--name", "atboot", env=booted)
    cluster.wait_ready()
    cluster.wait_for_line(rf"control socket {base}/clusterrun-{os.getuid()}/atboot.sock")
    shell = {**booted, "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]}
    listed = run_to_exit("ls", "--json", env=shell)
    assert listed.returncode == 0, listed.stderr
    assert [c["pid"] for c in json.loads(listed.stdout)] == [cluster.pid]
    assert run_to_exit("status", "atboot", "--json", env=shell).returncode == 0
    stopped = run_to_exit("stop", "atboot", env=shell)
    assert stopped.returncode == 0, stopped.stderr
    assert cluster.wait_exit() == 0
