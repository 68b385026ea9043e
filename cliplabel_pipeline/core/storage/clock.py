"""The one clock of recorded times: aware UTC, so rows and files written anywhere compare."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)
