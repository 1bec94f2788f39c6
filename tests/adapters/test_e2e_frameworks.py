"""End-to-end: real frameworks on the WSGI bridge, inline (--threads 1) and pooled (--threads 4) (issue 10).

Item 1: app code must never see the worker's running event loop. With it visible, Django's ORM raises
SynchronousOnlyOperation, Flask ``async def`` views (asgiref's AsyncToSync) and ``asyncio.run()`` refuse to run.
Item 2: the environ carries every key PEP 3333 and CGI name; an app's exception is logged as the WSGI app's,
with its method and path, and answered 500; a response header with CR, LF or NUL is answered 500 and logged.

The apps are in tests/apps: the Django project fw_django, fw_flask_async and fw_wsgi_errors.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, Cluster

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


# --- item 2: environ and errors ----------------------------------------------------------------------------


def test_environ_names_the_server_and_cgi_keys(run_cli: Callable[..., Cluster], threads: str) -> None:
    url = start(run_cli, "fw_wsgi_errors:app", threads)
    port = urlsplit(url).port
    with httpx.Client(base_url=url, timeout=DEADLINE) as http:
        environ = http.post("/environ?a=1", content=b"abc", headers={"Content-Type": "text/plain"}).json()
    assert environ["SERVER_SOFTWARE"] == f"clusterrun/{version('clusterrun')}"
    assert environ["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert environ["REQUEST_METHOD"] == "POST"
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"]) == ("", "/environ", "a=1")
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("text/plain", "3")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", str(port))
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["REMOTE_PORT"].isdigit()
    assert environ["HTTP_HOST"] == f"127.0.0.1:{port}"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is (threads != "1")


def exchange_raw(url: str, path: str) -> bytes:
    """One request on a fresh connection; everything the server sends until it closes the connection."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):  # the server must close after the 500, not leave the client waiting
            received += chunk
    return received


@pytest.mark.parametrize(("kind", "name", "value"), [
    ("crlf", "X-Injected", "a\r\nSet-Cookie: evil=1"),
    ("lf", "X-Injected", "a\nb"),
    ("nul", "X-Injected", "a\x00b"),
    ("name", "X Injected\r\n", "v"),
])
def test_header_with_control_characters_is_answered_500(
    run_cli: Callable[..., Cluster], threads: str, kind: str, name: str, value: str
) -> None:
    cluster = run_cli("fw_wsgi_errors:app", "--workers", "1", "--threads", threads, "--port", "0", cwd=TEST_APPS)
    url = cluster.wait_ready()
    received = exchange_raw(url, f"/bad-header?{kind}")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 "), received
    assert b"connection: close" in head.lower() and body == b"Internal Server Error"
    assert b"evil" not in received and b"should never be sent" not in received
    (line,) = cluster.wait_for_line(r"ERROR Exception in WSGI application, GET /bad-header: ValueError: ")
    assert repr(name) in line.string and repr(value) in line.string, line.string
    # The worker serves on, keep-alive included.
    with httpx.Client(base_url=url, timeout=DEADLINE) as http:
        assert [http.get("/").text for _ in range(2)] == ["ok", "ok"]


def test_app_error_logged_as_wsgi_and_answered_500(run_cli: Callable[..., Cluster], threads: str) -> None:
    cluster = run_cli("fw_wsgi_errors:app", "--workers", "1", "--threads", threads, "--port", "0", cwd=TEST_APPS)
    url = cluster.wait_ready()
    with httpx.Client(base_url=url, timeout=DEADLINE) as http:
        failed = http.get("/boom", params={"token": "secret"})
        assert (failed.status_code, failed.text) == (500, "Internal Server Error")
        assert http.get("/").text == "ok"
    cluster.wait_for_line(r"ERROR Exception in WSGI application, GET /boom: ZeroDivisionError: the app divided")
    log = cluster.output()
    assert "Traceback (most recent call last)" in log and 'raise ZeroDivisionError("the app divided by zero")' in log
    assert "Exception in ASGI application" not in log
    assert "secret" not in log  # the query string stays out of the log


def test_app_error_mid_response_cuts_the_response(run_cli: Callable[..., Cluster], threads: str) -> None:
    """Headers and a chunk went out: the client must see a broken response, never a complete-looking one."""
    cluster = run_cli("fw_wsgi_errors:app", "--workers", "1", "--threads", threads, "--port", "0", cwd=TEST_APPS)
    url = cluster.wait_ready()
    received = exchange_raw(url, "/boom-later")
    assert received.startswith(b"HTTP/1.1 200 OK") and b"first chunk" in received
    assert not received.endswith(b"0\r\n\r\n"), received  # no final chunk: the body is visibly incomplete
    cluster.wait_for_line(r"ERROR Exception in WSGI application, GET /boom-later: LookupError: the backend went")
    assert "Exception in ASGI application" not in cluster.output()
    with httpx.Client(base_url=url, timeout=DEADLINE) as http:
        assert http.get("/").text == "ok"
