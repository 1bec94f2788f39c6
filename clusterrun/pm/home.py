"""The state folder, ``$CLUSTERRUN_HOME`` (default ~/.clusterrun, 0700): logs, pid files, app records, the dump.

    logs/<name>-out.log, logs/<name>-error.log   the app's stdout and stderr (clusterrun's own log)
    pids/<name>.pid                              the primary's pid, written by the primary (--pid-file)
    apps/<name>.json                             what start used: enough to start the app again
    apps/<name>.toml                             its options, as the --config file the primary reads
    dump.json                                    clusterrun save's list of records, for clusterrun resurrect

A record holds the app's environment variables with their values (a restart needs them), so records are
written 0600 in a 0700 folder, and describe shows only the variables' names.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from clusterrun.errors import ConfigError
from clusterrun.host.statehome import state_home


@dataclass(frozen=True)
class Record:
    """What start used for one app: its name, app, folder, file, environment name and variables, options."""

    name: str
    app: str
    cwd: str
    file: str = ""  # the apps file it came from; "" for a bare start
    envname: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # raw values by option name, as the file wrote them
    args: tuple[str, ...] = ()  # option flags given on start's command line (a bare start)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "env": dict(self.env), "options": dict(self.options), "args": list(self.args)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Record:
        try:
            return cls(str(data["name"]), str(data["app"]), str(data["cwd"]), str(data.get("file", "")),
                       str(data.get("envname", "")), dict(data.get("env", {})), dict(data.get("options", {})),
                       tuple(str(arg) for arg in data.get("args", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where} is not an app record ({exc}): delete it, and start the app again") from None


class Home:
    def __init__(self, root: str | None = None) -> None:
        self.root = root or state_home()

    def folder(self, *parts: str) -> str:
        path = os.path.join(self.root, *parts)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def out_log(self, name: str) -> str:
        return os.path.join(self.folder("logs"), f"{name}-out.log")

    def error_log(self, name: str) -> str:
        return os.path.join(self.folder("logs"), f"{name}-error.log")

    def pid_file(self, name: str) -> str:
        return os.path.join(self.folder("pids"), f"{name}.pid")

    def record_file(self, name: str) -> str:
        return os.path.join(self.folder("apps"), f"{name}.json")

    def options_file(self, name: str) -> str:
        return os.path.join(self.folder("apps"), f"{name}.toml")

    @property
    def dump_file(self) -> str:
        return os.path.join(self.folder(), "dump.json")

    def pid(self, name: str) -> int | None:
        """The pid in the app's pid file; None without one (or with one that holds no pid)."""
        try:
            with open(self.pid_file(name)) as file:
                text = file.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    # Records.

    def names(self) -> list[str]:
        return sorted(entry[:-5] for entry in os.listdir(self.folder("apps")) if entry.endswith(".json"))

    def record(self, name: str) -> Record | None:
        path = self.record_file(name)
        try:
            with open(path) as file:
                data = json.load(file)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path} ({exc}): delete it, and start the app again") from None
        return Record.from_json(data, path)

    def keep(self, record: Record) -> None:
        """Write the app's record and its options file (what the primary reads with --config)."""
        write_private(self.options_file(record.name), toml_table(record.options))
        write_private(self.record_file(record.name), json.dumps(record.as_json(), indent=2) + "\n")

    def forget(self, name: str) -> None:
        for path in (self.record_file(name), self.options_file(name), self.pid_file(name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def read_dump(self) -> list[Record]:
        path = self.dump_file
        try:
            with open(path) as file:
                data = json.load(file)
        except FileNotFoundError:
            raise ConfigError(f"no dump at {path}: run clusterrun save while the apps run, then resurrect") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path} ({exc}): run clusterrun save again") from None
        if not isinstance(data, list):
            raise ConfigError(f"{path} is not a list of apps: run clusterrun save again")
        return [Record.from_json(item, path) for item in data]

    def write_dump(self, records: list[Record]) -> None:
        write_private(self.dump_file, json.dumps([record.as_json() for record in records], indent=2) + "\n")


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole (a reader never sees half a file), readable by this user only."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def toml_table(values: Mapping[str, Any]) -> str:
    """``values`` as the keys of a TOML file, one a line."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "nan" if math.isnan(value) else ("-inf" if value < 0 else "inf")
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string (json.dumps escapes as TOML reads)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write the value {value!r} back as TOML: give it as a string")
