"""The build: a Config from the command line (or the API), the environment and a config file, each value
named by where it came from; and the effective configuration shown back (``clusterrun config``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterrun.config.options import (
    OPTIONS,
    OPTIONS_BY_NAME,
    Config,
    Option,
    app_dir_under,
    app_spec,
    resolve_workers,
    static_under,
)
from clusterrun.config.sources import FileValues, env_names, find_file, flag_name
from clusterrun.errors import ConfigError
from clusterrun.host.cpus import usable_cpus
from clusterrun.host.listeners import BindAddress, activated
from clusterrun.host.memlimit import MIB, cgroup_memory_limit, per_worker_mib
from clusterrun.host.privileges import Target, resolve
from clusterrun.host.tls import server_context


@contextlib.contextmanager
def _blaming(source: str) -> Iterator[None]:
    """A bad value that did not come from the command line names where it came from: the user never typed it."""
    try:
        yield
    except ConfigError as exc:
        if source.startswith("-") or source == "APP":
            raise
        where = f"the environment variable {source}" if ":" not in source else source
        raise ConfigError(f"{exc} (this value comes from {where}: fix or unset it)") from None



def _raw_value(
    option: Option, values: Mapping[str, Any], environ: Mapping[str, str], file: FileValues | None
) -> tuple[Any, str]:
    """The option's raw value and where it came from: the command line (or API), the environment, the file."""
    raw = values.get(option.name)
    if not (raw is None or raw == [] or (raw is False and not option.negatable)):
        return raw, option.flags[-1]
    for variable in env_names(option):
        if environ.get(variable):
            text = environ[variable]
            return (text.replace(",", " ").split() if option.repeat else text), variable
    if file is not None and option.name in file.values:
        return file.values[option.name], f"{file.label}: {flag_name(option).replace('_', '-')}"
    return None, "default"



def build_config(
    app: str | None, values: Mapping[str, Any], environ: Mapping[str, str] | None = None, cpus: int | None = None,
    file: FileValues | None = None, memory_limit: Callable[[], int | None] = cgroup_memory_limit,
) -> Config:
    """Parse raw option values (None or absent: not given) into a Config; unknown names are errors.

    Each option comes from ``values`` (the command line, the API), else the environment, else ``file``.
    """
    environ = os.environ if environ is None else environ
    unknown = sorted(set(values) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}: known options are {', '.join(OPTIONS_BY_NAME)}")
    given: dict[str, Any] = {}
    sources: dict[str, str] = {}  # option name -> where its value came from
    for option in OPTIONS:
        raw, source = _raw_value(option, values, environ, file)
        if raw is None or raw == []:
            continue
        sources[option.name] = source
        with _blaming(source):
            given[option.name] = option.read(raw)
    app, sources["app"] = _app_source(app, environ, file)

    cpus = usable_cpus() if cpus is None else cpus
    workers_spec = str(given.pop("workers", "auto")).strip().lower()
    with _blaming(sources.get("workers", "-")):
        workers = resolve_workers(workers_spec, cpus)
    if "app_dir" in given or "chdir" in given:
        with _blaming(sources.get("app_dir", "-")):
            given["app_dir"] = app_dir_under(given.get("app_dir", "."), given.get("chdir", ""))
    if "static" in given:
        with _blaming(sources.get("static", "-")):
            given["static"] = static_under(given["static"], given.get("chdir", ""))
    if not given.get("max_memory"):
        limit = memory_limit()
        if limit:  # a container's limit: recycle a growing worker before the OOM killer ends them all
            given["max_memory"] = per_worker_mib(limit, workers)
            sources["max_memory"] = f"cgroup memory limit {limit / MIB:.0f} MiB"
    _check_backoff(given, sources)
    if given.get("reload") and given.get("preload"):
        raise ConfigError("--reload cannot work with --preload: new workers would fork from the code loaded at "
                          "start; drop --preload in development")
    return _checked_tls(Config(
        app=_checked_app(app, sources["app"]), workers=workers, workers_spec=workers_spec,
        workers_from=sources.get("workers", "--workers"), binds=_binds(given, environ), usable_cpus=cpus,
        run_as=_run_as(given, sources), sources=sources, **given,
    ))



