"""Configuration sources, as a user tries them: a pyproject.toml or clusterrun.toml in the project folder,
CLUSTERRUN_* variables, the command line; and `clusterrun config` showing where each value came from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from clusterrun.config.options import OPTIONS
from clusterrun.config.sources import env_names

from helpers import FRESH, TEST_APPS, assert_config_error, run_to_exit, sample_worker


def config_json(folder: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_to_exit("config", "--json", *args, cwd=folder, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def write_pyproject(folder: Path, table: str) -> None:
    (folder / "pyproject.toml").write_text(f'[project]\nname = "shop"\n\n[tool.clusterrun]\n{table}')


def test_a_bare_clusterrun_serves_the_app_its_pyproject_names(run_cli: Any, tmp_path: Path) -> None:
    write_pyproject(tmp_path, f'app = "flask_app:app"\napp-dir = "{TEST_APPS.parent.parent / "sample_apps"}"\n'
                              'workers = 2\nbind = ["127.0.0.1:0"]\nname = "from-file"\n')
    cluster = run_cli(cwd=tmp_path)
    url = cluster.wait_ready()
    assert sample_worker(FRESH.get(url).json())["index"] in (0, 1)
    status = cluster.status()
    assert (status["name"], status["app"], status["target"]) == ("from-file", "flask_app:app", 2)


def test_the_command_line_wins_over_the_environment_over_the_file(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'app = "flask_app:app"\nworkers = 3\nmax-requests = 100\ntimeout-keep-alive = 7\n')
    env = {"CLUSTERRUN_WORKERS": "2", "CLUSTERRUN_MAX_REQUESTS": "200"}
    shown = config_json(tmp_path, "--max-requests", "300", env=env)
    assert shown["max-requests"] == {"value": 300, "source": "--max-requests"}
    assert shown["workers"] == {"value": "2 (2)", "source": "CLUSTERRUN_WORKERS"}
    assert shown["timeout-keep-alive"] == {
        "value": 7.0, "source": "pyproject.toml [tool.clusterrun]: timeout-keep-alive"}
    assert shown["app"]["source"] == "pyproject.toml [tool.clusterrun]: app"
    assert shown["backlog"] == {"value": 2048, "source": "default"}
    assert config_json(tmp_path)["workers"]["source"] == "pyproject.toml [tool.clusterrun]: workers"


def test_clusterrun_toml_and_an_explicit_config_file(tmp_path: Path) -> None:
    (tmp_path / "clusterrun.toml").write_text('app = "flask_app:app"\nworkers = 2\n')
    assert config_json(tmp_path)["workers"]["source"] == "clusterrun.toml: workers"
    other = tmp_path / "prod.toml"
    other.write_text('app = "starlette_app:app"\npolicy = "shared"\n')
    shown = config_json(tmp_path, "--config", str(other))
    assert shown["app"]["value"] == "starlette_app:app" and shown["policy"]["source"] == "prod.toml: policy"


def test_every_option_has_its_environment_variable(tmp_path: Path) -> None:
    (tmp_path / "clusterrun.toml").write_text('app = "flask_app:app"\n')
    names = {option.name: env_names(option)[0] for option in OPTIONS}
    assert names["max_requests"] == "CLUSTERRUN_MAX_REQUESTS" and names["binds"] == "CLUSTERRUN_BIND"
    shown = config_json(tmp_path, env={"CLUSTERRUN_BIND": "127.0.0.1:9001, unix:/tmp/x.sock",
                                       "CLUSTERRUN_ACCESS_LOG": "true", "CLUSTERRUN_LOG_FORMAT": "json"})
    assert shown["bind"]["value"] == ["127.0.0.1:9001", "unix:/tmp/x.sock"]
    assert shown["access-log"] == {"value": True, "source": "CLUSTERRUN_ACCESS_LOG"}
    assert shown["log-format"]["value"] == "json"


@pytest.mark.parametrize("table, expected", [
    ('app = "flask_app:app"\nmax-request = 3\n', ("unknown key 'max-request' in pyproject.toml [tool.clusterrun]",
                                                  "did you mean 'max-requests'?")),
    ('app = "flask_app:app"\nworkers = "many"\n', ("bad --workers value 'many'",
                                                  "comes from pyproject.toml [tool.clusterrun]: workers")),
    ('app = "flask_app"\n', ("bad APP 'flask_app'", "pyproject.toml [tool.clusterrun]: app")),
])
def test_a_bad_file_names_the_key_the_file_and_the_fix(tmp_path: Path, table: str, expected: tuple[str, ...]
                                                      ) -> None:
    write_pyproject(tmp_path, table)
    assert_config_error(run_to_exit(cwd=tmp_path), 2, *expected)


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    result = run_to_exit("flask_app:app", cwd=tmp_path, env={**os.environ, "CLUSTERRUN_TIMEOUT": "soon"})
    assert_config_error(result, 2, "bad --timeout value 'soon'", "environment variable CLUSTERRUN_TIMEOUT")


def test_no_app_anywhere_says_where_one_may_go(tmp_path: Path) -> None:
    assert_config_error(run_to_exit(cwd=tmp_path), 2, "no APP given", "[tool.clusterrun]", "clusterrun.toml")


def test_a_switch_on_by_default_can_be_turned_off_anywhere_and_values_read_as_written(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'app = "flask_app:app"\nproxy-headers = false\nuds-mode = "660"\n'
                              'forwarded-allow-ips = ["10.0.0.0/8", "unix"]\n')
    shown = config_json(tmp_path)
    assert shown["proxy-headers"] == {"value": False, "source": "pyproject.toml [tool.clusterrun]: proxy-headers"}
    assert config_json(tmp_path, "--proxy-headers")["proxy-headers"] == {"value": True, "source": "--proxy-headers"}
    env = {"CLUSTERRUN_PROXY_HEADERS": "0"}
    assert config_json(tmp_path, env=env)["proxy-headers"] == {"value": False, "source": "CLUSTERRUN_PROXY_HEADERS"}
    text = run_to_exit("config", cwd=tmp_path).stdout
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert lines["uds-mode"].split()[1] == "660"  # octal, as written, not 432
    assert "10.0.0.0/8, unix" in lines["forwarded-allow-ips"]


@pytest.mark.parametrize("line, expected", [
    ("bind = 8000", "bad --bind value 8000: give ADDRESS as a string, not an integer"),
    ("timeout = true", "bad --timeout value true: give SECONDS as a number, not a boolean"),
    ("max-memory = 1.5", "bad --max-memory value 1.5: give MB as an integer, not a number with a fraction"),
    ('preload = "maybe"', "bad --preload value 'maybe': give true or false"),
])
def test_a_value_of_the_wrong_type_in_the_file_is_one_line_and_exit_2(tmp_path: Path, line: str, expected: str
                                                                       ) -> None:
    # Issue 22: a traceback and exit 1; a boolean read as 1.0 s; 1.5 MiB read as 1 MiB; "maybe" read as off.
    write_pyproject(tmp_path, f'app = "flask_app:app"\n{line}\n')
    key = line.split(" =")[0]
    assert_config_error(run_to_exit("config", cwd=tmp_path), 2, expected,
                        f"comes from pyproject.toml [tool.clusterrun]: {key}")


def test_a_switch_from_the_environment_that_is_no_switch_is_exit_2(tmp_path: Path) -> None:
    result = run_to_exit("config", "flask_app:app", cwd=tmp_path, env={**os.environ, "CLUSTERRUN_ACCESS_LOG": "maybe"})
    assert_config_error(result, 2, "bad --access-log value 'maybe'", "environment variable CLUSTERRUN_ACCESS_LOG")


@pytest.mark.parametrize("app, code, expected", [
    ("nosuchmod:app", 2, "cannot find module 'nosuchmod'"),
    ("broken:app", 3, "importing 'broken' failed: RuntimeError: no database (broken.py, line 1)"),
    ("fine:nothing", 3, "module 'fine' has no attribute 'nothing'"),
    ("fine:number", 3, "'fine:number' is a int, not an app"),
])
def test_config_check_imports_the_app_and_says_what_failed(tmp_path: Path, app: str, code: int, expected: str
                                                           ) -> None:
    # Issue 22: `clusterrun config nosuchmod:app` exited 0. The codes are a start's: 2 for a module that is not
    # there (found before any fork), 3 for an app that fails to boot.
    (tmp_path / "broken.py").write_text('raise RuntimeError("no database")\n')
    (tmp_path / "fine.py").write_text("number = 7\n\ndef app(environ, start_response):\n    return []\n")
    assert_config_error(run_to_exit("config", "--check", app, cwd=tmp_path), code, expected)
    result = run_to_exit("config", "--check", "--json", "fine:app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["app"]["value"] == "fine:app"
    assert result.stderr.strip() == "clusterrun: fine:app loads: a WSGI app"
