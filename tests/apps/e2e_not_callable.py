"""``app`` is a dict, not a WSGI or ASGI callable."""

from __future__ import annotations

app = {"not": "an app"}
