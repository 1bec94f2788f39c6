"""What the inline engine is told once, when a worker builds it: ``EngineSettings``.

Built by the worker's serving (clusterrun.worker.inline_serving) from its Config and handed to
``WSGIEngine``. Imports no httptools (nor anything else the engine needs to run), so that the entry can name it
where httptools is not installed.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterrun.adapters.deadline import RequestStamp
from clusterrun.adapters.edge.proxy_protocol import ProxyProtocol
from clusterrun.adapters.headers import ResponseHeaders
from clusterrun.adapters.limits import Limits
from clusterrun.adapters.proxy import Forwarding

__all__ = ["EngineSettings"]


@dataclass(frozen=True)
class EngineSettings:
    """The inline engine's settings; each default is the engine's behaviour when the CLI's option is not given."""

    limits: Limits = field(default_factory=Limits)  # the request limits (README "Limits")
    keep_alive: float = 5.0  # --timeout-keep-alive: an idle connection closes after this many seconds
    headers: ResponseHeaders = field(default_factory=ResponseHeaders)  # Server, Date and --header's, on every response
    forwarding: Forwarding | None = None  # whose forwarding headers count; None: --no-proxy-headers
    proxy_protocol: ProxyProtocol | None = None  # --proxy-protocol: each connection begins with a PROXY header
    root_path: str = ""  # --root-path: the environ's SCRIPT_NAME
    ssl_context: ssl.SSLContext | None = None  # HTTPS, the handshake in the worker (adapters.engine.tls)
    extra_environ: Mapping[str, Any] = field(default_factory=dict)  # added to every request's environ
    # Told of each closed connection (how many): the primary counts them under a primary-side policy.
    on_close: Callable[[int], object] | None = None
    # Told of each response (access log, --metrics) with: client, method, path, query, HTTP version, status,
    # body bytes, seconds from the request's head to its last byte, referer, user agent, the request's headers,
    # the app's response headers (both as lists of (name, value) bytes, as they are: only the access log reads them).
    on_response: Callable[..., object] | None = None
    # --request-timeout: where each stretch of app code is stamped for the primary (adapters.deadline).
    request_clock: RequestStamp | None = None
    h2_max_streams: int = 100  # --h2-max-concurrent-streams
    # HTTP/2: given the engine at its first HTTP/2 connection, returns what serves them (adapters.entry builds it
    # where h2 is installed: adapters.stack.inline_h2.H2Side); None: the engine refuses HTTP/2 and offers no h2.
    http2: Callable[[Any], Any] | None = None
