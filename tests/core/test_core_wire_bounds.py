"""Issue 10.3: every inbound id rejects NUL (and any control character), lone surrogates and
over-long values, on every backend alike (before any store sees it); lists, free text and
the prompt payload are bounded. Each error is an InvalidMessageError naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pipeline_state import InvalidMessageError
from pipeline_state._wire import (
    MAX_FREE_TEXT_LENGTH,
    MAX_ID_LENGTH,
    MAX_ITEM_ID_LENGTH,
    MAX_SHORT_TEXT_LENGTH,
)
from pipeline_state.profiles.huleedu.events import (
    MAX_ESSAYS_PER_BATCH,
    MAX_PROMPT_PAYLOAD_BYTES,
    Topic,
    parse_message,
)
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

ENV = HuleEduEnvelopes()
CORR = "0b0e5a53-6c51-4a8c-9a0e-2f0f3c1d7e11"
VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "register": (
        Topic.BATCH_REGISTER.value,
        ENV.wrap(
            Topic.BATCH_REGISTER.value,
            {
                "batch_id": "b1",
                "expected_essay_count": 1,
                "essay_ids": ["e1"],
                "user_id": "t1",
                "org_id": "o1",
                "class_id": "c1",
                "course_code": "ENG5",
                "language": "en",
                "essay_instructions": "write",
                "student_prompt_ref": "p1",
            },
        )[1],
    ),
    "provisioned": ENV.provisioned("b1", ["e1"]),
    "associations": ENV.group_confirmed("b1", "c1", ["e1"]),
    "essays_ready": ENV.items_ready("b1", ["e1"]),
    "validation": ENV.validation_errors("b1"),
    "request": ENV.request("b1", "nlp", prompt_payload={"prompt_ref": "p"}),
    "outcome": ENV.outcome("b1", "spellcheck", CORR, processed=["e1"], failed=["e2"]),
}
# (message, path inside data, length bound)
ID_FIELDS: list[tuple[str, tuple[str | int, ...], int]] = [
    ("register", ("batch_id",), MAX_ID_LENGTH),
    ("register", ("user_id",), MAX_ID_LENGTH),
    ("register", ("org_id",), MAX_ID_LENGTH),
    ("register", ("class_id",), MAX_ID_LENGTH),
    ("register", ("student_prompt_ref",), MAX_ID_LENGTH),
    ("register", ("essay_ids", 0), MAX_ITEM_ID_LENGTH),
    ("register", ("course_code",), MAX_SHORT_TEXT_LENGTH),
    ("provisioned", ("batch_id",), MAX_ID_LENGTH),
    ("provisioned", ("essays_for_processing", 0, "essay_id"), MAX_ITEM_ID_LENGTH),
    ("provisioned", ("essays_for_processing", 0, "text_storage_id"), MAX_ITEM_ID_LENGTH),
    ("associations", ("batch_id",), MAX_ID_LENGTH),
    ("associations", ("class_id",), MAX_ID_LENGTH),
    ("associations", ("associations", 0, "essay_id"), MAX_ITEM_ID_LENGTH),
    ("associations", ("associations", 0, "student_id"), MAX_ID_LENGTH),
    ("essays_ready", ("batch_id",), MAX_ID_LENGTH),
    ("essays_ready", ("ready_essays", 0, "essay_id"), MAX_ITEM_ID_LENGTH),
    ("essays_ready", ("ready_essays", 0, "text_storage_id"), MAX_ITEM_ID_LENGTH),
    ("validation", ("batch_id",), MAX_ID_LENGTH),
    ("request", ("batch_id",), MAX_ID_LENGTH),
    ("request", ("requested_pipeline",), MAX_ID_LENGTH),
    ("request", ("user_id",), MAX_ID_LENGTH),
    ("outcome", ("batch_id",), MAX_ID_LENGTH),
    ("outcome", ("phase_name",), MAX_ID_LENGTH),
    ("outcome", ("processed_essays", 0, "essay_id"), MAX_ITEM_ID_LENGTH),
    ("outcome", ("processed_essays", 0, "text_storage_id"), MAX_ITEM_ID_LENGTH),
    ("outcome", ("failed_essay_ids", 0), MAX_ITEM_ID_LENGTH),
]


def _with(message: str, path: tuple[str | int, ...], value: Any) -> tuple[str, dict[str, Any]]:
    topic, envelope = VALID[message]
    envelope = copy.deepcopy(envelope)
    target: Any = envelope["data"]
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return topic, envelope


def _field(path: tuple[str | int, ...]) -> str:
    return "data." + ".".join(str(p) for p in path)


def test_the_valid_messages_parse() -> None:
    for topic, envelope in VALID.values():
        parse_message(topic, envelope)


@pytest.mark.parametrize(("message", "path", "bound"), ID_FIELDS, ids=lambda v: str(v))
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b", "\udfff", "tab\there", "line\nbreak"], ids=repr)
def test_ids_reject_control_characters_and_lone_surrogates(
    message: str, path: tuple[str | int, ...], bound: int, bad: str
) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(*_with(message, path, bad))
    assert caught.value.field == _field(path)


@pytest.mark.parametrize(("message", "path", "bound"), ID_FIELDS, ids=lambda v: str(v))
def test_ids_are_bounded_in_length(message: str, path: tuple[str | int, ...], bound: int) -> None:
    fits = "x" * bound
    parse_message(*_with(message, path, fits))
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(*_with(message, path, fits + "x"))
    assert caught.value.field == _field(path)


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ("provisioned", ("essays_for_processing",)),
        ("associations", ("associations",)),
        ("essays_ready", ("ready_essays",)),
        ("outcome", ("processed_essays",)),
        ("outcome", ("failed_essay_ids",)),
        ("register", ("essay_ids",)),
    ],
)
def test_item_lists_are_bounded(message: str, path: tuple[str, ...]) -> None:
    _topic, envelope = VALID[message]
    item = envelope["data"][path[0]][0]
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(*_with(message, path, [item] * (MAX_ESSAYS_PER_BATCH + 1)))
    assert caught.value.field == _field(path)


def test_free_text_is_bounded_and_keeps_line_breaks() -> None:
    parse_message(*_with("request", ("retry_reason",), "line one\nline two"))
    parse_message(*_with("register", ("essay_instructions",), "é" * MAX_FREE_TEXT_LENGTH))
    for path, value in (
        (("retry_reason",), "x" * (MAX_FREE_TEXT_LENGTH + 1)),
        (("retry_reason",), "nul\x00"),
        (("retry_reason",), "\ud800"),
    ):
        with pytest.raises(InvalidMessageError) as caught:
            parse_message(*_with("request", path, value))
        assert caught.value.field == _field(path)
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(*_with("register", ("language",), "x" * (MAX_SHORT_TEXT_LENGTH + 1)))
    assert caught.value.field == "data.language"


def test_prompt_payload_is_bounded_in_size_and_depth() -> None:
    deep: dict[str, Any] = {}
    for _ in range(9):
        deep = {"x": deep}
    big = {"text": "x" * MAX_PROMPT_PAYLOAD_BYTES}
    for payload in (deep, big):
        with pytest.raises(InvalidMessageError) as caught:
            parse_message(*_with("request", ("prompt_payload",), payload))
        assert caught.value.field == "data.prompt_payload"
    parse_message(*_with("request", ("prompt_payload",), {"a": {"b": [1, 2, {"c": "ok"}]}}))


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_numbers_json_does_not_have_are_invalid_input(token: str) -> None:
    # Found by an attack: Python's parser takes NaN and Infinity, which are not JSON
    # (RFC 8259); such a number reached the results read model and was published again
    # as a bare ``Infinity`` token, which no other JSON parser reads.
    topic, envelope = VALID["outcome"]
    raw = json.dumps(envelope).replace('"phase_name"', f'"duration": {token}, "phase_name"', 1)
    with pytest.raises(InvalidMessageError, match="not a JSON number"):
        parse_message(topic, raw.encode())
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(
            *_with(
                "request", ("prompt_payload",), {"weight": float(token.lower().replace("infinity", "inf"))}
            )
        )
    assert caught.value.field == "data.prompt_payload"


def test_envelope_source_service_is_an_id() -> None:
    topic, envelope = copy.deepcopy(VALID["validation"])
    envelope["source_service"] = "svc\x00"
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(topic, envelope)
    assert caught.value.field == "source_service"
    assert topic == Topic.VALIDATION_ERRORS.value


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"])
def test_a_timestamp_with_no_utc_equivalent_is_invalid_input(stamp: str) -> None:
    """Found by review: ``astimezone`` raised ``OverflowError``, which escaped
    ``parse_message`` and made the consumer retry the record as an unexpected failure."""
    topic, envelope = VALID["register"]
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(topic, json.dumps({**envelope, "event_timestamp": stamp}))
    assert caught.value.field == "event_timestamp"


@pytest.mark.parametrize("key", ["prompt_ref", "assignment_id"])
@pytest.mark.parametrize("ref", ["x\x00", "p" * (MAX_ID_LENGTH + 1), "", 42, ["nested"]])
def test_a_prompt_reference_the_engine_keeps_must_be_an_id(key: str, ref: object) -> None:
    """Found by review: ``prompt_payload.prompt_ref`` was copied into the batch state
    unchecked (a NUL or 60,000 characters), which PostgreSQL then refused."""
    topic, envelope = VALID["request"]
    hostile = copy.deepcopy(envelope)
    hostile["data"]["prompt_payload"] = {key: ref}
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(topic, hostile)
    assert caught.value.field == "data.prompt_payload"
    assert key in str(caught.value)
