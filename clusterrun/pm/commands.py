"""The process manager's commands: start, restart, delete, describe, save, resurrect.

Exit codes (as the rest of clusterrun): 0 done; 1 a control command failed (an app that does not stop);
2 bad input (an unknown app name, a bad apps file, an app already running); 3 an app failed to boot (nothing
of that start is left running); 4 its workers hit their restart limit while it booted.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from clusterrun.config.build import build_config
from clusterrun.config.sources import AppTable, FileValues, find_file, read_file
from clusterrun.ctl.client import answers, request
from clusterrun.ctl.text import CommandParser, duration, run_command, table
from clusterrun.errors import ConfigError, ControlError
from clusterrun.host.controlsocket import socket_path
from clusterrun.pm.home import Home, Record
from clusterrun.pm.launch import check_free, start_set, stop_app

COMMANDS = ("start", "restart", "delete", "describe", "save", "resurrect")
_OWN_FLAGS = ("--env", "--only", "--boot-timeout")


# start: what to start.

def _split(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """start's arguments: its targets (before the first flag), its own flags, and the option flags for the app."""
    targets: list[str] = []
    own: dict[str, list[str]] = {flag: [] for flag in _OWN_FLAGS}
    rest: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        flag, equals, value = item.partition("=")
        if flag in _OWN_FLAGS:
            if not equals:
                index += 1
                if index >= len(items):
                    raise ConfigError(f"{flag} needs a value: see clusterrun start --help")
                value = items[index]
            own[flag].append(value)
        elif not rest and not item.startswith("-"):
            targets.append(item)
        else:
            rest.append(item)
        index += 1
    return targets, own, rest


def _records_from_file(found: FileValues, envname: str, only: set[str]) -> list[Record]:
    if not found.apps:
        if found.app is None:
            raise ConfigError(f"{found.label} holds neither [[apps]] nor app = \"module:attribute\": add one")
        name = str(found.values.get("name") or found.app.partition(":")[0])
        if found.values.get("control") or found.values.get("no_control"):
            raise ConfigError(f"{found.label} sets control or no-control: clusterrun start follows each app by its "
                              "own control socket; remove the key, or run the app in the foreground")
        return [Record(name, found.app, os.path.dirname(found.path), found.path, envname,
                       options={k: v for k, v in found.values.items() if k not in ("name", "pid_file")})]
    apps: Sequence[AppTable] = found.apps
    if only:
        names = {app.name for app in apps}
        unknown = sorted(only - names)
        if unknown:
            raise ConfigError(f"--only {unknown[0]}: {found.label} has no such app (its apps: "
                              f"{', '.join(sorted(names))})")
        apps = [app for app in apps if app.name in only]
    if envname and not any(envname in app.envs for app in apps):
        raise ConfigError(f"--env {envname}: no app in {found.label} has an [apps.env_{envname}] table; add one, "
                          "or check the name")
    return [Record(app.name, app.app, app.cwd, found.path, envname, app.environment(envname), dict(app.values))
            for app in apps]


def _bare_record(app: str, args: list[str], envname: str) -> Record:
    """``clusterrun start module:attr --workers 2 --name x``: the flags go to the app as given."""
    name = app.partition(":")[0]
    kept: list[str] = []
    index = 0
    while index < len(args):
        flag, equals, value = args[index].partition("=")
        if flag == "--name":
            if not equals:
                index += 1
                value = args[index] if index < len(args) else ""
            name = value
        elif flag in ("--pid-file", "--control", "--no-control", "--config"):
            raise ConfigError(f"{flag} is set by clusterrun start for each app: remove it (the state folder holds "
                              "the pid file; the control socket is found by name)")
        else:
            kept.append(args[index])
        index += 1
    if envname:
        raise ConfigError(f"--env {envname} needs an apps file with [apps.env_{envname}] tables: give the file")
    return Record(name, app, os.getcwd(), args=tuple(kept))


