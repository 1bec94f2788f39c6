"""Unit tests of the configuration: worker counts, --bind forms, the build, every option's type rule."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from clusterrun import cli
from clusterrun.config.build import build_config
from clusterrun.config.options import OPTIONS, Config, Option, resolve_workers
from clusterrun.errors import ConfigError
from clusterrun.host.listeners import BindAddress, parse_bind

# Config


@pytest.mark.parametrize("spec, cpus, expected", [("4", 8, 4), ("auto", 3, 3), ("2x", 3, 6), ("0.5x", 3, 2),
                                                  ("0.1x", 2, 1), (" AUTO ", 2, 2)])
def test_workers_resolve(spec: str, cpus: int, expected: int) -> None:
    assert resolve_workers(spec, cpus) == expected


@pytest.mark.parametrize("spec", ["abc", "0", "-1", "x", "0x", "2y", ""])
def test_bad_workers_name_the_value_and_the_fix(spec: str) -> None:
    with pytest.raises(ConfigError, match=rf"bad --workers value '{spec}'.*give a number like 4, auto"):
        resolve_workers(spec, 2)


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:8000", BindAddress("127.0.0.1", 8000)),
    ("[::1]:0", BindAddress("::1", 0)),
    (":9000", BindAddress("0.0.0.0", 9000)),
    ("8080", BindAddress("127.0.0.1", 8080)),
    ("unix:/tmp/app.sock", BindAddress(path="/tmp/app.sock")),
])
def test_bind_forms(text: str, address: BindAddress) -> None:
    assert parse_bind(text) == address


@pytest.mark.parametrize("text, message", [("::1:80", "brackets"), ("host:http", "not a number"),
                                           ("h:70000", "out of range"), ("unix:", "path is empty")])
def test_bad_bind_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_bind(text)


def test_build_config_defaults_and_environment() -> None:
    config = build_config("app:app", {}, environ={"WEB_CONCURRENCY": "3", "CLUSTERRUN_SCHED_POLICY": "shared"},
                          cpus=2)
    assert (config.workers, config.policy, config.binds) == (3, "shared", (BindAddress("127.0.0.1", 8000),))
    given = build_config("app:app", {"workers": "2x", "policy": "rr", "host": "0.0.0.0", "port": "0"},
                         environ={"CLUSTERRUN_SCHED_POLICY": "shared"}, cpus=2)
    assert (given.workers, given.policy, given.binds) == (4, "rr", (BindAddress("0.0.0.0", 0),))


@pytest.mark.parametrize("values, message", [
    ({"wrokers": 2}, "unknown option 'wrokers'"),
    ({"policy": "bogus"},
     "unknown --policy value 'bogus': choose one of rr, least-conn, sticky, shared, balanced, reuseport"),
    ({"threads": "0"}, "bad --threads value '0'"),
    ({"graceful_timeout": "soon"}, "bad --graceful-timeout value 'soon'"),
    ({"binds": ["127.0.0.1:1"], "port": "2"}, "--bind cannot be combined with --host/--port"),
])
def test_bad_options_are_config_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config("app:app", values, environ={}, cpus=2)


# A value of each TOML type, as written in the file, with the Python type it reads as and how a message shows it
# (a list's bad item may be named alone).
_TOML_VALUES = [("true", bool, ("true",)), ("1.5", float, ("1.5",)), ("7", int, ("7",)),
                ("[true]", list, ("[true]", "true")), ("{ a = 1 }", dict, ("{a = 1}",))]
# The options that are not fields of Config, and what they take besides a string.
_NOT_FIELDS: dict[str, tuple[type, ...]] = {"host": (), "port": (int,), "user": (int,), "group": (int,)}


def _right_types(option: Option) -> tuple[type, ...]:
    """The TOML types an option's value may have besides a string, as its Config field (or _NOT_FIELDS) says."""
    if option.name in _NOT_FIELDS:
        return _NOT_FIELDS[option.name]
    annotation = {field.name: str(field.type) for field in dataclasses.fields(Config)}[option.name]
    return {"bool": (bool,), "int": (int,), "float": (int, float), "tuple[int, ...]": (int,)}.get(annotation, ())


@pytest.mark.parametrize("option", OPTIONS, ids=[option.name for option in OPTIONS])
def test_every_option_refuses_a_value_of_the_wrong_type_from_the_file(
    option: Option, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 22: `bind = 8000` was a traceback, `timeout = true` silently 1.0 s, `max-memory = 1.5` silently 1 MiB.
    Walks OPTIONS, so that a new option is covered the day it is added: a value of a type it does not take is
    exit 2 with one line naming the flag, the value as written, the file and its key; one of a type it takes is
    served or refused the same way, never a traceback."""
    monkeypatch.chdir(tmp_path)
    for name in os.environ:
        if name.startswith("CLUSTERRUN_") or name in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"):
            monkeypatch.delenv(name)
    key = option.flags[-1].lstrip("-")
    for written, kind, shown in _TOML_VALUES:
        (tmp_path / "clusterrun.toml").write_text(f'app = "flask_app:app"\n{key} = {written}\n')
        code = cli.main(["config", "--json"])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        if kind in _right_types(option):
            assert code == 0 or (code == 2 and len(lines) == 1), (written, err)
            continue
        assert code == 2 and len(lines) == 1 and out == "", (written, out, err)
        assert any(lines[0].startswith(f"clusterrun: error: bad {option.flags[-1]} value {value}: ")
                   for value in shown), (written, lines[0])
        assert f"clusterrun.toml: {key}" in lines[0] and ", not a" in lines[0], (written, lines[0])


def test_a_string_from_the_environment_must_read_as_a_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_config("app:app", {}, environ={"CLUSTERRUN_PRELOAD": "off"}, cpus=1).preload is False
    assert build_config("app:app", {}, environ={"CLUSTERRUN_PRELOAD": "Yes"}, cpus=1).preload is True
    with pytest.raises(ConfigError, match=r"bad --preload value 'maybe': give true or false .*CLUSTERRUN_PRELOAD"):
        build_config("app:app", {}, environ={"CLUSTERRUN_PRELOAD": "maybe"}, cpus=1)


def test_the_api_takes_typed_values_and_refuses_wrong_ones() -> None:
    config = build_config("app:app", {"timeout": 5, "fds": [3], "headers": [("X-A", "b")],
                                      "forwarded_allow_ips": ["10.0.0.0/8"], "preload": True}, environ={}, cpus=1)
    assert (config.timeout, config.binds, config.headers, config.preload) == (
        5.0, (BindAddress(fd=3),), (("X-A", "b"),), True)
    with pytest.raises(ConfigError, match=r"bad --max-memory value 1\.5: give MB as an integer, not a number"):
        build_config("app:app", {"max_memory": 1.5}, environ={}, cpus=1)
    with pytest.raises(ConfigError, match="bad --threads value true: give N as an integer, not a boolean"):
        build_config("app:app", {"threads": True}, environ={}, cpus=1)


@pytest.mark.parametrize("app", ["app", "app:", ":app", "my-app:app", "app:1x"])
def test_bad_app_spec(app: str) -> None:
    with pytest.raises(ConfigError, match="write it as module:attribute"):
        build_config(app, {}, environ={}, cpus=1)
