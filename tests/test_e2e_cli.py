"""End-to-end: the command line as a user meets it (issue #2, points 1, 3, 4, 10 and 11).

Every test starts the real ``python -m clusterrun`` (or the ``clusterrun`` script) as a subprocess
through the harness in conftest, talks HTTP to it with httpx and checks what a user would see: the
start-up, listening and ready lines, the answers, the exit code and the one-line error message.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import (
    DEADLINE,
    HEAVY_RESULT,
    SAMPLE_APP_PAIR,
    TEST_APPS,
    Cluster,
    answers_from_every_worker,
    assert_config_error,
    get,
    ready_line,
    run_to_exit,
    sample_worker,
    wait_until,
)

# The helpers of this module (those that other modules use too are in helpers.py).


def startup_note(cluster: Cluster) -> tuple[int, str]:
    """The worker count and its explanation from the start-up line: ``with 2 workers (--workers 2)``."""
    match = cluster.wait_for_line(r"with (\d+) workers? \((.*?)\), policy")[0]
    return int(match.group(1)), match.group(2)


def expected_usable_cpus() -> int:
    """What ``--workers auto`` must give: the affinity mask, capped by a cgroup v2 CPU quota if there is one."""
    count = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    return count


def processes_mentioning(text: str) -> list[str]:
    """Every live process (but this one) whose command line or title contains ``text``: leftovers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def assert_serves(url: str) -> None:
    response = get(url)
    assert response.status_code == 200, response.text
    sample_worker(response.json())


def exit_without_serving(cluster: Cluster) -> tuple[int, str]:
    """Wait until clusterrun exits by itself; fail at once if it reaches the ready line and serves instead."""
    wait_until(lambda: cluster.proc.poll() is not None or "ready: " in cluster.output(), "clusterrun to exit")
    assert cluster.proc.poll() is not None, f"clusterrun started serving instead of exiting:\n{cluster.output()}"
    return cluster.proc.returncode, cluster.output()


def assert_one_line_error(code: int, output: str, expected_code: int, *expected: str) -> None:
    """For run_cli, whose log holds stdout and stderr together: the code, one line, the expected texts."""
    assert "Traceback" not in output, output
    assert code == expected_code, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterrun: error: "), f"expected a one-line message:\n{output}"
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


# 1. --version, --help, python -m clusterrun, the console script.


def console_script() -> Path:
    script = Path(sys.executable).parent / "clusterrun"
    if not script.exists():
        pytest.skip("the clusterrun console script is not installed next to this Python")
    return script


def version() -> str:
    import clusterrun  # here, not at the top: a broken package should fail these tests, not the collection

    return clusterrun.__version__


