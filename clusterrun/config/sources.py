"""Where option values come from besides the command line: environment variables and a TOML file.

Every option (clusterrun.config.options.OPTIONS) can be set as ``CLUSTERRUN_<FLAG>`` in the environment (the long
flag in capitals, dashes as underscores: ``--max-requests`` is ``CLUSTERRUN_MAX_REQUESTS``; a few keep the
names other servers use too, such as ``WEB_CONCURRENCY``), and as a key of a TOML file: ``--config FILE``,
else ``[tool.clusterrun]`` in ./pyproject.toml, else ./clusterrun.toml. A key is the flag's name (``max-requests``
or ``max_requests``); ``app = "module:attr"`` names the app. The command line wins over the environment, the
environment over the file, the file over the defaults (clusterrun.config.options.build_config).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterrun.config.options import OPTIONS, Option
from clusterrun.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib


def flag_name(option: Option) -> str:
    """The option's long flag without dashes, with underscores: max_requests, bind, no_control."""
    return option.flags[-1].lstrip("-").replace("-", "_")


def env_names(option: Option) -> tuple[str, ...]:
    """The environment variables that set ``option``: CLUSTERRUN_<FLAG>, then any other server's name for it."""
    own = "CLUSTERRUN_" + flag_name(option).upper()
    return (own, option.env) if option.env and option.env != own else (own,)


@dataclass(frozen=True)
class FileValues:
    """The options a configuration file sets: raw values by option name, and where they come from."""

    label: str  # e.g. "pyproject.toml [tool.clusterrun]": how messages and `clusterrun config` name the file
    values: Mapping[str, Any] = field(default_factory=dict)
    app: str | None = None
    apps: tuple[AppTable, ...] = ()  # the [[apps]] tables, for clusterrun start
    path: str = ""


@dataclass(frozen=True)
class AppTable:
    """One [[apps]] table: an app the process manager starts, with its options as raw values by option name."""

    name: str
    app: str
    cwd: str  # absolute: a relative cwd is taken from the file's folder
    values: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    envs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # envname -> the variables it overrides

    def environment(self, envname: str) -> dict[str, str]:
        """``env`` with ``env_<envname>``'s variables over it (an app without that table keeps its ``env``, as
        PM2 does; the caller refuses an envname that no app of the set has: a typo)."""
        return {**self.env, **(self.envs.get(envname, {}) if envname else {})}


def find_file(explicit: str | None, folder: str = ".") -> FileValues | None:
    """``--config FILE``, else [tool.clusterrun] in ./pyproject.toml, else ./clusterrun.toml; None if none."""
    if explicit:
        if not os.path.isfile(explicit):
            raise ConfigError(f"bad --config value {explicit!r}: no such file")
        is_pyproject = os.path.basename(explicit) == "pyproject.toml"
        return read_file(explicit, "tool.clusterrun" if is_pyproject else None)
    pyproject = os.path.join(folder, "pyproject.toml")
    if os.path.isfile(pyproject):
        found = read_file(pyproject, "tool.clusterrun", required=False)
        if found is not None:
            return found
    own = os.path.join(folder, "clusterrun.toml")
    return read_file(own, None) if os.path.isfile(own) else None


def read_file(path: str, table: str | None, required: bool = True) -> FileValues | None:
    label = os.path.basename(path) + (f" [{table}]" if table else "")
    try:
        with open(path, "rb") as file:
            data: Any = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix the file or give another with --config") from None
    for part in (table or "").split(".") if table else ():
        data = data.get(part) if isinstance(data, dict) else None
    if data is None and not required:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} has no [{table}] table: add one, or give the file with --config")
    apps = data.get("apps")
    if apps is not None:
        tables = _app_tables(apps, label, os.path.dirname(os.path.abspath(path)))
        data = {key: value for key, value in data.items() if key != "apps"}
    values, app = _option_values(data, label)
    return FileValues(label, values, app, () if apps is None else tables, os.path.abspath(path))


_KEYS = {flag_name(option): option.name for option in OPTIONS} | {option.name: option.name for option in OPTIONS}


