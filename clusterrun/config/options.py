"""The configuration: every option defined once, as data.

``OPTIONS`` is the single definition. The CLI builds its parser from it and the
Python API takes the same names as keyword arguments; both end in
``build_config``, which parses each raw value (a CLI string or a Python value)
with the option's own parser and returns a frozen ``Config``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterrun.accesslog import DEFAULT_FORMAT as DEFAULT_ACCESS_FORMAT
from clusterrun.accesslog import check_format
from clusterrun.errors import ConfigError
from clusterrun.host.listeners import BindAddress, parse_bind, parse_port
from clusterrun.host.privileges import Target, parse_group, parse_user
from clusterrun.host.tls import TLSSettings, parse_cert_reqs
from clusterrun.wire.heartbeat import MIN_TIMEOUT

POLICIES = ("rr", "least-conn", "sticky", "shared", "balanced", "reuseport")
INTERFACES = ("auto", "wsgi", "asgi")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOOPS = ("auto", "asyncio", "uvloop")
HTTP_IMPLS = ("auto", "httptools", "uvicorn", "h11")
LIFESPANS = ("auto", "on", "off")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Config:
    app: str
    workers: int
    workers_spec: str
    binds: tuple[BindAddress, ...]
    policy: str = "rr"
    threads: int = 1
    interface: str = "auto"
    factory: bool = False
    app_dir: str = "."
    max_restarts: int = 5
    restart_window: float = 60.0
    min_uptime: float = 1.0
    # The respawn backoff after unstable deaths in a row (PM2's exp_backoff_restart_delay), doubling up to the max.
    restart_delay: float = 0.1
    restart_delay_max: float = 10.0
    graceful_timeout: float = 30.0
    boot_timeout: float = 60.0
    timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_memory: int = 0
    preload: bool = False
    hooks: str = ""
    backlog: int = 2048
    log_level: str = "info"
    access_log: bool = False
    access_log_format: str = DEFAULT_ACCESS_FORMAT
    log_format: str = "text"
    log_config: str = ""
    log_file: str = ""
    access_log_file: str = ""
    log_max_size: int = 0  # bytes; 0: no rotation (clusterrun.ops.rotation)
    log_keep: int = 5
    loop: str = "auto"
    http: str = "auto"
    lifespan: str = "auto"
    timeout_keep_alive: float = 5.0
    limit_request_body: int = 0
    no_server_header: bool = False
    no_date_header: bool = False
    # Behind a reverse proxy (README "Behind a proxy"): as uvicorn's defaults, plus ::1 and Unix-socket peers.
    proxy_headers: bool = True
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1", "unix")
    proxy_host: bool = False
    proxy_protocol: bool = False  # every connection begins with a PROXY header (adapters.edge.proxy_protocol)
    root_path: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    # Static files (docs/operating.md "Static files"): (PREFIX, absolute DIR) pairs, served before the app.
    static: tuple[tuple[str, str], ...] = ()
    static_max_age: int = 0  # 0: no Cache-Control (clients revalidate with ETag / Last-Modified)
    static_fallthrough: bool = False
    uds_mode: int = 0o666
    fds: tuple[int, ...] = ()
    chdir: str = ""
    env_file: str = ""
    pid_file: str = ""
    user: str = ""
    group: str = ""
    reload: bool = False
    reload_dirs: tuple[str, ...] = ()
    reload_include: tuple[str, ...] = ()
    reload_exclude: tuple[str, ...] = ()
    # Request head limits (README "Limits"): as gunicorn's defaults, where it has one.
    limit_request_line: int = 4094
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    limit_request_head: int = 64 * 1024
    timeout_request_head: float = 10.0
    # Slow bodies and stuck requests (README "Limits"): nginx's client_body_timeout is 60 s, uvicorn has none;
    # 30 s is gunicorn's --timeout, the wait a gunicorn user already expects before a stuck client is let go.
    body_timeout: float = 30.0
    request_timeout: float = 0.0  # 0: no deadline, as uvicorn and gunicorn's gthread
    # TLS (README "TLS"): each worker builds its SSLContext from these files when it starts (clusterrun.host.tls).
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_keyfile_password: str = field(default="", repr=False)
    ssl_ca_certs: str = ""
    ssl_cert_reqs: int = 0  # ssl.CERT_NONE
    ssl_ciphers: str = ""  # "": Python's defaults
    # Connections and WebSockets (README "Limits"): as uvicorn's defaults.
    limit_concurrency: int = 0
    ws_max_size: int = 16 * 1024 * 1024
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    h2_max_concurrent_streams: int = 100  # HTTP/2 (docs/http2.md): SETTINGS_MAX_CONCURRENT_STREAMS
    name: str = ""  # the cluster's name, for the control commands; "" = the app's module (``cluster_name``)
    control: str = ""  # the control socket's path; "" = the default place (clusterrun.host.controlsocket)
    no_control: bool = False
    metrics: BindAddress | None = None  # where the primary serves GET /metrics (Prometheus); None: nowhere
    health: BindAddress | None = None  # where the primary serves /livez and /readyz alone
    shutdown_delay: float = 0.0
    run_as: Target | None = None  # the workers' ids, from --user and --group (privileges.resolve)
    usable_cpus: int = field(default=1, compare=False)
    workers_from: str = field(default="--workers", compare=False)  # the flag, or the variable that set it
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)  # option -> where its value came from

    @property
    def module(self) -> str:
        return self.app.partition(":")[0]

    @property
    def cluster_name(self) -> str:
        return self.name or self.module

    @property
    def tls(self) -> TLSSettings | None:
        """The --ssl-* options, or None when the workers serve plain HTTP (no --ssl-certfile)."""
        if not self.ssl_certfile:
            return None
        return TLSSettings(self.ssl_certfile, self.ssl_keyfile, self.ssl_keyfile_password, self.ssl_ca_certs,
                           self.ssl_cert_reqs, self.ssl_ciphers)


_CONFIG_FIELDS: Mapping[str, str] = {field.name: str(field.type) for field in dataclasses.fields(Config)}


@dataclass(frozen=True)
class Option:
    """One option: its name in Config, its flags, its parser and its documentation."""

    name: str
    flags: tuple[str, ...]
    help: str
    parse: Callable[[Any], Any]
    metavar: str | None = None
    env: str | None = None
    repeat: bool = False
    switch: bool = False
    negatable: bool = False  # a switch that is on by default: --NAME and --no-NAME, False is a given value
    choices: tuple[str, ...] | None = None
    # What a value may be besides a string, for an option that is not a field of Config (else the field's type
    # says it: ``value_types``). The command line and the environment give strings; a TOML file and the API
    # give typed values.
    types: tuple[type, ...] | None = None

    def read(self, raw: Any) -> Any:
        """The option's value from a raw one, whatever its source: the one way in (``build_config``).

        A value of a type the option does not take (a TOML ``true`` for a number of seconds, ``1.5`` for a
        whole number, ``8000`` for an address) is refused here, before the parser sees it: parsers convert
        strings, and a conversion such as ``float(True)`` or ``int(1.5)`` would silently take it.
        """
        allowed, item = value_types(self)
        if self.repeat:  # a list, or one item alone
            items = raw if isinstance(raw, (list, tuple)) else [raw]
            return tuple(self._one(value, item, in_list=True) for value in items)
        if isinstance(raw, (list, tuple)) and list in allowed:  # an option that takes a list whole
            for value in raw:
                _check_type(self, value, item, in_list=True)
            return self.parse(raw)
        return self._one(raw, allowed)

    def _one(self, value: Any, types: tuple[type, ...], in_list: bool = False) -> Any:
        _check_type(self, value, types, in_list)
        return value if isinstance(value, BindAddress) else self.parse(value)


# Config's field types, as annotated (strings: ``from __future__ import annotations``), and what each takes
# besides a string: for a list, the list's own type first, then what each item may be. An option whose field
# has a type not listed here fails at import, on every test: a new kind of value needs its rule written here.
_FIELD_TYPES: Mapping[str, tuple[tuple[type, ...], tuple[type, ...]]] = {
    "bool": ((bool,), ()),
    "int": ((int,), ()),
    "float": ((int, float), ()),
    "str": ((), ()),
    "BindAddress | None": ((BindAddress,), ()),
    "tuple[BindAddress, ...]": ((list, tuple), (BindAddress,)),
    "tuple[str, ...]": ((list, tuple), ()),
    "tuple[int, ...]": ((list, tuple), (int,)),
    "tuple[tuple[str, str], ...]": ((list, tuple), (list, tuple)),
}


def value_types(option: Option) -> tuple[tuple[type, ...], tuple[type, ...]]:
    """What ``option`` takes besides a string, and what an item of its list may be besides a string."""
    if option.types is not None:
        return option.types, option.types
    annotation = _CONFIG_FIELDS.get(option.name)
    if annotation is None:
        return (), ()  # strings only
    try:
        return _FIELD_TYPES[annotation]
    except KeyError:
        raise TypeError(f"option {option.name}: no type rule for its Config field's type {annotation!r}; add one "
                        "to clusterrun.config.options._FIELD_TYPES") from None


def _is_one_of(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, where a bool is not an int (it is one to Python): ``true`` is no number of seconds."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


_TYPE_NAMES: Mapping[type, str] = {bool: "a boolean", int: "an integer", float: "a number with a fraction",
                                   str: "a string", list: "a list", tuple: "a list", dict: "a table"}


def _check_type(option: Option, value: Any, types: tuple[type, ...], in_list: bool = False) -> None:
    if not _is_one_of(value, (str, *types)):
        raise ConfigError(_wrong_type(option, value, types, in_list))


def _wrong_type(option: Option, value: Any, types: tuple[type, ...], in_list: bool = False) -> str:
    """Bad --flag value <the value as written>: give <what the option takes>, not <what was given>."""
    given = next((name for kind, name in _TYPE_NAMES.items() if _is_one_of(value, (kind,))),
                 type(value).__name__)
    wanted = ["a number"] if int in types and float in types else [
        _TYPE_NAMES[kind] for kind in types if kind in _TYPE_NAMES and kind is not str]
    if not wanted or (in_list and list in types):  # a list's item: a string, or a [name, value] pair
        wanted.insert(0, "a string")
    wanted = list(dict.fromkeys(wanted))
    expected = "true or false" if types == (bool,) else (
        f"{option.metavar + ' ' if option.metavar else ''}as {' or '.join(wanted)}")
    return f"bad {option.flags[-1]} value {_as_written(value)}: give {expected}, not {given}"


def _as_written(value: Any) -> str:
    """A raw value as a TOML file writes it (true, not True), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_as_written(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_as_written(item)}" for key, item in value.items()) + "}"
    return repr(value)


