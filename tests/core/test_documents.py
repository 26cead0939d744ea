"""Stored documents (pipeline_state.documents): the schema registry of upgrade steps, the
strict converter and the codec's errors, on small classes of their own."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import attrs
import pytest

from pipeline_state.documents import Document, DocumentCodec, Layout, Schema, UnknownSchemaError
from pipeline_state.errors import CorruptStateError


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Part:
    name: str
    weight: float | None = None


@attrs.frozen
class Box:
    box_id: str
    colour: Colour
    count: int
    sealed: bool
    packed_at: datetime
    parts: tuple[Part, ...] = ()
    tags: tuple[str, ...] = ()
    label: str | None = None
    note: str = ""
    cached: int = 0


LAYOUT = Layout(
    renames={Box: {"count": "n_items"}, Part: {"name": "part"}},
    omit={Box: frozenset({"cached"})},
    optional={Box: frozenset({"note"})},
)
CODEC = DocumentCodec(Box, layout=LAYOUT, schema=Schema(version=1), what="the box document")
BOX = Box(
    "x1",
    Colour.RED,
    3,
    False,
    datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    (Part("lid", 1.5), Part("base")),
    ("fragile",),
    cached=7,
)


# -- the schema: layout numbers and upgrade steps -------------------------------------------
def _v1_to_v2(doc: Document) -> Document:
    doc["size"] = doc.pop("width") * doc.pop("height")
    return doc


def _v2_to_v3(doc: Document) -> Document:
    doc["size"] = {"area": doc["size"]}
    doc["history"].append("v3")
    return doc


THREE = Schema(version=3, upgrades={1: _v1_to_v2, 2: _v2_to_v3})


def test_a_current_document_is_read_as_it_is() -> None:
    doc = {"schema": 3, "size": {"area": 6}}
    assert THREE.upgrade(doc) is doc


def test_older_documents_pass_through_every_step_in_order_on_a_copy() -> None:
    v1 = {"schema": 1, "width": 2, "height": 3, "history": ["v1"]}
    kept = copy.deepcopy(v1)
    assert THREE.upgrade(v1) == {"schema": 3, "size": {"area": 6}, "history": ["v1", "v3"]}
    assert THREE.upgrade({"schema": 2, "size": 5, "history": []}) == {
        "schema": 3,
        "size": {"area": 5},
        "history": ["v3"],
    }
    assert v1 == kept, "the stored document itself is never changed"


@pytest.mark.parametrize(
    ("found", "reads"),
    [(4, "1 to 3"), (0, "1 to 3"), (None, "1 to 3"), ("2", "1 to 3"), (True, "1 to 3"), (2.0, "1 to 3")],
)
def test_numbers_a_release_cannot_read_are_refused(found: object, reads: str) -> None:
    doc = {} if found is None else {"schema": found}
    with pytest.raises(
        UnknownSchemaError, match=rf"unknown schema version {found!r} \(this version reads {reads}\)"
    ):
        THREE.upgrade(doc)


def test_a_schema_without_steps_reads_only_its_own_layout() -> None:
    with pytest.raises(UnknownSchemaError, match=r"this version reads 2\)"):
        Schema(version=2).upgrade({"schema": 1})
    assert Schema(version=2, upgrades={1: _v1_to_v2}).oldest == 1


@pytest.mark.parametrize(
    "upgrades",
    [
        pytest.param({1: _v1_to_v2}, id="short-of-the-current-layout"),
        pytest.param({1: _v1_to_v2, 2: _v2_to_v3, 3: _v2_to_v3}, id="past-the-current-layout"),
        pytest.param({0: _v1_to_v2, 1: _v1_to_v2, 2: _v2_to_v3}, id="layout-0"),
    ],
)
def test_steps_must_be_consecutive_and_end_at_the_current_layout(upgrades: dict[int, Any]) -> None:
    with pytest.raises(ValueError, match="consecutive steps"):
        Schema(version=3, upgrades=upgrades)
    assert Schema(version=3, upgrades={2: _v2_to_v3}).oldest == 2


def test_a_custom_key_holds_the_number() -> None:
    schema = Schema(version=1, key="layout")
    assert schema.stamp({"a": 1}) == {"layout": 1, "a": 1}
    assert list(schema.stamp({"a": 1})) == ["layout", "a"]


# -- the codec: layout and strict reading ----------------------------------------------------
def test_a_value_is_written_in_its_layout_and_read_back() -> None:
    doc = CODEC.encode(BOX)
    assert doc == {
        "schema": 1,
        "box_id": "x1",
        "colour": "red",
        "n_items": 3,
        "sealed": False,
        "packed_at": "2025-01-01T12:00:00+02:00",
        "parts": [{"part": "lid", "weight": 1.5}, {"part": "base", "weight": None}],
        "tags": ["fragile"],
        "label": None,
        "note": "",
    }
    assert list(doc)[:2] == ["schema", "box_id"]
    assert type(doc["colour"]) is str
    back = CODEC.decode(doc, "x1")
    assert back == attrs.evolve(BOX, cached=0)
    assert back.packed_at.utcoffset() == timedelta(hours=2)


def test_only_fields_the_layout_calls_optional_may_be_absent() -> None:
    doc = CODEC.encode(BOX)
    del doc["note"]
    assert CODEC.decode(doc, "x1").note == ""
    del doc["label"]  # has a default, but the layout requires it
    with pytest.raises(CorruptStateError, match="missing field 'label'"):
        CODEC.decode(doc, "x1")


def _bad(change: Any) -> str:
    doc = CODEC.encode(BOX)
    change(doc)
    with pytest.raises(CorruptStateError) as info:
        CODEC.decode(doc, "x1")
    assert info.value.batch_id == "x1"
    return info.value.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(n_items="3"), "field 'n_items' should be int, got str"),
        (lambda d: d.update(n_items=True), "field 'n_items' should be int, got bool"),
        (lambda d: d.update(n_items=3.0), "field 'n_items' should be int, got float"),
        (lambda d: d.update(sealed=0), "field 'sealed' should be bool, got int"),
        (lambda d: d.update(box_id=7), "field 'box_id' should be str, got int"),
        (lambda d: d.update(colour="green"), "field 'colour' has an unknown value 'green'"),
        (
            lambda d: d.update(packed_at="2025-01-01T12:00:00"),
            "field 'packed_at' has no timezone: '2025-01-01T12:00:00'",
        ),
        (lambda d: d.update(packed_at="noon"), "field 'packed_at' is not an ISO-8601 time: 'noon'"),
        (lambda d: d.update(tags="fragile"), "field 'tags' should be list, got str"),
        (lambda d: d.update(tags=["a", 1]), "field 'tags' should hold strings"),
        (lambda d: d.pop("n_items"), "missing field 'n_items'"),
        (lambda d: d["parts"][1].pop("part"), "missing field 'part' (at parts[1])"),
        (
            lambda d: d["parts"][1].update(weight="1"),
            "field 'weight' should be a number, got str (at parts[1].weight)",
        ),
        (lambda d: d["parts"].append(3), "field 'parts' should be an object, got int (at parts[2])"),
        (lambda d: d.update(schema=2), "unknown schema version 2 (this version reads 1)"),
    ],
)
def test_a_bad_document_names_the_field_and_where_it_is(change: Any, reason: str) -> None:
    assert _bad(change) == reason


def test_a_document_that_is_not_an_object_is_named_by_the_codec() -> None:
    with pytest.raises(CorruptStateError, match="the box document should be an object, got list"):
        CODEC.decode([], "x1")


def test_numbers_are_read_as_floats_where_floats_belong() -> None:
    doc = CODEC.encode(attrs.evolve(BOX, parts=(Part("lid", 2.0),)))
    doc["parts"][0]["weight"] = 2
    weight = CODEC.decode(doc, "x1").parts[0].weight
    assert (weight, type(weight)) == (2.0, float)


def test_upgrades_run_before_the_document_is_read() -> None:
    def rename(doc: Document) -> Document:
        doc["n_items"] = doc.pop("count")
        return doc

    codec = DocumentCodec(Box, layout=LAYOUT, schema=Schema(version=2, upgrades={1: rename}))
    old = {k: v for k, v in CODEC.encode(BOX).items() if k != "n_items"} | {"count": 3}
    assert codec.decode(old, "x1") == attrs.evolve(BOX, cached=0)
    assert codec.encode(BOX)["schema"] == 2


def test_utc_times_keep_their_offset() -> None:
    box = attrs.evolve(BOX, packed_at=datetime(2025, 6, 1, tzinfo=UTC))
    assert CODEC.encode(box)["packed_at"] == "2025-06-01T00:00:00+00:00"


@attrs.frozen
class Tagged:
    tags: frozenset[str]
    colours: frozenset[Colour] = frozenset()


def test_a_set_is_stored_as_a_sorted_list() -> None:
    codec = DocumentCodec(Tagged, layout=Layout(), schema=Schema(version=1))
    value = Tagged(frozenset({"b", "c", "a"}), frozenset({Colour.RED, Colour.BLUE}))
    doc = codec.encode(value)
    assert doc == {"schema": 1, "tags": ["a", "b", "c"], "colours": ["blue", "red"]}
    assert codec.decode(doc, "x") == value
    with pytest.raises(CorruptStateError, match="field 'tags' should be list, got str"):
        codec.decode({"schema": 1, "tags": "abc", "colours": []}, "x")
    with pytest.raises(CorruptStateError, match="field 'colours' has an unknown value 'green'"):
        codec.decode({"schema": 1, "tags": [], "colours": ["green"]}, "x")
