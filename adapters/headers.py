"""The headers every response gets from the server, whichever engine serves it: Server, Date, and --header's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResponseHeaders:
    server: bool = True  # "server: clusterrun" (--no-server-header drops it)
    date: bool = True  # "date: ..." refreshed every second (--no-date-header drops it)
    extra: tuple[tuple[str, str], ...] = ()  # --header NAME:VALUE, in the order given

    def fixed(self) -> list[tuple[bytes, bytes]]:
        """Every such header but the Date, as (lowercase name, value) bytes."""
        found = [(b"server", b"clusterrun")] if self.server else []
        return found + [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.extra]