def _int_at_least(low: int, flag: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"bad {flag} value {value!r}: give a whole number >= {low}") from None
        if number < low:
            raise ConfigError(f"bad {flag} value {value!r}: give a whole number >= {low}")
        return number

    return parse


def _seconds(flag: str) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"bad {flag} value {value!r}: give a number of seconds >= 0") from None
        if not number >= 0 or math.isinf(number):
            raise ConfigError(f"bad {flag} value {value!r}: give a number of seconds >= 0")
        return number

    return parse


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _response_header(value: Any) -> tuple[str, str]:
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(part, str) for part in value):
        name, text = value[0], value[1]
    else:
        name, _, text = str(value).partition(":")
    name, text = name.strip(), text.strip()
    controls = any((ord(c) < 32 and c != "\t") or c == "\x7f" for c in text)
    if not _TOKEN_RE.fullmatch(name) or controls or not text or not text.isascii():
        raise ConfigError(f"bad --header value {value!r}: write NAME:VALUE, a name of letters, digits and -, a value "
                          "in ASCII without line breaks, e.g. 'X-Frame-Options: DENY'")
    return name, text


_STATIC_FIX = "write PREFIX=DIR, e.g. --static /assets=./public (an existing folder)"


def _static_mount(value: Any) -> tuple[str, str]:
    """--static PREFIX=DIR: a URL path prefix (starting with /, plain ASCII) and an existing folder, made absolute."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(part, str) for part in value):
        prefix, folder = value[0], value[1]
    else:
        prefix, sep, folder = str(value).partition("=")
        if not sep:
            raise ConfigError(f"bad --static value {value!r}: {_STATIC_FIX}")
    prefix, folder = prefix.strip(), folder.strip()
    if not prefix.startswith("/") or not prefix.isascii() or any(c in prefix for c in "?#%\\ ") or any(
            part in (".", "..") for part in prefix.split("/")):
        raise ConfigError(f"bad --static value {value!r}: the PREFIX must be a URL path starting with /, without "
                          f"%, ?, #, spaces or dot segments; {_STATIC_FIX}")
    if not folder:
        raise ConfigError(f"bad --static value {value!r}: no DIR; {_STATIC_FIX}")
    return prefix.rstrip("/") or "/", folder


def static_under(mounts: tuple[tuple[str, str], ...], chdir: str) -> tuple[tuple[str, str], ...]:
    """--static's folders made absolute, taken from --chdir's folder when relative (as --app-dir); each must exist."""
    found = []
    for prefix, folder in mounts:
        path = os.path.abspath(os.path.join(chdir, folder) if chdir else folder)
        if not os.path.isdir(path):
            raise ConfigError(f"bad --static value '{prefix}={folder}': no such directory {path!r}; {_STATIC_FIX}")
        found.append((prefix, path))
    return tuple(found)


def _positive_seconds(flag: str) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        number = _seconds(flag)(value)
        if number == 0:
            raise ConfigError(f"bad {flag} value {value!r}: give a number of seconds above 0")
        return number

    return parse


def _timeout(value: Any) -> float:
    """--timeout: 0 (off) or long enough for heartbeats to prove a healthy worker (supervision.MIN_TIMEOUT)."""
    number = _seconds("--timeout")(value)
    if 0 < number < MIN_TIMEOUT:
        raise ConfigError(f"bad --timeout value {value!r}: give 0 (no hung-worker watchdog) or at least "
                          f"{MIN_TIMEOUT:g} seconds")
    return number


def _choice(flag: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"unknown {flag} value {value!r}: choose one of {', '.join(choices)}")
        return text

    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _switch(flag: str) -> Callable[[Any], bool]:
    """A switch: a bool, or a string as the environment gives one (1/0, true/false, yes/no, on/off)."""

    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _TRUE + _FALSE:
            raise ConfigError(f"bad {flag} value {value!r}: give true or false (also 1/0, yes/no, on/off)")
        return text in _TRUE

    return parse


_WORKERS_RE = re.compile(r"^(?:(?P<count>\d+)|auto|(?P<factor>\d+(?:\.\d+)?)x)$")
# One primary waits on every worker's channel and holds two descriptors per worker: past this, a count is a typo.
MAX_WORKERS = 1024


def resolve_workers(value: Any, cpus: int) -> int:
    """``N``, ``auto`` (usable CPUs) or ``Kx`` (K times auto, rounded, at least 1), within MAX_WORKERS and the
    process limit."""
    count = _worker_count(value, cpus)
    if count > MAX_WORKERS:
        raise ConfigError(f"bad --workers value {value!r}: {count} workers, and one cluster runs at most "
                          f"{MAX_WORKERS}; give fewer")
    # The kernel refuses a fork past RLIMIT_NPROC (ulimit -u), which counts every process of the user, the
    # primary included; it does not apply to root.
    import resource

    nproc, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if os.geteuid() != 0 and nproc != resource.RLIM_INFINITY and count >= nproc:
        raise ConfigError(f"bad --workers value {value!r}: {count} workers and the primary exceed the process "
                          f"limit of {nproc} (ulimit -u); give fewer workers or raise ulimit -u")
    return count


def _worker_count(value: Any, cpus: int) -> int:
    text = str(value).strip().lower()
    match = _WORKERS_RE.match(text)
    fix = "give a number like 4, auto (one per usable CPU) or a multiple of auto like 2x"
    if match is None:
        raise ConfigError(f"bad --workers value {value!r}: {fix}")
    if match["count"] is not None:
        count = int(match["count"])
        if count < 1:
            raise ConfigError(f"bad --workers value {value!r}: at least 1 worker is needed; {fix}")
        return count
    if match["factor"] is not None:
        factor = float(match["factor"])
        if factor <= 0:
            raise ConfigError(f"bad --workers value {value!r}: the multiple must be above 0; {fix}")
        return max(1, round(factor * cpus))
    return cpus


def app_dir_under(value: str, chdir: str) -> str:
    """--app-dir, taken from --chdir's folder when relative; it must exist."""
    path = os.path.join(chdir, value) if chdir else value
    if not os.path.isdir(path):
        raise ConfigError(f"bad --app-dir value {value!r}: no such directory{' in ' + chdir if chdir else ''}; give "
                          "the folder that holds the app's module")
    return path