def _option_values(data: Mapping[str, Any], label: str, extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], Any]:
    """The options in ``data`` by option name, and its ``app``; ConfigError for a key that is no option."""
    values: dict[str, Any] = {}
    app = None
    for key, value in data.items():
        name = _KEYS.get(key.replace("-", "_"))
        if key == "app":
            if not isinstance(value, str):
                raise ConfigError(f"bad app in {label}: write it as a string, app = \"module:attribute\"")
            app = value
        elif name is None:
            known = [k.replace("_", "-") for k in _KEYS] + list(extra)
            close = difflib.get_close_matches(key.replace("_", "-"), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            also = f" or one of {', '.join(extra)}" if extra else ""
            raise ConfigError(f"unknown key {key!r} in {label}: {hint}every key is an option's flag without its "
                              f"dashes (clusterrun --help lists them){also}")
        else:
            values[name] = value
    return values, app


_APP_KEYS = ("name", "app", "cwd", "env", "env_<envname>")


def _app_tables(apps: Any, label: str, folder: str) -> tuple[AppTable, ...]:
    """The [[apps]] tables, checked one by one and as a set: names unique, no two apps on one address."""
    if not isinstance(apps, list) or not all(isinstance(table, dict) for table in apps):
        raise ConfigError(f"bad apps in {label}: write each app as an [[apps]] table")
    found: list[AppTable] = []
    where: dict[str, str] = {}  # address -> the app that listens there
    for number, table in enumerate(apps, 1):
        one = _app_table(table, f"{label} [[apps]] #{number}", folder)
        if any(other.name == one.name for other in found):
            raise ConfigError(f"two apps are named {one.name!r} in {label}: give each [[apps]] table its own name")
        for address in _addresses(one.values):
            if address in where:
                raise ConfigError(f"apps {where[address]!r} and {one.name!r} in {label} both listen on {address}: "
                                  "give each its own bind or port")
            where[address] = one.name
        found.append(one)
    return tuple(found)


def _app_table(table: Mapping[str, Any], label: str, folder: str) -> AppTable:
    name, app, cwd = table.get("name"), table.get("app"), table.get("cwd", ".")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"an app in {label} has no name: add name = \"...\" (what start, stop and logs call it)")
    label = f"{label.rpartition(' [[apps]]')[0]} [[apps]] {name!r}"
    if not isinstance(app, str) or not app:
        raise ConfigError(f"app {name!r} in {label} has no app: add app = \"module:attribute\"")
    if not isinstance(cwd, str):
        raise ConfigError(f"bad cwd in {label}: write it as a string, a folder (relative to the file's)")
    env = _env_table(table.get("env", {}), f"{label} env")
    envs = {key[4:]: _env_table(value, f"{label} {key}") for key, value in table.items()
            if key.startswith("env_") and key[4:]}
    options = {key: value for key, value in table.items()
               if key not in ("name", "app", "cwd", "env") and not (key.startswith("env_") and key[4:])}
    values, _app = _option_values(options, label, _APP_KEYS)
    managed = ("name", "pid_file", "control", "no_control")  # start names each app and follows it by its socket
    bad = next((key for key in options if _KEYS.get(key.replace("-", "_")) in managed), None)
    if bad is not None:
        raise ConfigError(f"key {bad!r} in {label} is set by clusterrun start for each app: remove it")
    return AppTable(name, app, os.path.normpath(os.path.join(folder, cwd)), values, env, envs)


def _env_table(value: Any, label: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"bad {label}: write it as a table of NAME = \"value\"")
    env: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(f"bad {label} value {key!r}: give a string or a number")
        env[str(key)] = str(item)
    return env


def _addresses(values: Mapping[str, Any]) -> list[str]:
    """The addresses an app's options make it listen on, as written (port 0 and fds are never shared)."""
    binds = values.get("binds")
    if binds is not None:
        return [str(bind) for bind in (binds if isinstance(binds, list) else [binds]) if not str(bind).endswith(":0")]
    if values.get("fds"):
        return []
    port = values.get("port", 8000)
    return [] if str(port) == "0" else [f"{values.get('host', '127.0.0.1')}:{port}"]
