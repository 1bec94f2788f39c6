"""Behind a reverse proxy: the client and scheme the proxy names, trusted only from trusted peers; --root-path.

Each check asks a real framework (Flask, Starlette) what it makes of the request, so that what is asserted is
what a user sees: the client address it logs and the absolute URLs it builds redirects and links with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, assert_config_error, run_to_exit, start

# Every way a request reaches app code: the inline WSGI engine, the WSGI bridge on uvicorn's stack, ASGI.
ENGINES = [("proxy_app:wsgi",), ("proxy_app:wsgi", "--threads", "2"), ("proxy_app:asgi",)]
ENGINE_IDS = ["wsgi-inline", "wsgi-threads", "asgi"]


def where(url: str, headers: dict[str, str] | None = None, path: str = "/where") -> dict[str, Any]:
    with httpx.Client(timeout=DEADLINE) as http:
        response = http.get(url + path, headers=headers)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_a_trusted_proxy_names_the_client_scheme_host_and_prefix(run_cli: Any, engine: tuple[str, ...]) -> None:
    cluster = start(run_cli, *engine, "--workers", "1", "--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8",
                    "--proxy-host", "--root-path", "/api")
    url = cluster.wait_ready()

    # One proxy: X-Forwarded-For and -Proto; the links the app builds are https and under the prefix.
    seen = where(url, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert seen["client"] == "203.0.113.7"
    assert seen["link"] == f"https://{url.removeprefix('http://')}/api/where"

    # A chain: the nearest address that is not a trusted proxy is the client, whatever the farther ones say.
    seen = where(url, {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.1.2.3"})
    assert seen["client"] == "203.0.113.7"
    assert seen["link"].startswith("http://")

    # RFC 7239 wins over X-Forwarded-*; with --proxy-host its host= is the host the app builds URLs with.
    seen = where(url, {"Forwarded": 'for="[2001:db8::17]:4711";proto=https;host=shop.example, for=10.9.9.9',
                       "X-Forwarded-For": "192.0.2.99"})
    assert seen["client"] == "2001:db8::17"
    assert seen["link"] == "https://shop.example/api/where"


def test_the_wsgi_prefix_is_script_name_whether_or_not_the_proxy_strips_it(run_cli: Any) -> None:
    cluster = start(run_cli, "proxy_app:wsgi", "--workers", "1", "--root-path", "/api/")
    url = cluster.wait_ready()
    for path in ("/where", "/api/where"):
        seen = where(url, path=path)
        assert (seen["script_name"], seen["path_info"]) == ("/api", "/where"), path


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_an_untrusted_peer_cannot_name_the_client_or_the_scheme(run_cli: Any, engine: tuple[str, ...]) -> None:
    cluster = start(run_cli, *engine, "--workers", "1", "--forwarded-allow-ips", "10.0.0.0/8", "--proxy-host")
    url = cluster.wait_ready()
    for headers in ({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                     "X-Forwarded-Host": "evil.example"},
                    {"Forwarded": "for=203.0.113.7;proto=https;host=evil.example"}):
        seen = where(url, headers)
        assert seen["client"] == "127.0.0.1"
        assert seen["link"] == f"{url}/where"


@pytest.mark.parametrize("app", ["proxy_app:wsgi", "proxy_app:asgi"])
def test_no_proxy_headers_ignores_them_from_anyone(run_cli: Any, app: str) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--no-proxy-headers")
    url = cluster.wait_ready()
    seen = where(url, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert (seen["client"], seen["link"]) == ("127.0.0.1", f"{url}/where")


def test_by_default_localhost_and_unix_socket_peers_are_trusted_but_not_for_the_host(
    run_cli: Any, tmp_path: Path
) -> None:
    sock = tmp_path / "app.sock"
    cluster = run_cli("proxy_app:wsgi", "--workers", "1", "--access-log", "--bind", f"unix:{sock}", "--bind",
                      "127.0.0.1:0", cwd=TEST_APPS)
    cluster.wait_ready()
    url = next(url for url in cluster.urls() if url.startswith("http://"))
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    seen = where(url, headers)
    assert (seen["client"], seen["link"]) == ("203.0.113.7", f"https://{url.removeprefix('http://')}/where")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=DEADLINE) as http:
        seen = http.get("http://localhost/where", headers=headers).json()
    assert (seen["client"], seen["link"]) == ("203.0.113.7", "https://localhost/where")
    # The access log names the client too, not the proxy.
    cluster.wait_for_line(r"203\.0\.113\.7:0 .*GET /where", count=2)


def test_ipv6_forwarding_and_websocket_schemes_resolve_as_the_proxy_says() -> None:
    from clusterrun.adapters.proxy import Forwarding, apply_to_scope

    forwarding = Forwarding(["127.0.0.1", "::1"])
    scope: dict[str, Any] = {"type": "websocket", "scheme": "ws", "client": ("::1", 5000),
                             "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"2001:db8::5")]}
    apply_to_scope(scope, forwarding)
    assert (scope["scheme"], scope["client"]) == ("wss", ("2001:db8::5", 0))


@pytest.mark.parametrize("flag, value, message", [
    ("--forwarded-allow-ips", "10.0.0.0/33", "bad --forwarded-allow-ips value '10.0.0.0/33'"),
    ("--root-path", "api", "bad --root-path value 'api'"),
])
def test_a_bad_value_is_named(flag: str, value: str, message: str) -> None:
    assert_config_error(run_to_exit("proxy_app:wsgi", flag, value, cwd=TEST_APPS), 2, message)