def _directory_for(flag: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        path = str(value)
        if not os.path.isdir(path):
            raise ConfigError(f"bad {flag} value {path!r}: no such directory")
        return path

    return parse


_SIZE_RE = re.compile(r"(\d+)\s*([kmg]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def parse_size(value: Any) -> int:
    """--log-max-size: bytes, or a number with K, M or G (binary multiples: 10M is 10 MiB); 0 is off."""
    match = _SIZE_RE.fullmatch(str(value).strip())
    if match is None or isinstance(value, bool):
        raise ConfigError(f"bad --log-max-size value {value!r}: give a size like 10M, 500K or 1G (or bytes, no "
                          "unit); 0 turns rotation off")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_name(value: Any) -> str:
    """A cluster's name: it becomes a file name (NAME.sock), so letters, digits, dot, dash and underscore."""
    text = str(value).strip()
    if not _NAME_RE.fullmatch(text):
        raise ConfigError(f"bad --name value {value!r}: use up to 64 letters, digits, '.', '-' or '_', starting "
                          "with a letter or digit, e.g. shop-api")
    if text == "all":  # stop all, restart all, logs all ... mean every app: no app can have that name
        raise ConfigError("bad --name value 'all': the commands read it as every app (stop all, logs all); "
                          "choose another name")
    return text


def _socket_path(value: Any) -> str:
    path = str(value)
    if not path or len(os.fsencode(path)) > 100:
        raise ConfigError(f"bad --control value {value!r}: give a file path of at most 100 bytes (the limit of a "
                          "Unix socket's address)")
    return path


def _address_for(flag: str) -> Callable[[Any], BindAddress]:
    def parse(value: Any) -> BindAddress:
        if isinstance(value, BindAddress):
            return value
        try:
            return parse_bind(str(value))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("--bind value", f"{flag} value", 1)) from None

    return parse


_metrics_address = _address_for("--metrics")


def _log_file(flag: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        path = str(value)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"bad {flag} value {path!r}: the folder {folder} does not exist; create it or log "
                              "elsewhere")
        return path

    return parse


def _existing_file(flag: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        path = str(value)
        if not os.path.isfile(path):
            raise ConfigError(f"bad {flag} value {path!r}: no such file")
        return path

    return parse


def _octal_mode(value: Any) -> int:
    text = str(value).strip()
    try:
        # A TOML integer may be written 0o660 (a number up to 0o777) or 660 (octal digits, as chmod takes them).
        mode = value if isinstance(value, int) and 0 <= value <= 0o777 else int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"bad --uds-mode value {value!r}: give octal permissions like 666 (everyone may connect) "
                          "or 660 (the group)")
    return mode


def _forwarded_ips(value: Any) -> tuple[str, ...]:
    """--forwarded-allow-ips: addresses and networks (CIDR), "unix" for Unix-socket peers, "*" for anyone."""
    items = [str(item) for item in value] if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    for item in items:
        if item in ("*", "unix"):
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"bad --forwarded-allow-ips value {item!r}: give IP addresses or networks like "
                              "10.0.0.0/8, 'unix' for Unix-socket peers or '*' for any peer, separated by commas"
                              ) from None
    return tuple(items)


