"""The one rule for a ``limit`` argument of a listing, sweep or purge."""

from __future__ import annotations

__all__ = ["check_limit", "check_offset"]


def check_limit(limit: object, name: str = "limit") -> None:
    """Raise :class:`ValueError` unless ``limit`` is a whole number of at least 1: every
    store answers such a call alike (a negative ``LIMIT`` is no limit on SQLite, an error on
    PostgreSQL, and a slice that drops the last items in memory)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {limit!r}")


def check_offset(offset: object) -> None:
    """Raise :class:`ValueError` unless ``offset`` is a whole number of at least 0."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a whole number of at least 0, got {offset!r}")
