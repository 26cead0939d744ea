"""Deterministic ids: everything a decision names is derived from the inbound event id, so a
retried event makes the very same ids."""

from __future__ import annotations

import hashlib
import uuid

__all__ = ["derive_id", "outbox_event_id"]

_ID_NAMESPACE = uuid.UUID("6f1c1c2e-9a53-4b8e-8f3c-0d8c43f1b7a1")
_NAMESPACE_BYTES = _ID_NAMESPACE.bytes


def derive_id(*parts: str) -> str:
    """A deterministic UUID (v5) from ``parts``: ids derived from an inbound event id are the
    same on every retry of that event.

    Equal to ``str(uuid.uuid5(namespace, "\\x1f".join(parts)))``, computed without building
    ``UUID`` objects (a third of the time: decide derives one per dispatched command)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def outbox_event_id(command_event_id: str, index: int) -> str:
    """The event id the service gives the ``index``-th emit of a decision on the command
    with ``command_event_id`` (see ``PipelineService._envelopes``)."""
    return derive_id(command_event_id, "out", str(index))
