"""Hypothesis strategies for any profile: the engine inputs its wire can carry, as messages.

What is drawn depends only on the profile: its catalog (pipelines, phases), the inputs its
inbound topics decode to (a wire with no group confirmation never gets one drawn), whether
it matches groups, its item bound. Messages are built by :class:`~.builders.Envelopes`
with the profile, so they are the bytes the profile's service consumes.

A small pool of batch ids and correlation ids keeps draws meeting each other: a drawn
outcome names a correlation id that a drawn request may have started a run under, so
traces reach dispatch, outcomes, fan-in and completion, not only refusals.

* :func:`engine_inputs` - one :data:`~pipeline_state._inputs.EngineInput` of the wire;
* :func:`deliveries` - one ``(topic, envelope)`` message of the wire;
* :func:`traces` - lists of messages, starting with registrations and content of every
  batch more often than not, to deliver in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from hypothesis import strategies as st

from pipeline_state._inputs import (
    ContentReady,
    EngineInput,
    GroupConfirmed,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state._profile import Profile

from .builders import Delivery, Envelopes, item_refs

__all__ = ["correlation_id_of", "deliveries", "engine_inputs", "traces"]

_BATCHES = ("b1", "b2")
_RUNS_PER_BATCH = 3
_OWNER = "owner-1"
_GROUP = "group-1"
_UNKNOWN_PIPELINE = "no_such_pipeline"
_POOL = uuid.UUID("5b0e1c8e-3f55-4d4e-9a57-1d2c3b4a5f60")


def correlation_id_of(batch_id: str, run: int) -> str:
    """The correlation id (a UUID, as envelopes carry) of the ``run``-th request the
    strategies draw for ``batch_id``."""
    return str(uuid.uuid5(_POOL, f"{batch_id}/{run}"))


def _ids(batch_id: str, items: int) -> list[str]:
    return Envelopes.item_ids(batch_id, items)


def _some(ids: Sequence[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(list(ids)), min_size=1, unique=True) if ids else st.just([])


def _register(profile: Profile, batch_id: str, items: int) -> RegisterBatch:
    """The one registration of ``batch_id`` (the same each time it is drawn: registering a
    batch again with other data is a conflict, not an input to explore). Under a profile that
    matches groups, a batch whose id ends in an even digit has a group."""
    grouped = profile.group_matching is not None and batch_id[-1:] in tuple("02468")
    group = _GROUP if grouped else None
    return RegisterBatch(
        batch_id,
        _OWNER,
        items,
        tuple(_ids(batch_id, items)),
        Envelopes.DEFAULT_CATEGORY,
        Envelopes.DEFAULT_LANGUAGE,
        group_id=group,
    )


@st.composite
def _outcome(draw: st.DrawFn, profile: Profile, batch_id: str, items: int) -> PhaseOutcome:
    phase = draw(st.sampled_from(list(profile.catalog.phases)))
    ids = _ids(batch_id, items)
    processed = draw(st.lists(st.sampled_from(ids), unique=True))
    failed = [i for i in ids if i not in processed] if draw(st.booleans()) else []
    status = Envelopes.outcome_status(processed, failed)
    correlation = correlation_id_of(batch_id, draw(st.integers(0, _RUNS_PER_BATCH - 1)))
    return PhaseOutcome(batch_id, phase, status, item_refs(processed, phase), tuple(failed), correlation)  # type: ignore[arg-type]


def engine_inputs(
    profile: Profile, *, batch_ids: Sequence[str] = _BATCHES, items: int = 3
) -> st.SearchStrategy[EngineInput]:
    """One input of any kind ``profile``'s inbound wire carries, for one of ``batch_ids``
    whose registrations name ``items`` items (capped by the profile's bound)."""
    count = max(1, min(items, profile.max_items_per_batch))
    inbound = profile.inbound
    pipelines = [*profile.catalog.names, _UNKNOWN_PIPELINE]

    def for_batch(batch_id: str) -> st.SearchStrategy[EngineInput]:
        ids = _ids(batch_id, count)
        options: list[st.SearchStrategy[EngineInput]] = []
        if inbound.topic_of(RegisterBatch):
            options.append(st.just(_register(profile, batch_id, count)))
        if inbound.topic_of(ContentReady):
            options.append(_some(ids).map(lambda chosen: ContentReady(batch_id, item_refs(chosen, "text"))))
        if inbound.topic_of(GroupConfirmed) and profile.group_matching is not None:
            options.append(st.just(GroupConfirmed(batch_id, _GROUP)))
        if inbound.topic_of(ItemsReady):
            options.append(_some(ids).map(lambda chosen: ItemsReady(batch_id, item_refs(chosen, "text"))))
        if inbound.topic_of(ValidationFailed):
            options.append(st.builds(ValidationFailed, st.just(batch_id), st.booleans()))
        if inbound.topic_of(RequestPipeline):
            options.append(
                st.builds(
                    RequestPipeline,
                    st.just(batch_id),
                    st.sampled_from(pipelines),
                    st.just(_OWNER),
                    prompt=st.just({"prompt_ref": "prompt-1"}),
                )
            )
        if inbound.topic_of(PhaseOutcome):
            options.append(_outcome(profile, batch_id, count))
        if not options:
            raise ValueError(f"profile {profile.name!r} consumes no engine input")
        return st.one_of(options)

    return st.sampled_from(list(batch_ids)).flatmap(for_batch)


def _delivery(env: Envelopes, value: EngineInput, run: int) -> Delivery:
    if isinstance(value, RequestPipeline):
        return env.send(value, correlation_id=correlation_id_of(value.batch_id, run))
    if isinstance(value, PhaseOutcome):
        return env.send(value, correlation_id=value.correlation_id)
    return env.send(value)


def deliveries(
    profile: Profile, *, batch_ids: Sequence[str] = _BATCHES, items: int = 3
) -> st.SearchStrategy[Delivery]:
    """One message of ``profile``'s wire (see :func:`engine_inputs`); a request carries one
    of its batch's pooled correlation ids (:func:`correlation_id_of`)."""
    env = Envelopes(profile=profile)
    return st.tuples(
        engine_inputs(profile, batch_ids=batch_ids, items=items), st.integers(0, _RUNS_PER_BATCH - 1)
    ).map(lambda drawn: _delivery(env, *drawn))


@st.composite
def traces(
    draw: st.DrawFn,
    profile: Profile,
    *,
    batch_ids: Sequence[str] = _BATCHES,
    items: int = 3,
    max_size: int = 25,
) -> list[Delivery]:
    """Messages to deliver in order: usually each batch's registration and content first
    (so runs start), then any messages of the wire; sometimes any messages from the start."""
    env = Envelopes(profile=profile)
    count = max(1, min(items, profile.max_items_per_batch))
    opening: list[Delivery] = []
    inbound = profile.inbound
    if draw(st.integers(0, 3)) and inbound.topic_of(RegisterBatch) and inbound.topic_of(ContentReady):
        for batch_id in batch_ids:
            opening.append(env.send(_register(profile, batch_id, count)))
            opening.append(env.send(ContentReady(batch_id, item_refs(_ids(batch_id, count), "text"))))
    rest = draw(st.lists(deliveries(profile, batch_ids=batch_ids, items=items), max_size=max_size))
    return opening + rest