def _targets(home: Home, targets: list[str], own: dict[str, list[str]], rest: list[str]) -> list[Record]:
    envname = own["--env"][-1] if own["--env"] else ""
    only = {name for value in own["--only"] for name in value.split(",") if name}
    if rest and not (len(targets) == 1 and ":" in targets[0] and not os.path.isfile(targets[0])):
        raise ConfigError(f"option {rest[0]} is for a single app started as module:attribute; put options of an "
                          "apps file in its [[apps]] tables")
    if not targets:
        found = find_file(None)
        if found is None:
            raise ConfigError("nothing to start: give an apps file, a module:attribute, or an app's name; or write "
                              "[[apps]] in ./clusterrun.toml")
        return _records_from_file(found, envname, only)
    records: list[Record] = []
    for target in targets:
        if os.path.isfile(target):
            table_name = "tool.clusterrun" if os.path.basename(target) == "pyproject.toml" else None
            found = read_file(target, table_name)
            assert found is not None  # required=True: None never comes back
            records += _records_from_file(found, envname, only)
        elif ":" in target:
            records.append(_bare_record(target, rest, envname))
        else:
            records.append(_by_name(home, target, envname))
    return records


def _by_name(home: Home, name: str, envname: str) -> Record:
    """An app by its name: from ./clusterrun.toml (or pyproject.toml) if it is there, else as last started."""
    found = find_file(None)
    if found is not None and any(app.name == name for app in found.apps):
        return _records_from_file(found, envname, {name})[0]
    record = home.record(name)
    if record is None:
        raise unknown_name(home, name, found)
    return record


def unknown_name(home: Home, name: str, found: FileValues | None = None) -> ConfigError:
    known = sorted(set(home.names()) | {app.name for app in (found.apps if found else ())})
    if os.path.sep in name or name.endswith(".toml"):
        return ConfigError(f"no such file {name!r}: give the apps file's path")
    return ConfigError(f"no app named {name!r} (known: {', '.join(known) or 'none'}): start it from its apps file "
                       "or as module:attribute")


def _start_records(home: Home, records: list[Record], boot_timeout: float) -> int:
    names = [record.name for record in records]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"app {twice[0]!r} is named twice in this start: give each app its own name")
    for record in records:
        _check_options(record)
    for record in records:
        check_free(home, record.name)
    started = start_set(home, records, boot_timeout)
    rows = [[one.record.name, one.pid, f"{status['ready']}/{status['target']}", " ".join(status["binds"]),
             "online" + (f" (env {one.record.envname})" if one.record.envname else "")]
            for one in started if (status := one.status) is not None]
    print(table(["NAME", "PID", "WORKERS", "LISTENING", "STATUS"], rows))
    return 0


def _check_options(record: Record) -> None:
    """Build the app's configuration here, as its primary will (in its folder, with its environment): a bad value
    is refused before any app of the set is spawned, naming the apps file it came from."""
    if not record.options:
        return  # a bare start's flags are checked by its primary, which reports through its log
    label = f"{os.path.basename(record.file) or 'start'} [[apps]] {record.name!r}"
    previous = os.getcwd()
    try:
        os.chdir(record.cwd)
    except OSError as exc:
        raise ConfigError(f"app {record.name!r}: cannot use its cwd {record.cwd} ({exc.strerror}): fix cwd in "
                          f"{label}") from None
    try:
        build_config(record.app, {}, environ={**os.environ, **record.env},
                     file=FileValues(label, record.options, record.app))
    finally:
        os.chdir(previous)


