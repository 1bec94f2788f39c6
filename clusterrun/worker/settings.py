"""What a worker's serving takes from its Config, whichever engine serves it: the response headers, the proxies
whose forwarding headers count, the request limits. Engine-neutral: imported by the inline engine's serving
(clusterrun.worker.inline_serving) and by the stack's (clusterrun.worker.serving), so that neither imports the
other.
"""

from __future__ import annotations

from typing import Any

from clusterrun.adapters import entry
from clusterrun.config.options import Config


def response_headers(config: Config) -> entry.ResponseHeaders:
    """The headers every response gets, from --no-server-header, --no-date-header and --header."""
    return entry.ResponseHeaders(server=not config.no_server_header, date=not config.no_date_header,
                                 extra=config.headers)


def forwarding(config: Config) -> entry.Forwarding | None:
    """Which proxies' forwarding headers count (README "Behind a proxy"); None with --no-proxy-headers."""
    if not config.proxy_headers:
        return None
    return entry.Forwarding(config.forwarded_allow_ips, host=config.proxy_host)


def proxy_protocol(config: Config) -> entry.ProxyProtocol | None:
    """--proxy-protocol: whose PROXY headers count (--forwarded-allow-ips, whatever --proxy-headers says) and how
    long one may take (--timeout-request-head); None without it."""
    if not config.proxy_protocol:
        return None
    return entry.ProxyProtocol(entry.Forwarding(config.forwarded_allow_ips), config.timeout_request_head)


def limits(config: Config) -> entry.Limits:
    """The request limits a worker enforces, from its Config (README "Limits")."""
    return entry.Limits(
        request_line=config.limit_request_line,
        header_count=config.limit_request_fields,
        header_field=config.limit_request_field_size,
        head=config.limit_request_head,
        head_timeout=config.timeout_request_head,
        body=config.limit_request_body,
        concurrency=config.limit_concurrency,
        body_timeout=config.body_timeout,
        request_timeout=config.request_timeout,
    )


def static_files(config: Config) -> Any:
    """--static's mounts with --static-max-age and --static-fallthrough; None without --static (nothing in front
    of the app, so a server without static files pays nothing per request)."""
    if not config.static:
        return None
    return entry.static_files(config.static, config.static_max_age, config.static_fallthrough)
