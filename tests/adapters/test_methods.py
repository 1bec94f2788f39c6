"""Unit tests of extension methods: the stand-in httptools parses in their place."""

from __future__ import annotations

from typing import Any

import pytest
from clusterrun.adapters.methods import stand_in


@pytest.mark.parametrize(("data", "expected"), [
    (b"FOO /x HTTP/1.1\r\nHost: t\r\n\r\n", (0, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", b"FOO")),
    # After a complete request in the same read: found where it begins, the one before left out.
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n-BLARGH /y HTTP/1.1\r\n\r\n",
     (27, b"GET /y HTTP/1.1\r\n\r\n", b"-BLARGH")),
    (b"foo / HTTP/1.1\r\n\r\n", None),  # lowercase: gunicorn refuses it too
    (b"FO / HTTP/1.1\r\n\r\n", None),  # fewer than 3 characters
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", None),  # a failure that is no method's
    (b"CONNECT example.com:443 HTTP/1.1\r\n\r\nFOO / HTTP/1.1\r\n\r\n", None),  # the parser stops at CONNECT
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", None),  # nothing fails
])
def test_an_extension_method_is_found_where_httptools_fails_on_it(data: bytes, expected: Any) -> None:
    assert stand_in(data) == expected
