"""Deterministic ids: everything a decision names is derived from the inbound event id, so a
retried event makes the very same ids."""

from __future__ import annotations

import hashlib
import uuid

__all__ = ["derive_id", "outbox_event_id", "run_id_of"]

_ID_NAMESPACE = uuid.UUID("6f1c1c2e-9a53-4b8e-8f3c-0d8c43f1b7a1")
_NAMESPACE_BYTES = _ID_NAMESPACE.bytes


_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}
"""The RFC 4122 variant's first hex digit of a UUID, by the hash's digit in its place."""


def derive_id(*parts: str) -> str:
    """A deterministic UUID (v5) from ``parts``: ids derived from an inbound event id are the
    same on every retry of that event.

    Equal to ``str(uuid.uuid5(namespace, "\\x1f".join(parts)))``, computed on the hash's hex
    digits without building ``UUID`` objects or byte arrays (decide derives one per
    dispatched command): the version digit is ``5``, the variant's digit is looked up."""
    h = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def outbox_event_id(command_event_id: str, index: int) -> str:
    """The event id the service gives the ``index``-th emit of a decision on the command
    with ``command_event_id`` (see ``PipelineService._envelopes``)."""
    return derive_id(command_event_id, "out", str(index))


def run_id_of(command_event_id: str) -> str:
    """The id of the run the command with ``command_event_id`` starts, if it starts one."""
    return derive_id(command_event_id, "run")
