"""Fails at import, as a broken deploy would: clusterrun must exit 3 with one line naming the error."""

from __future__ import annotations

raise RuntimeError("e2e-boom: DATABASE_URL is not set")