def cmd_start(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(START_HELP)
        return 0
    home = Home()
    targets, own, rest = _split(argv)
    return _start_records(home, _targets(home, targets, own, rest), _boot_timeout(own["--boot-timeout"]))


def _boot_timeout(values: list[str]) -> float:
    if not values:
        return 60.0
    try:
        seconds = float(values[-1])
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:
        raise ConfigError(f"bad --boot-timeout value {values[-1]!r}: give seconds, e.g. 60")
    return seconds


START_HELP = """\
usage: clusterrun start [FILE|APP|NAME ...] [--env NAME] [--only NAME[,NAME]] [--boot-timeout SECONDS] [options]

Start apps in the background and return once each serves (exit 0, with a table), or once one failed to boot
(exit 3 with the reason from its log; the apps of this start are stopped again).
  FILE      an apps file ([[apps]] tables, or one app); default ./clusterrun.toml or [tool.clusterrun]
  APP       module:attribute, with any clusterrun option after it (--workers 2 --name api)
  NAME      an app of ./clusterrun.toml, or one started before
  --env     use each app's [apps.env_NAME] variables over its env
  --only    start only these apps of the file
State (logs, pid files, records, the dump) is kept in $CLUSTERRUN_HOME, default ~/.clusterrun."""


# The commands by name.

def _names(home: Home, name: str, command: str) -> list[str]:
    if name == "all":
        names = home.names()
        if not names:
            raise ConfigError(f"no app was started with clusterrun start: nothing to {command}")
        return names
    if home.record(name) is None:
        raise unknown_name(home, name)
    return [name]


def cmd_restart(args: argparse.Namespace) -> int:
    home = Home()
    records = []
    for name in _names(home, args.name, "restart"):
        record = home.record(name)
        assert record is not None
        if stop_app(home, name):
            print(f"stopped {name}")
        records.append(record)
    return _start_records(home, records, args.boot_timeout)


def cmd_delete(args: argparse.Namespace) -> int:
    home = Home()
    for name in _names(home, args.name, "delete"):
        stopped = stop_app(home, name)
        home.forget(name)
        print(f"{'stopped and ' if stopped else ''}deleted {name}; its logs are kept: {home.out_log(name)}, "
              f"{home.error_log(name)}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    home = Home()
    record = home.record(args.name)
    if record is None:
        raise unknown_name(home, args.name)
    status = _live_status(record.name)
    rows: list[tuple[str, Any]] = [("name", record.name), ("app", record.app)]
    if status is None:
        rows.append(("status", "stopped"))
    else:
        rows += [("status", "online"), ("pid", status["pid"]), ("workers", f"{status['ready']}/{status['target']}"),
                 ("restarts", status["restarts"]), ("uptime", duration(status["uptime"])),
                 ("listening", " ".join(status["binds"]))]
    rows += [
        ("cwd", record.cwd), ("apps file", record.file or "-"), ("env name", record.envname or "-"),
        # Names only: a variable's value may be a secret (a password, a token), and describe is for reading aloud.
        ("env", " ".join(f"{key}=****" for key in sorted(record.env)) or "-"),
        ("options", " ".join(f"{key}={value}" for key, value in record.options.items()) or "-"),
        ("arguments", " ".join(record.args) or "-"),
        ("out log", home.out_log(record.name)), ("error log", home.error_log(record.name)),
        ("pid file", home.pid_file(record.name)), ("record", home.record_file(record.name)),
    ]
    width = max(len(key) for key, _value in rows)
    print("\n".join(f"{key.ljust(width)}  {value}" for key, value in rows))
    return 0


def _live_status(name: str) -> dict[str, Any] | None:
    path = socket_path(name)
    if not answers(path):
        return None
    try:
        return request(path, "status")
    except ControlError:
        return None


def cmd_save(args: argparse.Namespace) -> int:
    home = Home()
    records = [record for name in home.names() if (record := home.record(name)) and answers(socket_path(name))]
    home.write_dump(records)
    names = ", ".join(record.name for record in records) or "none"
    print(f"saved {len(records)} running app{'' if len(records) == 1 else 's'} ({names}) to {home.dump_file}")
    return 0


def cmd_resurrect(args: argparse.Namespace) -> int:
    home = Home()
    records = []
    for record in home.read_dump():
        if answers(socket_path(record.name)):
            print(f"{record.name} is running already: left as it is")
        else:
            records.append(record)
    if not records:
        print("nothing to resurrect: every saved app runs" if home.read_dump() else "the dump holds no app")
        return 0
    return _start_records(home, records, args.boot_timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="clusterrun", description="Manage apps started in the background.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name, run, help in (("restart", cmd_restart, "stop the app (or all) and start it with its recorded settings"),
                            ("delete", cmd_delete, "stop the app (or all) and forget it; its logs are kept"),
                            ("describe", cmd_describe, "the app's settings, env names (values hidden), pid, logs")):
        command = commands.add_parser(name, help=help, description=help)
        command.set_defaults(run=run)
        command.add_argument("name", metavar="NAME" if name == "describe" else "NAME|all")
        if name == "restart":
            command.add_argument("--boot-timeout", type=float, default=60.0, metavar="SECONDS", help="default 60")
    commands.add_parser("save", help="record the running apps in the dump").set_defaults(run=cmd_save)
    resurrect = commands.add_parser("resurrect", help="start the apps of the dump again, with their env")
    resurrect.set_defaults(run=cmd_resurrect)
    resurrect.add_argument("--boot-timeout", type=float, default=60.0, metavar="SECONDS", help="default 60")
    return parser


def main(argv: Sequence[str]) -> int:
    command = argv[0]
    if command == "start":
        return run_command(command, lambda: cmd_start(argv[1:]))
    return run_command(command, lambda: _parse_and_run(argv))


def _parse_and_run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    return int(args.run(args))
