"""The command line: build the parser from OPTIONS, run the primary, turn errors into exit codes.

The only place where an exception becomes a message and an exit code:
0 clean stop, 1 unexpected error, 2 bad command line or configuration,
3 the app failed to boot, 4 the restart limit was reached in every slot.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from clusterrun._version import __version__
from clusterrun.api import Cluster, check_app
from clusterrun.config.build import ConfigSource, describe_config
from clusterrun.config.options import OPTIONS
from clusterrun.ctl import commands as ctl
from clusterrun.ctl import logs as logs_command
from clusterrun.ctl import startup as startup_command
from clusterrun.errors import EXIT_CONFIG, ClusterrunError
from clusterrun.pm import commands as pm
from clusterrun.primary.policies import POLICY_CLASSES

EPILOG = """\
configuration: every option also comes from CLUSTERRUN_<FLAG> (e.g. CLUSTERRUN_MAX_REQUESTS) or from a TOML
file (--config FILE, else [tool.clusterrun] in ./pyproject.toml, else ./clusterrun.toml); the command line wins
over the environment, the environment over the file. clusterrun config [--json] [--check] [APP] [options] shows
every effective value and where it came from; --check also imports the app (exit 2 if its module cannot be found,
3 if it fails to import or is no app, as a start would).

commands for running clusters (clusterrun COMMAND --help):
  ls                        this user's running clusters
  status [NAME] [--json]    a cluster and each worker: state, requests, connections, memory, CPU
  top [NAME]                a live monitor: req/s, latency, connections, CPU, memory per worker
  reload NAME [--config]    rolling restart, waits until it completes; --config reads the file again first
  scale NAME N|+K|-K        set the number of workers
  stop NAME [--timeout S]   graceful stop
  restart-worker NAME ID    replace one worker
  logs [NAME|all] [--lines N] [--follow] [--worker ID] [--err|--out]
                            the last lines of a background app's logs ($CLUSTERRUN_HOME/logs), then new ones
  startup [systemd] [--install]
                            a systemd unit that runs clusterrun resurrect at boot; --install writes it

the process manager (like PM2; state in $CLUSTERRUN_HOME, default ~/.clusterrun; docs: pm2.md):
  start [FILE|APP|NAME ...] [--env NAME] [--only NAME]   start apps in the background, return once they serve
  restart NAME|all          stop, then start with the recorded settings
  delete NAME|all           stop and forget (logs are kept)
  describe NAME             settings, env names (values hidden), pid, restarts, uptime, log paths
  save                      record the running apps in dump.json
  resurrect                 start the apps of dump.json again, with their env
  stop all, reload all      stop / rolling-restart every running cluster

signals to the primary:
  TERM, INT    stop gracefully (a second INT kills at once)
  HUP          read the configuration file again, then a rolling restart (what needs a restart is logged)
  USR2         rolling restart: replace each worker, one at a time, with no failed request
  TTIN, TTOU   one worker more / one fewer

exit codes:
  0 clean stop  1 unexpected error  2 bad command line or configuration
  3 the app failed to boot  4 every worker slot hit its restart limit

environment: also WEB_CONCURRENCY for --workers and CLUSTERRUN_SCHED_POLICY for --policy.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line and a hint for a mistyped flag."""

    def error(self, message: str) -> NoReturn:
        hint = "see clusterrun --help"
        if message.startswith("unrecognized arguments:"):
            bad = message.split(":", 1)[1].split()
            flag = bad[0].split("=")[0] if bad else ""
            flags = [flag for option in OPTIONS for flag in option.flags] + ["--help", "--version"]
            close = [c for c in difflib.get_close_matches(flag, flags, n=3) if _same_start(c, flag)][:1]
            if close:
                hint = f"did you mean {close[0]}? {hint}"
        self.exit(EXIT_CONFIG, f"clusterrun: error: {message}; {hint}\n")


def _same_start(candidate: str, typed: str) -> bool:
    """A suggestion must begin as the typed flag does: --relaod is --reload, never --preload (the opposite)."""
    return candidate.lstrip("-")[:1] == typed.lstrip("-")[:1]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clusterrun",
        description="Run a WSGI or ASGI app on a pool of forked workers sharing one port.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", metavar="APP", nargs="?", help="the app as module:attribute, e.g. flask_app:app; "
                        "may come from the configuration file (app = ...) or CLUSTERRUN_APP instead")
    parser.add_argument("--config", metavar="FILE", help="read options from this TOML file; default: "
                        "[tool.clusterrun] in ./pyproject.toml, else ./clusterrun.toml")
    for option in OPTIONS:
        kwargs: dict[str, object] = {"dest": option.name, "help": option.help, "default": None}
        if option.negatable:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif option.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = option.metavar
            if option.repeat:
                kwargs["action"] = "append"
        parser.add_argument(*option.flags, **kwargs)  # type: ignore[arg-type]
    parser.add_argument("--version", action="version", version=f"clusterrun {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw and raw[0] in ctl.COMMANDS:  # an APP always has a colon: no command name can be one
        return ctl.main(raw)
    if raw and raw[0] in pm.COMMANDS:  # the process manager's: start, restart, delete, describe, save, resurrect
        return pm.main(raw)
    if raw and raw[0] == "logs":
        return logs_command.main(raw[1:])
    if raw and raw[0] == "startup":
        return startup_command.main(raw[1:])
    if _asks_policy_help(raw):
        for cls in POLICY_CLASSES.values():
            print(f"{cls.name:<8} {cls.summary}")
        return 0
    show_config = bool(raw) and raw[0] == "config"
    if show_config:
        raw = raw[1:]
    config_flags = ("--json", "--check")  # `clusterrun config`'s own
    args = build_parser().parse_args([arg for arg in raw if arg not in config_flags] if show_config else raw)
    values = {option.name: getattr(args, option.name) for option in OPTIONS}
    debug = values.get("log_level") == "debug"
    try:
        source = ConfigSource.capture(args.app, values, args.config)  # kept: SIGHUP reads the file again
        config = source.build()
        if show_config:
            checked = check_app(config) if "--check" in raw else None  # a failure is its one line alone
            print(describe_config(config, as_json="--json" in raw))
            if checked is not None:
                print(checked, file=sys.stderr)
            return 0
        return Cluster.from_config(config, source).run()
    except ClusterrunError as exc:
        if debug:  # the traceback behind the one line (logging is the host's again once run() returns)
            traceback.print_exc(file=sys.stderr)
        print(f"clusterrun: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _asks_policy_help(argv: list[str]) -> bool:
    return any(a == "--policy=help" or (a == "--policy" and argv[i + 1:i + 2] == ["help"])
               for i, a in enumerate(argv))
