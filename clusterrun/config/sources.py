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
    keys = {flag_name(option): option.name for option in OPTIONS} | {option.name: option.name for option in OPTIONS}
    values: dict[str, Any] = {}
    app = None
    for key, value in data.items():
        name = keys.get(key.replace("-", "_"))
        if key == "app":
            if not isinstance(value, str):
                raise ConfigError(f"bad app in {label}: write it as a string, app = \"module:attribute\"")
            app = value
        elif name is None:
            close = difflib.get_close_matches(key.replace("_", "-"), [k.replace("_", "-") for k in keys], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown key {key!r} in {label}: {hint}every key is an option's flag without its "
                              "dashes (clusterrun --help lists them)")
        else:
            values[name] = value
    return FileValues(label, values, app)