def test_version_via_python_m() -> None:
    result = run_to_exit("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"clusterrun {version()}"
    assert result.stderr == ""


def test_version_via_console_script() -> None:
    result = subprocess.run([str(console_script()), "--version"], capture_output=True, text=True, timeout=DEADLINE,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"clusterrun {version()}"


HELP_FLAGS = ["--workers", "--bind", "--host", "--port", "--policy", "--threads", "--interface", "--factory",
              "--app-dir", "--max-restarts", "--restart-window", "--graceful-timeout"]


@pytest.mark.parametrize("how", ["python -m", "script"])
def test_help_mentions_every_flag(how: str) -> None:
    if how == "script":
        result = subprocess.run([str(console_script()), "--help"], capture_output=True, text=True, timeout=DEADLINE,
                                stdin=subprocess.DEVNULL)
    else:
        result = run_to_exit("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: clusterrun"), result.stdout
    missing = [flag for flag in HELP_FLAGS if flag not in result.stdout]
    assert not missing, f"--help does not mention {missing}:\n{result.stdout}"
    assert "APP" in result.stdout


def assert_worker_count(cluster: Cluster, count: int, note: str) -> None:
    assert startup_note(cluster) == (count, note), cluster.output()
    ready = ready_line(cluster)
    assert ready.count == count
    assert sorted(cluster.worker_pids()) == sorted(ready.pids)
    assert len(ready.pids) == count


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_python_m_serves_sample_app_root_and_heavy(run_cli: Callable[..., Cluster], app: str) -> None:
    """Points 1 and 10: each sample app answers / and /heavy with JSON naming the worker."""
    cluster = run_cli(app, "--workers", "2", "--port", "0")
    url = cluster.wait_ready()
    assert_worker_count(cluster, 2, "--workers 2")  # point 3: --workers N
    pids = ready_line(cluster).pids
    roots = {pid: response.json() for pid, response in answers_from_every_worker(url, pids).items()}
    for pid, body in roots.items():
        assert body["worker"]["pid"] == pid == body["pid"]
        assert isinstance(body["worker"]["id"], int)
        assert isinstance(body["worker"]["index"], int)
        assert body["message"].startswith("Hello from")
    ids = {body["worker"]["id"] for body in roots.values()}
    for _ in range(len(pids)):
        heavy = get(url, "/heavy")
        assert heavy.status_code == 200, heavy.text
        assert heavy.headers["content-type"].startswith("application/json")
        assert heavy.json()["result"] == HEAVY_RESULT
        assert heavy.json()["worker"] in ids


# 3. How many workers.


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_workers_auto_is_usable_cpus(run_cli: Callable[..., Cluster], app: str) -> None:
    cpus = expected_usable_cpus()
    cluster = run_cli(app, "--workers", "auto", "--port", "0")
    cluster.wait_ready()
    assert_worker_count(cluster, cpus, f"--workers auto: {cpus} usable CPU{'s' if cpus > 1 else ''}")


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_workers_2x_is_twice_usable_cpus(run_cli: Callable[..., Cluster], app: str) -> None:
    cpus = expected_usable_cpus()
    cluster = run_cli(app, "--workers", "2x", "--port", "0")
    url = cluster.wait_ready()
    assert_worker_count(cluster, 2 * cpus, f"--workers 2x: {cpus} usable CPU{'s' if cpus > 1 else ''}")
    assert_serves(url)


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_web_concurrency_sets_workers(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--port", "0", env={"WEB_CONCURRENCY": "3"})
    url = cluster.wait_ready()
    count, note = startup_note(cluster)
    assert count == 3 and "3" in note, cluster.output()
    assert ready_line(cluster).count == 3
    assert len(cluster.worker_pids()) == 3
    assert_serves(url)


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_workers_flag_wins_over_web_concurrency(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "1", "--port", "0", env={"WEB_CONCURRENCY": "3"})
    cluster.wait_ready()
    assert_worker_count(cluster, 1, "--workers 1")


# 4. Binding.


def assert_listening_then_ready(cluster: Cluster, listeners: int) -> list[str]:
    """The start-up line, one 'listening on' line per listener, then the ready line, in that order."""
    ready_line(cluster)
    lines = cluster.output().splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(r"with \d+ workers?", line))
    listening = [i for i, line in enumerate(lines) if "listening on " in line]
    ready = next(i for i, line in enumerate(lines) if "ready: " in line)
    assert len(listening) == listeners, cluster.output()
    assert start < min(listening) and max(listening) < ready, cluster.output()
    urls = cluster.urls()
    assert len(set(urls)) == listeners
    return urls


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_bind_port_zero_picks_a_free_port(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "1", "--bind", "127.0.0.1:0")
    [url] = assert_listening_then_ready(cluster, 1)
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", url)
    assert match is not None and int(match.group(1)) > 0, url
    assert_serves(url)


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_two_binds_both_serve(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "2", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0")
    urls = assert_listening_then_ready(cluster, 2)
    for url in urls:
        assert_serves(url)


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_bind_ipv6_loopback(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "1", "--bind", "[::1]:0")
    [url] = assert_listening_then_ready(cluster, 1)
    assert re.fullmatch(r"http://\[::1\]:\d+", url), url
    assert_serves(url)


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_bind_unix_socket_serves_and_is_removed_after_stop(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path
) -> None:
    path = tmp_path / "cr.sock"
    cluster = run_cli(app, "--workers", "1", "--bind", f"unix:{path}")
    [url] = assert_listening_then_ready(cluster, 1)
    assert url == f"unix:{path}"
    assert path.is_socket()
    assert_serves(url)
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0, cluster.output()
    assert not path.exists(), "the unix socket file is left behind after a clean stop"


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_bind_unix_socket_beside_tcp(run_cli: Callable[..., Cluster], app: str, tmp_path: Path) -> None:
    path = tmp_path / "cr.sock"
    cluster = run_cli(app, "--workers", "2", "--bind", "127.0.0.1:0", "--bind", f"unix:{path}")
    urls = assert_listening_then_ready(cluster, 2)
    assert urls[1] == f"unix:{path}"
    for url in urls:
        assert_serves(url)


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_unix_socket_in_use_is_refused_and_a_stale_one_reused(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path
) -> None:
    path = tmp_path / "cr.sock"
    first = run_cli(app, "--workers", "1", "--bind", f"unix:{path}")
    url = first.wait_ready()
    # Another name: a second cluster of one name would be refused before it tries to bind.
    second = run_cli(app, "--workers", "1", "--bind", f"unix:{path}", "--name", "second")
    code, output = exit_without_serving(second)
    assert_one_line_error(code, output, 2, f"unix:{path}", "address already in use")
    assert_serves(url)  # the refused second start left the first one's socket alone
    os.killpg(first.pid, signal.SIGKILL)
    first.wait_exit()
    assert path.is_socket()  # a killed server cannot clean up: the file is stale now
    again = run_cli(app, "--workers", "1", "--bind", f"unix:{path}")
    again.wait_ready()
    assert_serves(url)


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_host_and_port_shortcut(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = run_cli(app, "--workers", "1", "--host", "127.0.0.1", "--port", "0")
    [url] = assert_listening_then_ready(cluster, 1)
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", url), url
    assert_serves(url)


# 11. Errors: each exits by itself, with one line naming the bad value and the fix, and its exit code.


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_unknown_flag_exits_2_with_did_you_mean(app: str) -> None:
    result = run_to_exit(app, "--wrokers", "2")
    assert_config_error(result, 2, "--wrokers", "did you mean --workers?")


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
@pytest.mark.parametrize("value", ["abc", "0"])
def test_bad_workers_value_exits_2(app: str, value: str) -> None:
    result = run_to_exit(app, "--workers", value, "--port", "0")
    assert_config_error(result, 2, "--workers", repr(value), "auto")


def test_the_name_all_is_refused_since_commands_read_it_as_every_app() -> None:
    result = run_to_exit(SAMPLE_APP_PAIR[0], "--name", "all", "--port", "0")
    assert_config_error(result, 2, "--name", "'all'", "stop all", "choose another name")


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_unknown_policy_exits_2(app: str) -> None:
    result = run_to_exit(app, "--policy", "bogus", "--port", "0")
    assert_config_error(result, 2, "--policy", "'bogus'", "choose one of", "rr", "shared")


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
@pytest.mark.parametrize("how", ["--port", "--bind"])
def test_port_in_use_exits_2(app: str, how: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        where = ["--port", str(port)] if how == "--port" else ["--bind", f"127.0.0.1:{port}"]
        result = run_to_exit(app, "--workers", "1", *where)
    assert_config_error(result, 2, f"127.0.0.1:{port}", "address already in use", "--port")


def test_missing_module_exits_2() -> None:
    result = run_to_exit("nosuchmodule:app", "--workers", "1", "--port", "0")
    assert_config_error(result, 2, "'nosuchmodule'", "--app-dir")


def test_missing_app_argument_exits_2() -> None:
    result = run_to_exit("--workers", "1")
    assert_config_error(result, 2, "APP", "--help")


@pytest.mark.parametrize("spec", ["flask_app", "starlette_app:"])
def test_malformed_app_spec_exits_2(spec: str) -> None:
    result = run_to_exit(spec, "--workers", "1", "--port", "0")
    assert_config_error(result, 2, repr(spec), "module:attribute")


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_missing_app_dir_exits_2(run_cli: Callable[..., Cluster], app: str, tmp_path: Path) -> None:
    """A --app-dir that does not exist is a typo to report, even when APP happens to be importable from cwd."""
    missing = tmp_path / "no-such-dir"
    code, output = exit_without_serving(run_cli(app, "--app-dir", str(missing), "--workers", "1", "--port", "0"))
    assert_one_line_error(code, output, 2, "--app-dir", str(missing))


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_bad_web_concurrency_exits_2_naming_the_variable(run_cli: Callable[..., Cluster], app: str) -> None:
    """The value came from the environment, not from --workers: the message must say where to fix it."""
    code, output = exit_without_serving(run_cli(app, "--port", "0", env={"WEB_CONCURRENCY": "lots"}))
    assert_one_line_error(code, output, 2, "'lots'", "WEB_CONCURRENCY")


def assert_boot_error(result: subprocess.CompletedProcess[str], leftover_marker: str, *expected: str) -> None:
    """Exit 3, no traceback, one error line naming the problem, no process of this app left."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 3, output
    errors = [line for line in output.splitlines() if re.search(r"\b(ERROR|CRITICAL)\b|clusterrun: error:", line)]
    assert len(errors) == 1, f"expected one error line, got:\n{output}"
    for text in expected:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert processes_mentioning(leftover_marker) == []


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_missing_attribute_exits_3(app: str) -> None:
    spec = app.replace(":app", ":nope")
    result = run_to_exit(spec, "--workers", "2", "--port", "0")
    assert_boot_error(result, spec, "'nope'", spec.split(":")[0], "after the colon")


def test_module_raising_at_import_exits_3() -> None:
    result = run_to_exit("e2e_boom_import:app", "--workers", "2", "--port", "0", cwd=TEST_APPS)
    assert_boot_error(result, "e2e_boom_import", "'e2e_boom_import'", "RuntimeError",
                      "e2e-boom: DATABASE_URL is not set", "e2e_boom_import.py")


def test_not_callable_exits_3() -> None:
    result = run_to_exit("e2e_not_callable:app", "--workers", "2", "--port", "0", cwd=TEST_APPS)
    assert_boot_error(result, "e2e_not_callable", "'e2e_not_callable:app'", "not an app", "dict")


def test_asgi_lifespan_startup_failure_exits_3() -> None:
    result = run_to_exit("e2e_lifespan_fail:app", "--workers", "2", "--port", "0", cwd=TEST_APPS)
    assert_boot_error(result, "e2e_lifespan_fail", "lifespan", "e2e-lifespan: cache server unreachable")


def test_factory_raising_exits_3() -> None:
    result = run_to_exit("e2e_factory:create_broken", "--factory", "--workers", "2", "--port", "0", cwd=TEST_APPS)
    assert_boot_error(result, "e2e_factory:create_broken", "'e2e_factory:create_broken'", "ValueError",
                      "e2e-factory: SECRET_KEY is missing")


def test_module_with_syntax_error_exits_3(tmp_path: Path) -> None:
    """The message points at the user's file and line, not at importlib's internals."""
    (tmp_path / "e2e_syntax_error.py").write_text("def app(:\n    pass\n")
    result = run_to_exit("e2e_syntax_error:app", "--app-dir", str(tmp_path), "--workers", "2", "--port", "0")
    assert_boot_error(result, "e2e_syntax_error", "'e2e_syntax_error'", "SyntaxError", "e2e_syntax_error.py",
                      "line 1")
    assert "importlib" not in result.stderr, result.stderr
