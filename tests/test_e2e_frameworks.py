"""End-to-end: real frameworks on the WSGI bridge, inline (--threads 1) and pooled (--threads 4) (issue 10).

Item 1: app code must never see the worker's running event loop. With it visible, Django's ORM raises
SynchronousOnlyOperation, Flask ``async def`` views (asgiref's AsyncToSync) and ``asyncio.run()`` refuse to run.

The apps are in tests/apps: the Django project fw_django and fw_flask_async.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import DEADLINE, TEST_APPS, Cluster

ADMIN_USER, ADMIN_PASSWORD = "admin", "clusterrun-e2e-pw-7"


@pytest.fixture(params=["1", "4"], ids=["inline", "pooled"])
def threads(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(run_cli: Callable[..., Cluster], app: str, threads: str, env: dict[str, str] | None = None) -> str:
    cluster = run_cli(app, "--workers", "1", "--threads", threads, "--port", "0", cwd=TEST_APPS, env=env)
    return cluster.wait_ready()


# --- item 1: Django ----------------------------------------------------------------------------------------


def django_admin(db: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """``django-admin ARGS`` for the test project, against the sqlite file ``db``."""
    subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=TEST_APPS, check=True, capture_output=True, timeout=DEADLINE * 2, stdin=subprocess.DEVNULL,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "fw_django.settings", "FW_DJANGO_DB": str(db), **(env or {})},
    )


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database with one superuser, built once per module (migrate takes seconds)."""
    db = tmp_path_factory.mktemp("django") / "template.sqlite3"
    django_admin(db, "migrate", "--noinput")
    django_admin(
        db, "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@example.com",
        env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
    )
    return db


@pytest.fixture
def django_db(migrated_db: Path, tmp_path: Path) -> Path:
    db = tmp_path / "db.sqlite3"
    shutil.copyfile(migrated_db, db)
    return db


def test_django_orm_and_admin_login(run_cli: Callable[..., Cluster], threads: str, django_db: Path) -> None:
    url = start(run_cli, "fw_django.wsgi:application", threads, env={"FW_DJANGO_DB": str(django_db)})
    with httpx.Client(base_url=url, timeout=DEADLINE) as http:
        users = http.get("/users/")
        assert users.status_code == 200, users.text
        assert users.json() == {"users": [ADMIN_USER]}

        # The admin login: a session, the CSRF token of the form, the password check, a session write.
        form = http.get("/admin/login/", params={"next": "/admin/"})
        assert form.status_code == 200, form.text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token is not None, form.text
        login = http.post(
            "/admin/login/",
            params={"next": "/admin/"},
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": ADMIN_USER,
                "password": ADMIN_PASSWORD,
                "next": "/admin/",
            },
        )
        assert login.status_code == 302, login.text
        assert urlsplit(login.headers["location"]).path == "/admin/"
        assert "sessionid" in http.cookies

        admin = http.get("/admin/")
        assert admin.status_code == 200, admin.text
        assert "Site administration" in admin.text and "Log out" in admin.text


# --- item 1: Flask async views and asyncio.run ----------------------------------------------------------------


def test_flask_async_view_and_asyncio_run(run_cli: Callable[..., Cluster], threads: str) -> None:
    url = start(run_cli, "fw_flask_async:app", threads)
    with httpx.Client(base_url=url, timeout=DEADLINE) as http:
        for _ in range(2):  # the second round: the worker's own loop is intact after the first
            answer = http.get("/async")
            assert answer.status_code == 200, answer.text
            assert answer.json()["answer"] == 42
            ran = http.get("/asyncio-run")
            assert ran.status_code == 200, ran.text
            assert ran.json()["answer"] == 8
        streamed = http.get("/stream")
        assert streamed.status_code == 200, streamed.text
        assert streamed.text == "no-loop\n" * 3  # each next() on the body, too, runs with no loop visible
