"""An outbox envelope is encoded once: the text a durable store writes is the record's value.

The SQL unit of work wrote each envelope's JSON into its outbox row, and the Kafka adapter
encoded the same envelope again when the relay published the row it was handed. Both take
the text from :func:`pipeline_state._envelope_text.envelope_text` now; these tests hold that
the bytes did not change (stored and sent), and where the shared text must not be used.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pipeline_state_kafka.codec import encode_message
from pipeline_state_sql import SqlStore
from pipeline_state_sql.schema import OUTBOX
from sqlalchemy import Text, select, type_coerce

from pipeline_state._envelope_text import envelope_text, known_text
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.testing import T0

ENVELOPE: dict[str, Any] = {
    "event_id": "m-1",
    "event_type": "huleedu.els.spellcheck.initiate.command.v1",
    "correlation_id": "c-1",
    "data": {"essays": [["e-1", "ref"], ["é-2", None]], "note": 'a "quoted" ünï \U0001f4da', "n": 1.5},
}


def _before(value: dict[str, Any]) -> bytes:
    """The record value as the Kafka adapter encoded it before."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


async def test_the_stored_envelope_is_the_record_value_byte_for_byte(sql_store: SqlStore) -> None:
    message = OutboxMessage("m-1", "spellcheck", "b-1", dict(ENVELOPE))
    assert known_text(message.value) is None  # nothing wrote it yet: the adapter encodes
    assert encode_message(message).value == _before(ENVELOPE)
    await sql_store.commit(Change("b-1", None, None, T0, outbox=(message,)))
    async with sql_store.engine.connect() as conn:
        stored, text = (
            await conn.execute(select(OUTBOX.c.envelope, type_coerce(OUTBOX.c.envelope, Text)))
        ).one()
    assert stored == ENVELOPE
    record = encode_message(message)
    assert record.value == _before(ENVELOPE)
    if sql_store.engine.dialect.name == "sqlite":  # PostgreSQL's jsonb keeps its own form
        assert text.encode() == record.value
    # The text the store wrote is the one the record carries: encoded once, kept for it.
    kept = known_text(message.value)
    assert kept is not None
    assert kept is envelope_text(message.value)
    assert kept.encode() == record.value


def test_equal_envelopes_of_other_objects_get_their_own_text() -> None:
    first = dict(ENVELOPE)
    text = envelope_text(first)
    other = {**ENVELOPE, "event_id": "m-2"}
    assert envelope_text(other) == _before(other).decode()
    assert envelope_text(dict(ENVELOPE)) == text
    assert envelope_text(dict(ENVELOPE)) is not text  # another object: encoded on its own
    assert known_text(dict(ENVELOPE)) is None


def test_a_large_envelope_is_not_kept() -> None:
    large = {**ENVELOPE, "data": {"essays": [[f"essay-{n}", f"ref-{n}"] for n in range(2000)]}}
    text = envelope_text(large)
    assert text.encode() == _before(large)
    assert envelope_text(large) == text
    assert envelope_text(large) is not text


def test_a_value_json_cannot_hold_is_refused_for_a_store_and_sent_as_before() -> None:
    odd = {**ENVELOPE, "data": {"at": datetime(2025, 1, 1, tzinfo=UTC), "amount": Decimal("1.10")}}
    with pytest.raises(TypeError):
        envelope_text(odd)
    assert encode_message(OutboxMessage("m-3", "t", None, odd)).value == _before(odd)