def _root_path(value: Any) -> str:
    text = str(value).strip()
    if text in ("", "/"):
        return ""
    if not text.startswith("/") or any(c in text for c in "?#% ") or not text.isascii():
        raise ConfigError(f"bad --root-path value {value!r}: give the path prefix the app is mounted under, "
                          "starting with /, e.g. /api")
    return text.rstrip("/")


def app_spec(value: Any) -> str:
    text = str(value).strip()
    module, sep, attr = text.partition(":")
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    if not sep or not re.fullmatch(rf"{ident}(\.{ident})*", module) or not re.fullmatch(
        rf"{ident}(\.{ident})*", attr
    ):
        raise ConfigError(f"bad APP {value!r}: write it as module:attribute, for example flask_app:app")
    return text


OPTIONS: tuple[Option, ...] = (
    Option("workers", ("-w", "--workers"), "worker processes: N, auto (usable CPUs: affinity capped by the "
           "cgroup quota) or a multiple of auto like 2x; default auto", str, "N|auto|Kx", env="WEB_CONCURRENCY"),
    Option("binds", ("-b", "--bind"), "listen on HOST:PORT, [IPV6]:PORT or unix:PATH; repeat for several "
           "listeners; port 0 picks a free port; default 127.0.0.1:8000", parse_bind, "ADDRESS", repeat=True),
    Option("host", ("--host",), "shortcut for --bind HOST:PORT with --port; default 127.0.0.1", str, "HOST"),
    Option("port", ("--port",), "shortcut for --bind HOST:PORT with --host; default 8000", parse_port, "PORT",
           types=(int,)),
    Option("policy", ("--policy",), "how connections reach workers: rr, least-conn, sticky (the primary "
           "accepts and hands each one to a worker), shared or reuseport (workers accept; the kernel picks), "
           "balanced (workers accept, each only while it holds no more connections than the least-loaded one); "
           "`--policy help` explains each; default rr", _choice("--policy", POLICIES), "POLICY",
           env="CLUSTERRUN_SCHED_POLICY", choices=POLICIES),
    Option("threads", ("--threads",), "WSGI only: 1 calls the app on the event loop, one request at a time "
           "(gunicorn sync); N runs it in a pool of N threads (gunicorn gthread); default 1",
           _int_at_least(1, "--threads"), "N"),
    Option("interface", ("--interface",), "app interface: auto (detect in each worker), wsgi or asgi; default auto. "
           "With auto and no --preload an ASGI app's first workers each import uvicorn after the fork, since a "
           "WSGI worker never carries it; asgi has the primary import it once, before forking",
           _choice("--interface", INTERFACES), "KIND", choices=INTERFACES),
    Option("factory", ("--factory",), "APP names a zero-argument factory that returns the app", _switch("--factory"),
           switch=True),
    Option("app_dir", ("--app-dir",), "directory put first on sys.path to import APP; default the current "
           "directory", str, "DIR"),
    Option("max_restarts", ("--max-restarts",), "a slot whose workers die unstable (without taking a request, "
           "before ready or within --min-uptime of it) more than N times within --restart-window is not respawned "
           "again; default 5",
           _int_at_least(0, "--max-restarts"), "N"),
    Option("restart_window", ("--restart-window",), "seconds over which --max-restarts counts; default 60",
           _seconds("--restart-window"), "SECONDS"),
    Option("min_uptime", ("--min-uptime",), "a worker that never took a request and dies within this many "
           "seconds of becoming ready was an unstable start and counts toward --max-restarts; one that took a "
           "request is always respawned at once, so no request that crashes a worker can stop the service; "
           "default 1",
           _seconds("--min-uptime"), "SECONDS"),
    Option("restart_delay", ("--restart-delay",), "the backoff before respawning a slot whose workers die unstable "
           "in a row (PM2's exp_backoff_restart_delay): the second such death in a row waits this many seconds, "
           "each next one twice as long, up to --restart-delay-max; the first is respawned at once, and so is any "
           "while no other worker serves; default 0.1", _seconds("--restart-delay"), "SECONDS"),
    Option("restart_delay_max", ("--restart-delay-max",), "the longest backoff wait before a respawn (see "
           "--restart-delay); at least --restart-delay; default 10", _seconds("--restart-delay-max"), "SECONDS"),
    Option("graceful_timeout", ("--graceful-timeout",), "seconds in-flight requests get to finish on stop or "
           "restart before their worker is killed; default 30", _seconds("--graceful-timeout"), "SECONDS"),
    Option("boot_timeout", ("--boot-timeout",), "seconds a new worker gets to import the app and become "
           "ready before it is counted as failed; default 60", _seconds("--boot-timeout"), "SECONDS"),
    Option("timeout", ("-t", "--timeout"), "a worker whose event loop sends no heartbeat for this many seconds "
           "is hung: its threads' tracebacks are logged, then it is killed and respawned (an inline WSGI request "
           "longer than this counts as hung, as in gunicorn's sync worker); 0 turns it off, else at least 0.5; "
           "default 30", _timeout, "SECONDS"),
    Option("max_requests", ("--max-requests",), "replace a worker after it served this many requests (plus up to "
           "--max-requests-jitter more), with no dropped request; 0 (default) never",
           _int_at_least(0, "--max-requests"), "N"),
    Option("max_requests_jitter", ("--max-requests-jitter",), "a random 0..J added to --max-requests per worker, so "
           "that workers are not all replaced at once; default 0", _int_at_least(0, "--max-requests-jitter"), "J"),
    Option("max_memory", ("--max-memory",), "replace a worker whose resident memory (RSS) grows above this many "
           "MiB, with no dropped request; 0 (default) never", _int_at_least(0, "--max-memory"), "MB"),
    Option("preload", ("--preload",), "import the app in the primary before forking: workers share its memory "
           "copy-on-write and start faster, but a rolling restart then serves the code loaded at start",
           _switch("--preload"), switch=True),
    Option("hooks", ("--hooks",), "a module (or module:object) whose functions named after cluster events (fork, "
           "online, listening, message, disconnect, exit) or gunicorn's server hooks (on_starting, pre_fork, "
           "post_fork, pre_request, post_request, worker_exit ...: a gunicorn config's hooks) are registered, each "
           "run where and when gunicorn runs it", str, "MODULE"),
    Option("backlog", ("--backlog",), "listen queue length; default 2048", _int_at_least(1, "--backlog"), "N"),
    Option("log_level", ("--log-level",), "debug, info, warning or error; debug adds tracebacks to errors; "
           "default info", _choice("--log-level", LOG_LEVELS), "LEVEL", choices=LOG_LEVELS),
    Option("access_log", ("--access-log",), "log one line per request (off by default, as in gunicorn)",
           _switch("--access-log"), switch=True),
    Option("access_log_format", ("--access-log-format",), "the access line, with named fields: {client}, "
           "{method}, {path}, {query}, {request_line}, {status}, {bytes}, {duration_ms}, {duration_us}, "
           "{referer}, {user_agent}, {worker_id}, {worker_index}, {pid}, and any header: {header_x_request_id} (the "
           "request's X-Request-Id), {response_header_content_type} (the app's Content-Type), '-' when absent; "
           "default " + DEFAULT_ACCESS_FORMAT.replace(
               "%", "%%"), check_format, "FORMAT"),
    Option("log_format", ("--log-format",), "text (default) or json: one JSON object per line",
           _choice("--log-format", LOG_FORMATS), "FORMAT", choices=LOG_FORMATS),
    Option("log_config", ("--log-config",), "configure logging from a file instead: dictConfig (.json, .toml, "
           ".yaml) or fileConfig (.ini)", _existing_file("--log-config"), "FILE"),
    Option("log_file", ("--log-file",), "write the log to FILE instead of stderr (SIGUSR1 reopens it)",
           _log_file("--log-file"), "FILE"),
    Option("access_log_file", ("--access-log-file",), "write access lines to FILE instead of stdout (SIGUSR1 "
           "reopens it)", _log_file("--access-log-file"), "FILE"),
    Option("log_max_size", ("--log-max-size",), "rotate a log file once it grows past SIZE (10M, 500K, 1G or "
           "bytes): the primary's stdout and stderr when they are files (clusterrun start's logs), --log-file and "
           "--access-log-file; checked every second, copied to FILE.1 (older copies shifted to FILE.2 ...) and "
           "truncated in place, so that no writer needs to reopen it; 0 (default) never", parse_size, "SIZE",
           types=(int,)),
    Option("log_keep", ("--log-keep",), "with --log-max-size: the rotated copies kept (FILE.1 ... FILE.N); 0 keeps "
           "none (the file is only truncated); default 5", _int_at_least(0, "--log-keep"), "N"),
    Option("loop", ("--loop",), "event loop: auto (uvloop when installed), asyncio or uvloop; default auto",
           _choice("--loop", LOOPS), "LOOP", choices=LOOPS),
    Option("http", ("--http",), "HTTP/1.1 protocol: auto or httptools (clusterrun's own engines on httptools, "
           "auto falling back to uvicorn's h11 without it), uvicorn (uvicorn's httptools protocol) or h11 (uvicorn's "
           "h11 protocol); default auto",
           _choice("--http", HTTP_IMPLS), "IMPL", choices=HTTP_IMPLS),
    Option("lifespan", ("--lifespan",), "ASGI lifespan: auto (run it if the app supports it), on or off; "
           "default auto", _choice("--lifespan", LIFESPANS), "MODE", choices=LIFESPANS),
    Option("timeout_keep_alive", ("--timeout-keep-alive",), "seconds an idle keep-alive connection stays "
           "open; default 5", _seconds("--timeout-keep-alive"), "SECONDS"),
    Option("reload", ("--reload",), "development: a rolling restart whenever a watched file changes (needs pip "
           "install 'clusterrun[reload]'); old workers keep serving while new code fails to import",
           _switch("--reload"), switch=True),
    Option("reload_dirs", ("--reload-dir",), "a folder to watch with --reload (repeat; default the current one)",
           _directory_for("--reload-dir"), "DIR", repeat=True),
    Option("reload_include", ("--reload-include",), "a file name pattern that triggers --reload (repeat; default "
           "*.py)", str, "GLOB", repeat=True),
    Option("reload_exclude", ("--reload-exclude",), "a file name or path pattern --reload ignores (repeat)", str,
           "GLOB", repeat=True),
    Option("fds", ("--fd",), "serve on an inherited listening descriptor N (repeat); the same as --bind fd://N. "
           "Without any --bind/--fd, the listeners systemd passes (socket activation) are used",
           _int_at_least(0, "--fd"), "N", repeat=True),
    Option("chdir", ("--chdir",), "change to this folder before loading the app (a relative --app-dir is then "
           "taken from it)", lambda value: os.path.abspath(_directory_for("--chdir")(value)), "DIR"),
    Option("env_file", ("--env-file",), "load environment variables for the app from this dotenv file before it is "
           "imported (needs python-dotenv: pip install python-dotenv); variables already set win",
           _existing_file("--env-file"), "FILE"),
    Option("pid_file", ("--pid-file",), "write the primary's pid to FILE once bound, remove it on exit; a live pid "
           "in it refuses the start", _log_file("--pid-file"), "FILE"),
    Option("user", ("--user",), "workers run as this user (a name or a numeric uid): the primary binds as root, "
           "then each worker drops to the user before it imports the app; the primary stays root", parse_user,
           "USER", types=(int,)),
    Option("group", ("--group",), "with --user: the workers' group (a name or a numeric gid); default the user's "
           "own group", parse_group, "GROUP", types=(int,)),
    Option("uds_mode", ("--uds-mode",), "permissions of unix: socket files, in octal; default 666, so that a "
           "proxy running as another user can connect (660 for the group only)", _octal_mode, "OCTAL"),
    Option("name", ("--name",), "the cluster's name, for clusterrun status/reload/scale/stop NAME; default the "
           "app's module (flask_app for flask_app:app)", parse_name, "NAME"),
    Option("control", ("--control",), "the control socket's path; default $XDG_RUNTIME_DIR/clusterrun/NAME.sock, "
           "else a per-user folder in the temp directory", _socket_path, "PATH"),
    Option("no_control", ("--no-control",), "open no control socket: clusterrun status and the other commands "
           "then cannot reach this cluster", _switch("--no-control"), switch=True),
    Option("health", ("--health",), "serve /livez and /readyz from the primary on HOST:PORT or unix:PATH (also "
           "served with --metrics); for Kubernetes probes", _address_for("--health"), "ADDRESS"),
    Option("shutdown_delay", ("--shutdown-delay",), "on SIGTERM, turn /readyz to 503 at once but keep serving "
           "this many seconds before draining (Kubernetes' preStop pause, without a sleep binary); default 0",
           _seconds("--shutdown-delay"), "SECONDS"),
    Option("metrics", ("--metrics",), "serve GET /metrics (the Prometheus text format) from the primary on "
           "HOST:PORT or unix:PATH; needs prometheus_client: pip install prometheus_client", _metrics_address,
           "ADDRESS"),
    Option("limit_request_line", ("--limit-request-line",), "refuse a request line (method, target, version) "
           "longer than this many bytes with 414; default 4094, as gunicorn", _int_at_least(16, "--limit-request-line"),
           "BYTES"),
    Option("limit_request_fields", ("--limit-request-fields",), "refuse a request with more header fields than "
           "this with 431; default 100, as gunicorn", _int_at_least(1, "--limit-request-fields"), "N"),
    Option("limit_request_field_size", ("--limit-request-field-size",), "refuse a header field line (name, "
           "value, CRLF) longer than this many bytes with 431; default 8190, as gunicorn",
           _int_at_least(16, "--limit-request-field-size"), "BYTES"),
    Option("limit_request_head", ("--limit-request-head",), "refuse a request head larger than this many bytes "
           "in all with 431 (414 while still in its request line); default 65536",
           _int_at_least(256, "--limit-request-head"), "BYTES"),
    Option("timeout_request_head", ("--timeout-request-head",), "close a connection whose request head is not "
           "complete within this many seconds (408 if part of one came); default 10",
           _positive_seconds("--timeout-request-head"), "SECONDS"),
    Option("body_timeout", ("--body-timeout",), "answer 408 (or close, once the response began) when a request "
           "body still arriving sends nothing for this many seconds, so that a stalled upload frees what serves "
           "it, and cut off a client that takes nothing of a response for as long (ASGI: on clusterrun's own "
           "protocol, not --http uvicorn/h11); default 30", _positive_seconds("--body-timeout"), "SECONDS"),
    Option("request_timeout", ("--request-timeout",), "a request's deadline in seconds (uWSGI's harakiri): an "
           "inline WSGI worker whose app runs longer on one request is killed and respawned, the request named "
           "in the log; with --threads N or ASGI the client gets 504 (a pooled worker with a thread stuck past "
           "it is then replaced gracefully); 0 (default) no deadline", _seconds("--request-timeout"), "SECONDS"),
    Option("no_server_header", ("--no-server-header",), "send no 'server: clusterrun' header",
           _switch("--no-server-header"), switch=True),
    Option("no_date_header", ("--no-date-header",), "send no Date header (a proxy in front adds its own)",
           _switch("--no-date-header"), switch=True),
    Option("headers", ("--header",), "add NAME:VALUE to every response (repeat), e.g. 'X-Frame-Options: DENY'",
           _response_header, "NAME:VALUE", repeat=True),
    Option("static", ("--static",), "serve the files under DIR at URL prefix PREFIX, before the app (repeat for "
           "several): GET and HEAD, ETag, Last-Modified, 304, single ranges, precompressed .br/.gz siblings; a "
           "missing file is a 404 that never reaches the app (see --static-fallthrough)", _static_mount,
           "PREFIX=DIR", repeat=True),
    Option("static_max_age", ("--static-max-age",), "send Cache-Control: public, max-age=SECONDS with static "
           "files; 0 (default) sends none, so clients revalidate with the ETag", _int_at_least(0, "--static-max-age"),
           "SECONDS"),
    Option("static_fallthrough", ("--static-fallthrough",), "hand a request under a --static PREFIX that names no "
           "file (or uses another method than GET and HEAD) to the app instead of answering 404 (405)",
           _switch("--static-fallthrough"), switch=True),
    Option("ssl_certfile", ("--ssl-certfile",), "serve HTTPS with this certificate (PEM, with its chain); each "
           "worker reads it when it starts, so a rolling restart (SIGHUP) serves a renewed one",
           _existing_file("--ssl-certfile"), "FILE"),
    Option("ssl_keyfile", ("--ssl-keyfile",), "the certificate's private key (PEM); default: in --ssl-certfile",
           _existing_file("--ssl-keyfile"), "FILE"),
    Option("ssl_keyfile_password", ("--ssl-keyfile-password",), "the password of an encrypted --ssl-keyfile "
           "(better from the environment or a config file than the command line, which ps shows)", str,
           "PASSWORD"),
    Option("ssl_ca_certs", ("--ssl-ca-certs",), "CA certificates (PEM) that client certificates are checked "
           "against, with --ssl-cert-reqs", _existing_file("--ssl-ca-certs"), "FILE"),
    Option("ssl_cert_reqs", ("--ssl-cert-reqs",), "client certificates: none (0, default), optional (1) or "
           "required (2), as the ssl module's CERT_*", parse_cert_reqs, "none|optional|required"),
    Option("ssl_ciphers", ("--ssl-ciphers",), "the OpenSSL cipher list for TLS 1.2 and older; default Python's "
           "safe defaults (as uvicorn and gunicorn)", str, "CIPHERS"),
    Option("proxy_headers", ("--proxy-headers",), "take the client's address and scheme from X-Forwarded-For, "
           "X-Forwarded-Proto and Forwarded when the peer is in --forwarded-allow-ips; on by default "
           "(--no-proxy-headers: never)", _switch("--proxy-headers"), switch=True, negatable=True),
    Option("forwarded_allow_ips", ("--forwarded-allow-ips",), "the proxies whose forwarding headers are trusted: "
           "IP addresses and networks (CIDR), 'unix' for Unix-socket peers, '*' for any peer, comma-separated; "
           "default 127.0.0.1,::1,unix", _forwarded_ips, "IPS", env="FORWARDED_ALLOW_IPS"),
    Option("proxy_host", ("--proxy-host",), "also take the Host from a trusted proxy's X-Forwarded-Host or "
           "Forwarded host= (off by default: a proxy that passes a client's header on would let it choose the "
           "host your app builds URLs with)", _switch("--proxy-host"), switch=True),
    Option("proxy_protocol", ("--proxy-protocol",), "every connection begins with a PROXY protocol header (v1 or "
           "v2, as AWS NLB and HAProxy's send-proxy send it) naming the client, taken as its address; a connection "
           "from a peer not in --forwarded-allow-ips, or whose header is missing, malformed or not complete within "
           "--timeout-request-head, is closed without an answer (docs: deploying, PROXY protocol)",
           _switch("--proxy-protocol"), switch=True),
    Option("root_path", ("--root-path",), "the path prefix the app is mounted under behind a proxy, e.g. /api: "
           "ASGI root_path and WSGI SCRIPT_NAME", _root_path, "PATH"),
    Option("limit_request_body", ("--limit-request-body",), "refuse a request body larger than this many bytes "
           "with 413, before the app runs when Content-Length says so, else when a chunked body grows past it; "
           "0 (default) no limit: bodies stream to the app, so the server itself holds at most a few dozen KiB of "
           "one", _int_at_least(0, "--limit-request-body"), "BYTES"),
    Option("limit_concurrency", ("--limit-concurrency",), "per worker, serve at most N connections at once (a "
           "connection counts from its first request until it closes); the first request of one more is answered "
           "503 with Connection: close; 0 (default) no limit, as uvicorn", _int_at_least(0, "--limit-concurrency"),
           "N"),
    Option("ws_max_size", ("--ws-max-size",), "close a WebSocket whose client sends a message larger than this "
           "many bytes (close code 1009); default 16777216 (16 MiB), as uvicorn", _int_at_least(1, "--ws-max-size"),
           "BYTES"),
    Option("ws_ping_interval", ("--ws-ping-interval",), "send each WebSocket client a ping every this many "
           "seconds; 0 sends none; default 20, as uvicorn", _seconds("--ws-ping-interval"), "SECONDS"),
    Option("ws_ping_timeout", ("--ws-ping-timeout",), "close a WebSocket whose client does not answer a ping "
           "within this many seconds (close code 1011); 0 waits forever; default 20, as uvicorn",
           _seconds("--ws-ping-timeout"), "SECONDS"),
    Option("h2_max_concurrent_streams", ("--h2-max-concurrent-streams",), "HTTP/2: the streams (requests) a "
           "client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS); default 100",
           _int_at_least(1, "--h2-max-concurrent-streams"), "N"),
)

OPTIONS_BY_NAME: Mapping[str, Option] = {option.name: option for option in OPTIONS}
for _option in OPTIONS:  # every option has a type rule: a missing one fails here, at import
    value_types(_option)






















