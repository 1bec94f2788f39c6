"""gunicorn's request corpus (tests/corpus/gunicorn: its tests/requests, MIT, converted by tests/corpus/convert.py)
fed raw to both engines: the inline WSGI engine and uvicorn's stack (``--interface asgi``).

Each valid file must parse as gunicorn parses it (method, path, query, version, headers, body, per request
when it holds several); each invalid file must be refused: a 4xx, or the connection closed with no 2xx. One
cluster per engine serves the whole module; its app (tests/apps/echo_app.py) answers what it saw as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import pytest

from helpers import DEADLINE, TEST_APPS, Cluster

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "gunicorn"

# Files not run: they need a gunicorn option clusterrun does not have (or a non-default value of one), or
# cannot pass over a socket.
NOT_RUN = {
    "valid/099": "its Content-Length (17914) is more than its body (8599 bytes): a server waits for the rest "
                 "(gunicorn's own test reads the file to its end)",
    "valid/024": "limit_request_line 8200 (clusterrun's --limit-request-line is a separate, tested option)",
    "valid/026": "limit_request_field_size 8210",
    "valid/028": "strip_header_spaces (gunicorn-only)",
    "valid/031compat": "permit_unconventional_http_method, casefold_http_method (gunicorn-only)",
    "valid/031compat2": "permit_unconventional_http_method (gunicorn-only)",
    "valid/040_compat": "header_map dangerous (gunicorn-only)",
    "valid/compat_obs_fold": "permit_obsolete_folding (gunicorn-only)",
    "valid/compat_obs_fold_huge": "permit_obsolete_folding (gunicorn-only)",
    **{f"valid/pp_0{n}": "PROXY protocol (not in clusterrun yet)" for n in range(1, 6)},
    "invalid/010": "limit_request_field_size 10",
    "invalid/011": "limit_request_fields 2",
    "invalid/012": "limit_request_field_size 98",
    "invalid/013": "limit_request_field_size 14, permit_obsolete_folding",
    "invalid/040": "header_map refuse (gunicorn-only: clusterrun drops such fields, as gunicorn's default)",
    "invalid/chunked_07": "header_map refuse (gunicorn-only)",
    "invalid/limit_header_default_01": "limit_request_field_size 0 (no limit)",
    **{f"invalid/pp_0{n}": "PROXY protocol (not in clusterrun yet)" for n in range(1, 4)},
}

# Where both engines differ from gunicorn on purpose or through httptools (llhttp), which both parse with.
DIFFERS = {
    "valid/009": "Content-Length with Transfer-Encoding: identity is refused by llhttp; gunicorn ignores identity "
                 "(refusing is the safe side of a length conflict)",
    "valid/013": "a chunk extension with whitespace after ';' (RFC 9112's BWS) is refused by llhttp; not fixed yet",
    "valid/027": "a raw non-ASCII byte in the target is refused by llhttp (RFC 9112: it must be percent-encoded)",
    "valid/rfc9112_target_authority_connect_01": "CONNECT's authority: gunicorn's urlsplit makes the path '443'; "
                                                 "clusterrun passes 'example.com:443' as it came",
}

# uvicorn's stack (ASGI apps, --interface asgi) where it still parses otherwise than gunicorn; strict: a case
# here that passes fails the run, so that the list is cut as the differences go.
ASGI_DIFFERS = {
    "valid/022": "an HTTP/1.0 keep-alive request pipelined after another is not answered",
    "valid/040": "field names with '_' reach an ASGI app as sent, as uvicorn gives them (gunicorn drops them "
                 "from the WSGI environ, where X_Forwarded_For would alias X-Forwarded-For; so does clusterrun)",
    "valid/rfc9112_target_authority_ipv6_01": "CONNECT to an IPv6 authority is refused",
}


def _expect_asgi_failure(request: pytest.FixtureRequest, kind: str, key: str) -> None:
    if kind == "asgi" and key in ASGI_DIFFERS:
        request.applymarker(pytest.mark.xfail(reason=ASGI_DIFFERS[key], strict=True))

_ESCAPE = re.compile(rb"\\(r\\n|0|n|t|x[0-9A-Fa-f]{2})")
_ESCAPED = {b"r\\n": b"\r\n", b"0": b"\0", b"n": b"\n", b"t": b"\t"}


def raw_request(path: Path) -> bytes:
    """A corpus file's bytes: its line breaks are layout only, ``\\r\\n`` ``\\n`` ``\\t`` ``\\0`` ``\\xHH`` escapes."""
    text = path.read_bytes().replace(b"\n", b"")
    data = _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1)) or bytes([int(m.group(1)[1:], 16)]), text)
    assert b"\\" not in data, f"{path.name}: an escape this loader does not know"
    return data


