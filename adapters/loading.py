"""Find the app a user named (``module:attr``), and tell whether it speaks WSGI or ASGI."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from clusterrun.errors import BootError, ConfigError

logger = logging.getLogger("clusterrun")


@dataclass(frozen=True)
class LoadedApp:
    app: Any
    interface: str  # "wsgi" or "asgi"


def put_app_dir_first(app_dir: str) -> str:
    path = os.path.abspath(app_dir)
    if sys.path[:1] != [path]:
        sys.path.insert(0, path)
    return path


def check_module_exists(spec: str, app_dir: str) -> None:
    """In the primary, without importing the app: a module that is not there is a command-line error."""
    path = put_app_dir_first(app_dir)
    _check_not_a_file_name(spec, path)
    top = spec.partition(":")[0].split(".")[0]
    if importlib.util.find_spec(top) is None:
        raise ConfigError(
            f"cannot find module {top!r} of APP {spec!r} in {path}: run clusterrun from the folder that holds it "
            "or pass --app-dir"
        )


def _check_not_a_file_name(spec: str, path: str) -> None:
    """``flask_app.py:app``: a file name where the module's name goes."""
    module, sep, attr = spec.partition(":")
    if not module.endswith(".py"):
        return
    as_path = os.path.join(path, *module.split("."))
    if os.path.isfile(as_path + ".py") or os.path.isdir(as_path):
        return  # a package with a submodule named "py": a real module name
    better = module[: -len(".py")] + sep + attr
    raise ConfigError(f"bad APP {spec!r}: {module!r} is a file name; drop the .py and give the module: {better}")


def load_app(spec: str, *, app_dir: str = ".", factory: bool = False, interface: str = "auto") -> LoadedApp:
    """Import ``module:attr`` (attr may be dotted), call it if ``factory``, and detect its interface."""
    module_name, _, attr = spec.partition(":")
    put_app_dir_first(app_dir)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise BootError(f"cannot import {module_name!r}: no module named {exc.name!r}; run from the folder "
                            "that holds it or pass --app-dir") from exc
        raise _import_failure(module_name, exc) from exc
    except Exception as exc:
        raise _import_failure(module_name, exc) from exc
    for depth, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            missing = f"{attr!r}" if depth == 0 else f"{attr!r} ({part!r} is missing)"
            raise BootError(f"module {module_name!r} has no attribute {missing}; check the name after the "
                            "colon in APP") from None
    if factory:
        try:
            obj = obj()
        except Exception as exc:
            logger.debug("app factory %s raised", spec, exc_info=True)
            raise BootError(f"app factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not callable(obj):
        raise BootError(f"{spec!r} is a {type(obj).__name__}, not an app: point APP at a WSGI or ASGI callable, "
                        "or pass --factory if it builds one")
    detected = detect_interface(obj) if interface == "auto" else interface
    return LoadedApp(obj, detected)


def detect_interface(app: Any) -> str:
    """ASGI 3 apps are coroutine functions or objects with an async ``__call__``; the rest is WSGI."""
    if inspect.iscoroutinefunction(app):
        return "asgi"
    call = None if inspect.isfunction(app) else getattr(type(app), "__call__", None)  # noqa: B004
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    return "wsgi"


def _import_failure(module_name: str, exc: BaseException) -> BootError:
    logger.debug("importing %s failed", module_name, exc_info=exc)
    where = ""
    if not isinstance(exc, SyntaxError):  # its message already names the file and line
        # The deepest frame in the user's code; importlib's own frames are "<frozen ...>".
        tb, found = exc.__traceback__, None
        while tb is not None:
            if not tb.tb_frame.f_code.co_filename.startswith("<"):
                found = tb
            tb = tb.tb_next
        if found is not None:
            where = f" ({os.path.basename(found.tb_frame.f_code.co_filename)}, line {found.tb_lineno})"
    return BootError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}{where}")
