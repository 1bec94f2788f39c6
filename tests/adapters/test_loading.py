"""Unit tests of app loading: finding ``module:attr`` and telling WSGI from ASGI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clusterrun.adapters.loading import detect_interface, load_app

from clusterrun.errors import BootError

# Loading


async def _asgi_fn(scope: Any, receive: Any, send: Any) -> None: ...


class _AsgiObject:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


def _wsgi_fn(environ: Any, start_response: Any) -> list[bytes]:
    return []


@pytest.mark.parametrize("app, kind", [(_asgi_fn, "asgi"), (_AsgiObject(), "asgi"), (_wsgi_fn, "wsgi")])
def test_detect_interface(app: Any, kind: str) -> None:
    assert detect_interface(app) == kind


def test_load_app_errors_name_the_module_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "unit_broken.py").write_text("x = 1\nraise ValueError('boom')\n")
    (tmp_path / "unit_ok.py").write_text("value = 3\ndef make():\n    return lambda e, s: []\n")
    with pytest.raises(BootError, match=r"importing 'unit_broken' failed: ValueError: boom \(unit_broken.py, line 2\)"):
        load_app("unit_broken:app", app_dir=str(tmp_path))
    with pytest.raises(BootError, match="no module named 'unit_missing'"):
        load_app("unit_missing:app", app_dir=str(tmp_path))
    with pytest.raises(BootError, match="module 'unit_ok' has no attribute 'nope'"):
        load_app("unit_ok:nope", app_dir=str(tmp_path))
    with pytest.raises(BootError, match="'unit_ok:value' is a int, not an app"):
        load_app("unit_ok:value", app_dir=str(tmp_path))
    assert load_app("unit_ok:make", app_dir=str(tmp_path), factory=True).interface == "wsgi"