def _cases(kind: str) -> list[Any]:
    expectations = json.loads((CORPUS / kind / "expectations.json").read_text())
    cases = []
    for name, expected in sorted(expectations.items()):
        key = f"{kind}/{name}"
        marks = [pytest.mark.skip(reason=NOT_RUN[key])] if key in NOT_RUN else []
        if key in DIFFERS:
            marks.append(pytest.mark.xfail(reason=DIFFERS[key], strict=True))
        cases.append(pytest.param(name, expected, id=name, marks=marks))
    return cases


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """One cluster per engine for the module: (the engine, its address)."""
    kind = request.param
    folder = tmp_path_factory.mktemp(f"corpus-{kind}")
    log = folder / "clusterrun.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(folder)}
    for name in ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY"):
        env.pop(name, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterrun", f"echo_app:{kind}", "--interface", kind, "--workers", "1",
             "--port", "0", "--log-level", "info"],
            cwd=TEST_APPS, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
    cluster = Cluster(proc, log)
    try:
        host, _, port = cluster.wait_ready().removeprefix("http://").rpartition(":")
        yield kind, (host, int(port))
        assert "Traceback" not in cluster.output(), cluster.output()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE)


def _response(data: bytes) -> tuple[int, bytes, bytes] | None:
    """The first complete response in ``data``: (status, body, the rest); None while it is not all here."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    match = re.search(rb"(?im)^content-length: *(\d+)", head)
    length = int(match.group(1)) if match else 0
    if len(rest) < length:
        return None
    return int(head.split(b" ", 2)[1]), rest[:length], rest[length:]


def _exchange(address: Any, data: bytes, count: int, half_close_after: float | None = None,
              ) -> tuple[list[tuple[int, bytes]], bool]:
    """Send ``data``; read until ``count`` responses came or the server closed: (responses, closed).

    ``half_close_after``: when nothing comes for that long, shut the sending side (an incomplete request, which
    the server would wait on until its head timeout, then sees that nothing more comes) and read on.
    """
    answers: list[tuple[int, bytes]] = []
    with socket.create_connection(address, timeout=half_close_after or DEADLINE) as sock:
        sock.sendall(data)
        received = b""
        while len(answers) < count:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                if sock.gettimeout() == DEADLINE:
                    raise
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(DEADLINE)
                continue
            if not chunk:
                return answers, True
            received += chunk
            while (parsed := _response(received)) is not None:
                status, body, received = parsed
                answers.append((status, body))
    return answers, False


def _expected_target(raw: str, kind: str) -> tuple[str, str]:
    """The path (as the app sees it: percent-decoded) and the query of a request target, as gunicorn splits it."""
    parts = urlsplit("." + raw) if raw.startswith("//") else urlsplit(raw)
    path = parts.path[1:] if raw.startswith("//") else parts.path
    # PEP 3333: the path's bytes as latin-1; ASGI: decoded as UTF-8.
    decoded = unquote_to_bytes(path).decode("latin-1") if kind == "wsgi" else unquote(path)
    return decoded, parts.query


def _joined(headers: list[list[str]]) -> dict[str, str]:
    """Header fields by name, repeated ones joined as a WSGI server joins them."""
    fields: dict[str, str] = {}
    for name, value in headers:
        name = name.upper()
        fields[name] = f"{fields[name]}{'; ' if name == 'COOKIE' else ', '}{value}" if name in fields else value
    return fields


@pytest.mark.parametrize(("name", "expected"), _cases("valid"))
def test_valid_request_parses_as_gunicorn_parses_it(
    request: pytest.FixtureRequest, engine: tuple[str, Any], name: str, expected: Any
) -> None:
    kind, address = engine
    _expect_asgi_failure(request, kind, f"valid/{name}")
    requests = expected["requests"]
    answers, _ = _exchange(address, raw_request(CORPUS / "valid" / f"{name}.http"), len(requests))
    assert [status for status, _ in answers] == [200] * len(requests), answers
    for want, (_, body) in zip(requests, answers, strict=True):
        seen = json.loads(body)
        path, query = _expected_target(want["uri"]["uri"], kind)
        headers = _joined(want["headers"])
        got = _joined(seen["headers"])
        if "chunked" in headers.get("TRANSFER-ENCODING", "").lower() and kind == "wsgi":
            got.pop("CONTENT-LENGTH", None)  # the engine gives a chunked body's length, known once it is read
        assert seen["method"] == want["method"]
        assert (seen["path"], seen["query"]) == (path, query)
        assert seen["version"] == "HTTP/{}.{}".format(*want["version"])
        assert got == headers
        assert seen["body"] == want["body"]["bytes"]


@pytest.mark.parametrize(("name", "expected"), _cases("invalid"))
def test_invalid_request_is_refused(
    request: pytest.FixtureRequest, engine: tuple[str, Any], name: str, expected: Any
) -> None:
    kind, address = engine
    _expect_asgi_failure(request, kind, f"invalid/{name}")
    answers, closed = _exchange(address, raw_request(CORPUS / "invalid" / f"{name}.http"), 1, half_close_after=1.0)
    statuses = [status for status, _ in answers]
    assert not any(200 <= status < 300 for status in statuses), f"{expected['error']} answered {answers}"
    assert closed or any(400 <= status < 500 for status in statuses), statuses
