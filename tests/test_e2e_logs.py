"""Logs that fit the user's setup: JSON lines, files reopened on SIGUSR1, the access line's format, a logging
config file, access lines on stdout and the rest on stderr."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import DEADLINE, FRESH, SUP_APP_PAIR, TEST_APPS, assert_config_error, run_to_exit, start, wait_until


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for_text(path: Path, text: str) -> list[str]:
    wait_until(lambda: any(text in line for line in lines_of(path)), f"{text!r} in {path.name}")
    return [line for line in lines_of(path) if text in line]


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_json_lines_name_their_process_and_carry_the_access_fields(run_cli: Any, app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--log-format", "json", "--access-log")
    url = cluster.wait_ready()
    served_by = FRESH.get(url + "/?x=1", headers={"User-Agent": "probe/1"}).json()
    cluster.wait_for_line('"logger": "clusterrun.access"')
    records = [json.loads(line) for line in cluster.output().splitlines()]  # every line is one JSON object
    ready = next(r for r in records if r["message"].startswith("ready: 2 workers serving"))
    assert ready["primary"] == cluster.pid and ready["level"] == "info" and ready["logger"] == "clusterrun"
    assert ready["time"].endswith("Z")
    access = next(r for r in records if r["logger"] == "clusterrun.access")
    assert access["worker"] == {"id": served_by["id"], "index": served_by["index"], "pid": served_by["pid"]}
    assert (access["method"], access["path"], access["query"], access["status"]) == ("GET", "/", "x=1", 200)
    assert access["user_agent"] == "probe/1" and access["bytes"] > 0 and access["duration_ms"] >= 0


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_sigusr1_reopens_the_log_files_in_the_primary_and_the_workers(run_cli: Any, app: str,
                                                                      tmp_path: Path) -> None:
    log, access = tmp_path / "clusterrun.log", tmp_path / "access.log"
    cluster = start(run_cli, app, "--workers", "2", "--log-file", str(log), "--access-log-file", str(access),
                    "--access-log")
    wait_for_text(log, "ready: 2 workers serving")
    url = wait_for_text(log, "listening on")[0].rsplit(" ", 1)[1]
    assert FRESH.get(url + "/before").status_code == 200
    wait_for_text(access, '"GET /before HTTP/1.1" 200')

    # logrotate: move the files away, then tell the primary.
    log.rename(tmp_path / "clusterrun.log.1")
    access.rename(tmp_path / "access.log.1")
    cluster.signal(signal.SIGUSR1)
    wait_for_text(log, "received SIGUSR1: reopening 2 log files here and in every worker")
    # Both workers reopened theirs: each one's next access line lands in the new file.
    wait_until(lambda: _served_into(url, access) == 2, "an access line from each worker in the new file")
    assert not any("/after" in line for line in lines_of(tmp_path / "access.log.1"))
    assert cluster.proc.poll() is None  # SIGUSR1 never ends the primary


def _served_into(url: str, access: Path) -> int:
    """Send a request; how many distinct workers have written an access line into ``access`` so far."""
    FRESH.get(url + "/after")
    return len({re.search(r"\[worker (\d+) ", line).group(1) for line in lines_of(access)  # type: ignore[union-attr]
                if "/after" in line})


def test_the_access_line_takes_the_format_given(run_cli: Any) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--access-log", "--access-log-format",
                    "{method} {path} {status} worker={worker_id} ua={user_agent} {duration_us}us")
    url = cluster.wait_ready()
    FRESH.get(url + "/fmt", headers={"User-Agent": "probe/2"})
    [line] = cluster.wait_for_line(r"GET /fmt 200 worker=1 ua=probe/2 \d+us$")
    assert line


@pytest.mark.parametrize("app", [*SUP_APP_PAIR, "sup_app:wsgi --threads 2"])
def test_the_access_line_carries_request_and_response_headers(run_cli: Any, app: str) -> None:
    # Inline WSGI, ASGI on the stack, and WSGI in a thread pool (the stack's bridge): every engine alike.
    cluster = start(run_cli, *app.split(), "--workers", "1", "--access-log", "--log-format", "json",
                    "--access-log-format", "{path} id={header_x_request_id} tag={header_x_tag} "
                    "type={response_header_content_type} none={header_x_missing}")
    url = cluster.wait_ready()
    FRESH.get(url + "/hdr", headers=[("X-Request-Id", "abc-1"), ("X-Tag", "a"), ("X-Tag", "b")])
    [line] = cluster.wait_for_line('"logger": "clusterrun.access"')
    record = json.loads(line.string)
    assert record["message"] == "/hdr id=abc-1 tag=a, b type=application/json none=-"
    assert (record["header_x_request_id"], record["response_header_content_type"]) == ("abc-1", "application/json")


def test_a_header_field_in_capitals_is_refused_with_the_spelling() -> None:
    result = run_to_exit("sup_app:wsgi", "--access-log-format", "{header_X_Request_Id}", cwd=TEST_APPS)
    assert_config_error(result, 2, "no field 'header_X_Request_Id'", "header_x_request_id")


def test_a_bad_access_log_format_names_the_field() -> None:
    result = run_to_exit("sup_app:wsgi", "--access-log-format", "{status} {nope}", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --access-log-format", "no field 'nope'", "{status}")


@pytest.mark.parametrize("suffix", [".json", ".ini"])
def test_a_log_config_file_takes_over(run_cli: Any, tmp_path: Path, suffix: str) -> None:
    target = tmp_path / "from-config.log"
    config = tmp_path / f"logging{suffix}"
    if suffix == ".json":
        config.write_text(json.dumps({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"mine": {"format": "MINE %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target), "formatter": "mine"}},
            "loggers": {"clusterrun": {"handlers": ["file"], "level": "INFO", "propagate": False}},
        }))
    else:
        config.write_text(f"""[loggers]\nkeys=root,clusterrun\n[handlers]\nkeys=file\n[formatters]\nkeys=mine\n
[logger_root]\nhandlers=\n[logger_clusterrun]\nhandlers=file\nlevel=INFO\nqualname=clusterrun\npropagate=0\n
[handler_file]\nclass=FileHandler\nargs=({str(target)!r},)\nformatter=mine\n
[formatter_mine]\nformat=MINE %(levelname)s %(name)s: %(message)s\n""")
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--log-config", str(config))
    [ready] = wait_for_text(target, "ready: 1 worker serving")
    assert ready.startswith("MINE INFO clusterrun: ready")
    assert cluster.proc.poll() is None


def test_access_lines_go_to_stdout_and_the_rest_to_stderr(tmp_path: Path) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterrun", "sup_app:asgi", "--port", "0", "--workers", "1", "--access-log"],
            cwd=TEST_APPS, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        url = wait_for_text(err, "listening on")[0].rsplit(" ", 1)[1]
        wait_for_text(err, "ready: 1 worker serving")
        FRESH.get(url + "/split")
        [line] = wait_for_text(out, '"GET /split HTTP/1.1" 200')
        assert "[worker 1 index 0 pid" in line
        assert not any("/split" in text for text in lines_of(err))
        assert not any("ready:" in text for text in lines_of(out))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE)


def test_a_bad_log_file_folder_is_named() -> None:
    result = run_to_exit("sup_app:wsgi", "--log-file", "/nonexistent/dir/x.log", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --log-file value '/nonexistent/dir/x.log'", "does not exist")
