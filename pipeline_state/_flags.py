"""Reading an on/off setting from text (environment variables of ``serve`` and the adapters)."""

from __future__ import annotations

__all__ = ["parse_flag"]

_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})


def parse_flag(text: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case, spaces
    around ignored); raises :class:`ValueError` for anything else."""
    lowered = text.strip().lower()
    if lowered in _ON:
        return True
    if lowered in _OFF:
        return False
    raise ValueError(f"expected a boolean, got {text!r}")
