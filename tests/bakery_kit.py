"""A profile that is not the shipped one, for tests of the generic engine: a bakery, whose
orders of cakes go proof -> bake -> glaze, decorate -> box (pipeline ``cake``; ``bread``
is proof -> bake), on the bakery's own wire, built as docs/own-domain.md describes."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from pipeline_state import Catalog, CommandSpec, DefinitionError, Inbound, InboundTopic, Profile, WireModel
from pipeline_state.ports import (
    LAST_DEPENDENCY,
    CommandFields,
    ContentReady,
    ItemRef,
    Outgoing,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
)


# -- the bakery's wire (docs/own-domain.md's recipe) --------------------------------------------
class OrderPlaced(WireModel):
    order_id: str
    baker: str
    cakes: list[str]


class BatterReady(WireModel):
    order_id: str
    bowls: dict[str, str]


class BakeRequested(WireModel):
    order_id: str
    recipe: str
    baker: str


class StationDone(WireModel):
    order_id: str
    station: str
    status: Literal["completed_successfully", "completed_with_failures", "failed_critically"]
    outputs: dict[str, str] = Field(default_factory=dict)
    burnt: list[str] = Field(default_factory=list)
    ticket: str


def _refs(d: dict[str, str]) -> tuple[ItemRef, ...]:
    return tuple(ItemRef(k, v) for k, v in d.items())


def _bowls(items: tuple[ItemRef, ...]) -> dict[str, str]:
    return {i.item_id: i.content_ref or "" for i in items}


INBOUND = Inbound(
    (
        InboundTopic(
            "bakery.order.placed",
            OrderPlaced,
            RegisterBatch,
            lambda p: RegisterBatch(p.order_id, p.baker, len(p.cakes), tuple(p.cakes), "CAKE", "en"),
            lambda r: {"order_id": r.batch_id, "baker": r.owner, "cakes": list(r.item_ids or ())},
            key_field="order_id",
        ),
        InboundTopic(
            "bakery.batter.ready",
            BatterReady,
            ContentReady,
            lambda p: ContentReady(p.order_id, _refs(p.bowls)),
            lambda c: {"order_id": c.batch_id, "bowls": _bowls(c.items)},
            key_field="order_id",
        ),
        InboundTopic(
            "bakery.bake.requested",
            BakeRequested,
            RequestPipeline,
            lambda p: RequestPipeline(p.order_id, p.recipe, p.baker),
            lambda r: {"order_id": r.batch_id, "recipe": r.pipeline, "baker": r.requested_by},
            key_field="order_id",
        ),
        InboundTopic(
            "bakery.station.done",
            StationDone,
            PhaseOutcome,
            lambda p: PhaseOutcome(
                p.order_id, p.station, p.status, _refs(p.outputs), tuple(p.burnt), p.ticket
            ),
            lambda o: {
                "order_id": o.batch_id,
                "station": o.phase,
                "status": o.status,
                "outputs": _bowls(o.processed),
                "burnt": list(o.failed),
                "ticket": o.correlation_id,
            },
            key_field="order_id",
        ),
    )
)


class CakeRef(WireModel):
    cake_id: str
    tray: str | None = None


class StationCommand(WireModel):
    command_fields: ClassVar[CommandFields] = CommandFields(
        items="cakes", item_id="cake_id", content_ref="tray"
    )
    batch_id: str
    cakes: list[CakeRef]


class OrderDone(WireModel):
    order_id: str
    outcome: str


class BakeryOutbound:
    def completed(self, state: Any, summary: Any) -> tuple[Outgoing, ...]:
        data = {"order_id": state.batch_id, "outcome": summary.run.status.value}
        return (Outgoing("bakery.order.done", state.batch_id, OrderDone, data),)

    def registered(self, *args: Any) -> tuple[Outgoing, ...]:
        return ()

    phase_skipped = denied = notify = registered


STEPS = [
    {"name": "proof"},
    {"name": "bake", "depends_on": ["proof"]},
    {"name": "glaze", "depends_on": ["bake"]},
    {"name": "decorate", "depends_on": ["bake"]},
    {"name": "box", "depends_on": ["glaze", "decorate"]},
]
CATALOG = {"pipelines": {"cake": {"steps": STEPS}, "bread": {"steps": STEPS[:2]}}}


def bakery(catalog: dict[str, Any] | None = None, **kw: Any) -> Profile:
    cat = Catalog.from_dict(catalog or CATALOG)
    commands = {p: CommandSpec(f"bakery.{i}.start", StationCommand) for i, p in enumerate(cat.phases)}
    kw.setdefault("fan_in", LAST_DEPENDENCY)
    return Profile(
        name=kw.pop("name", "bakery"),
        catalog=cat,
        phase_commands=commands,
        inbound=INBOUND,
        outbound=BakeryOutbound(),
        source_service="bakery_orchestrator",
        **kw,
    )


def one(steps: list[dict[str, Any]], pipeline: str = "p") -> dict[str, Any]:
    return {"pipelines": {pipeline: {"steps": steps}}}


def refused(build: Any, *culprits: str) -> str:
    with pytest.raises(DefinitionError) as caught:
        build()
    message = str(caught.value)
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not named in: {message}"
    return message