def _check_backoff(given: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """--restart-delay-max is the cap of a wait that starts at --restart-delay: a cap below the start is a typo."""
    first = given.get("restart_delay", Config.restart_delay)
    cap = given.get("restart_delay_max", Config.restart_delay_max)
    if cap < first:
        blamed = "restart_delay_max" if "restart_delay_max" in sources else "restart_delay"
        with _blaming(sources[blamed]):
            raise ConfigError(f"bad --restart-delay-max {cap:g}: it is below --restart-delay {first:g}; give a "
                              f"maximum of at least {first:g}, or a smaller --restart-delay")



@dataclass(frozen=True)
class ConfigSource:
    """What a Config was built from, kept so that the primary can build it again (SIGHUP, ``clusterrun reload NAME
    --config``), as gunicorn re-reads its config file on SIGHUP.

    The file is read again: ``--config FILE``, else pyproject.toml's [tool.clusterrun] or clusterrun.toml looked
    for anew in the folder the cluster started in. The command line (or the API's keywords) is kept as given and
    still wins over the file; so does the environment, kept as it was at start: a running process's environment
    cannot be changed from outside, and a variable set since by --env-file or the app must not become an option.
    """

    app: str | None
    values: Mapping[str, Any]
    environ: Mapping[str, str] = field(repr=False)
    folder: str  # where the cluster started: relative paths in the options and the file are taken from there
    config_file: str | None = None  # --config FILE, made absolute
    read_file: bool = True  # False for the API, which reads no file

    @classmethod
    def capture(cls, app: str | None, values: Mapping[str, Any], config_file: str | None = None,
                read_file: bool = True) -> ConfigSource:
        """The source as it is now: this folder, this environment (copied)."""
        path = os.path.abspath(config_file) if config_file else None
        return cls(app, dict(values), dict(os.environ), os.getcwd(), path, read_file)

    def build(self) -> Config:
        """The Config, built from the source as it reads now: ConfigError as a start would give it."""
        with _in_folder(self.folder):
            file = find_file(self.config_file, self.folder) if self.read_file else None
            return build_config(self.app, self.values, self.environ, file=file)



@contextlib.contextmanager
def _in_folder(folder: str) -> Iterator[None]:
    """In ``folder`` for the build (--chdir has moved the primary since), and back."""
    here = os.getcwd()
    try:
        os.chdir(folder)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration from {folder}: {exc.strerror}; restart the cluster "
                          "from an existing folder") from None
    try:
        yield
    finally:
        os.chdir(here)



def _checked_tls(config: Config) -> Config:
    """Build the TLS context once here, only to check the files: a bad one is a config error, not a boot loop."""
    tls = config.tls
    if tls is not None:
        server_context(tls)
        return config
    alone = [OPTIONS_BY_NAME[name].flags[-1] for name in _TLS_DETAILS if getattr(config, name)]
    if alone:
        raise ConfigError(f"{alone[0]} needs --ssl-certfile: give the server's certificate to serve HTTPS")
    return config



_TLS_DETAILS = ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs", "ssl_cert_reqs", "ssl_ciphers")



def _binds(given: dict[str, Any], environ: Mapping[str, str]) -> tuple[BindAddress, ...]:
    """--bind (each unix socket with --uds-mode), or --host/--port, or 127.0.0.1:8000; takes them from ``given``."""
    binds: tuple[BindAddress, ...] = given.pop("binds", ()) + tuple(BindAddress(fd=fd) for fd in given.pop("fds", ()))
    host, port = given.pop("host", None), given.pop("port", None)
    if binds and (host is not None or port is not None):
        raise ConfigError("--bind cannot be combined with --host/--port: use one or the other")
    if not binds and host is None and port is None:
        binds = activated(environ)  # systemd socket activation
    if not binds:
        binds = (BindAddress(host=host or "127.0.0.1", port=8000 if port is None else port),)
    uds_mode = given.get("uds_mode", Config.uds_mode)
    return tuple(dataclasses.replace(bind, mode=uds_mode) if bind.is_unix else bind for bind in binds)



def _run_as(given: dict[str, Any], sources: Mapping[str, str]) -> Target | None:
    """The workers' ids (--user, --group), named where they came from when they do not fit together."""
    with _blaming(sources.get("user", sources.get("group", "-"))):
        return resolve(given.get("user", ""), given.get("group", ""))



def _checked_app(app: str, source: str) -> str:
    with _blaming(source):
        return app_spec(app)



def _app_source(app: str | None, environ: Mapping[str, str], file: FileValues | None) -> tuple[str, str]:
    if app:
        return app, "APP"
    if environ.get("CLUSTERRUN_APP"):
        return environ["CLUSTERRUN_APP"], "CLUSTERRUN_APP"
    if file is not None and file.app:
        return file.app, f"{file.label}: app"
    raise ConfigError("no APP given: run clusterrun module:attribute (e.g. flask_app:app), or set app = "
                      "\"module:attribute\" in pyproject.toml [tool.clusterrun] or clusterrun.toml; see clusterrun "
                      "--help")



def describe_config(config: Config, as_json: bool = False) -> str:
    """Every effective value and where it came from (``clusterrun config``)."""
    import json

    rows: list[tuple[str, Any, str]] = [("app", config.app, config.sources.get("app", "APP"))]
    for option in OPTIONS:
        if option.name in ("host", "port"):
            continue  # folded into binds
        value = getattr(config, option.name, None)
        if option.name == "workers":
            value = f"{config.workers_spec} ({config.workers})"
        elif option.name == "binds":
            value = [str(bind) for bind in config.binds]
        elif isinstance(value, BindAddress):
            value = str(value)
        elif option.name == "ssl_keyfile_password" and value:
            value = "(hidden)"
        elif option.name == "uds_mode":
            value = f"{value:03o}"  # as chmod and --uds-mode take it
        elif isinstance(value, tuple):
            value = [list(item) if isinstance(item, tuple) else item for item in value]
        rows.append((option.flags[-1].lstrip("-"), value, config.sources.get(option.name, "default")))
    if as_json:
        return json.dumps({name: {"value": value, "source": source} for name, value, source in rows}, indent=2)
    width = max(len(name) for name, _value, _source in rows)
    return "\n".join(f"{name.ljust(width)}  {_shown(value):<32}  {source}" for name, value, source in rows)



def _shown(value: Any) -> str:
    """A value as a person reads it: lists comma-separated, none as nothing."""
    if isinstance(value, list):
        return ", ".join(":".join(item) if isinstance(item, list) else str(item) for item in value)
    return "" if value is None else str(value)
