"""Issue 10.3: item lists are bounded and checked. Readiness facts may only name registered
items; outcomes only items sent to their phase, none both processed and failed. A refused
message raises :class:`ItemMismatchError` (a ``BadCommandError``: dead-lettered by Kafka,
4xx over HTTP) and changes nothing; completion figures never exceed the items of the run."""

from __future__ import annotations

import pytest
from core_flow import Flow, new_id, one, refs

from pipeline_state import BadCommandError, InvalidMessageError
from pipeline_state.errors import ItemMismatchError
from pipeline_state.profiles.huleedu.events import MAX_ESSAYS_PER_BATCH, Topic, parse_message


async def _register_without_ids(flow: Flow, batch_id: str, essays: int) -> None:
    topic, value = flow.env.register(batch_id, items=essays)
    value["data"]["essay_ids"] = None  # type: ignore[index]
    await flow.rt.deliver(topic, value)


async def _refused(
    flow: Flow, delivery: tuple[str, dict[str, object]], batch_id: str = "b1"
) -> ItemMismatchError:
    """Deliver ``delivery``, expect ItemMismatchError, and check that nothing changed."""
    before = await flow.state(batch_id)
    pending = await flow.rt.store.pending_count()
    with pytest.raises(ItemMismatchError) as caught:
        await flow.rt.deliver(*delivery)
    assert isinstance(caught.value, BadCommandError)
    assert caught.value.batch_id == batch_id
    assert await flow.state(batch_id) == before
    assert await flow.rt.store.pending_count() == pending
    assert await flow.inbox_result(str(delivery[1]["event_id"])) is None
    return caught.value


# -- provisioning and essays-ready -------------------------------------------------------


async def test_provisioning_more_essays_than_registered_is_refused(flow: Flow) -> None:
    # Measured: provisioning 30,000 essays for a batch registered with 2 was applied.
    await flow.register("b1", items=2)
    too_many = [f"b1-e{i}" for i in range(3)]

    error = await _refused(flow, flow.env.provisioned("b1", too_many))

    assert error.reason in ("too_many_items", "unregistered_items")
    assert (await flow.state("b1")).status.value == "awaiting_content_validation"


async def test_provisioning_of_30000_essays_is_invalid_on_the_wire(flow: Flow) -> None:
    await flow.register("b1", items=2)
    topic, value = flow.env.provisioned("b1", [f"e{i}" for i in range(30_000)])
    value["data"].update(provisioned_count=2, expected_count=2)  # type: ignore[union-attr]

    with pytest.raises(InvalidMessageError) as caught:
        parse_message(topic, value)

    assert caught.value.field == "data.essays_for_processing"
    assert len(value["data"]["essays_for_processing"]) > MAX_ESSAYS_PER_BATCH  # type: ignore[index]


async def test_provisioning_beyond_the_registered_count_is_refused_without_explicit_ids(flow: Flow) -> None:
    await _register_without_ids(flow, "b1", 2)

    error = await _refused(flow, flow.env.provisioned("b1", ["x1", "x2", "x3"]))

    assert error.reason == "too_many_items"
    assert "3 items named, 2 registered" in str(error)


async def test_without_explicit_ids_the_content_services_ids_are_accepted(flow: Flow) -> None:
    # The registration named no ids: the engine derived slot ids, but the content service
    # assigns its own; only their number is checked.
    await _register_without_ids(flow, "b1", 2)

    await flow.rt.deliver(*flow.env.provisioned("b1", ["content-1", "content-2"]))

    state = await flow.state("b1")
    assert [e.item_id for e in state.items] == ["content-1", "content-2"]


async def test_provisioning_unregistered_ids_is_refused(flow: Flow) -> None:
    await flow.register("b1", items=2)

    error = await _refused(flow, flow.env.provisioned("b1", ["b1-e0", "intruder"]))

    assert (error.reason, error.ids) == ("unregistered_items", ("intruder",))


async def test_provisioning_an_essay_twice_is_refused(flow: Flow) -> None:
    await flow.register("b1", items=2)

    error = await _refused(flow, flow.env.provisioned("b1", ["b1-e0", "b1-e0"]))

    assert (error.reason, error.ids) == ("duplicate_items", ("b1-e0",))


async def test_essays_ready_naming_unregistered_ids_is_refused(flow: Flow) -> None:
    await flow.register("b1", items=2, group_id="class-1")
    ids = flow.env.item_ids("b1", 2)
    await flow.rt.deliver(*flow.env.provisioned("b1", ids))
    await flow.rt.deliver(*flow.env.group_confirmed("b1", "class-1", ids))

    error = await _refused(flow, flow.env.items_ready("b1", [*ids, "b1-e7"]))

    assert error.reason in ("too_many_items", "unregistered_items")


async def test_items_are_checked_only_when_the_fact_would_apply(flow: Flow) -> None:
    ids = await flow.ready("b1", items=2)
    topic, value = flow.env.provisioned("b1", [*ids, "intruder"])

    assert await flow.rt.deliver(topic, value) == []  # a late provisioning: ignored, not refused

    assert (await flow.inbox_result(value["event_id"])).startswith("ignored:unexpected")  # type: ignore[union-attr]


# -- outcomes ----------------------------------------------------------------------------


async def test_outcome_naming_essays_never_sent_is_refused_and_counts_stay_real(flow: Flow) -> None:
    # Measured: a spellcheck outcome naming 500 essays never sent was applied; the next
    # command carried 502 essays and the completion reported 502 successes for 2 essays.
    ids = await flow.ready("b1", items=2)
    corr = (await flow.start("b1", "nlp")).correlation_id
    forged = [*ids, *(f"forged-{i}" for i in range(500))]

    error = await _refused(flow, flow.env.outcome("b1", "spellcheck", corr, processed=forged))

    assert (error.reason, error.phase) == ("items_not_sent_to_phase", "spellcheck")
    assert len(error.ids) == 500
    assert "and 495 more" in str(error)
    assert len(str(error)) < 500  # the ids are truncated in the message
    out = await flow.outcome("b1", "spellcheck", corr, processed=ids)
    assert [e for e, _ in refs(out, Topic.NLP.value)] == ids
    out = await flow.outcome("b1", "nlp", corr, processed=ids)
    completed = one(out, Topic.PIPELINE_COMPLETED.value)
    assert (completed["successful_essay_count"], completed["failed_essay_count"]) == (2, 0)


async def test_failed_ids_never_sent_are_refused(flow: Flow) -> None:
    ids = await flow.ready("b1", items=2)
    corr = (await flow.start("b1", "nlp")).correlation_id

    error = await _refused(
        flow, flow.env.outcome("b1", "spellcheck", corr, processed=ids[:1], failed=["ghost"])
    )

    assert (error.reason, error.ids) == ("items_not_sent_to_phase", ("ghost",))


async def test_an_essay_both_processed_and_failed_is_refused(flow: Flow) -> None:
    ids = await flow.ready("b1", items=2)
    corr = (await flow.start("b1", "nlp")).correlation_id

    error = await _refused(flow, flow.env.outcome("b1", "spellcheck", corr, processed=ids, failed=ids[:1]))

    assert (error.reason, error.ids) == ("processed_and_failed", (ids[0],))


async def test_an_essay_named_twice_in_an_outcome_is_refused(flow: Flow) -> None:
    ids = await flow.ready("b1", items=2)
    corr = (await flow.start("b1", "nlp")).correlation_id

    error = await _refused(flow, flow.env.outcome("b1", "spellcheck", corr, processed=[ids[0], ids[0]]))

    assert (error.reason, error.ids) == ("duplicate_items", (ids[0],))


async def test_a_dependent_phase_may_only_name_what_its_dependency_passed_on(flow: Flow) -> None:
    ids = await flow.ready("b1", items=3)
    corr = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids[:2], failed=ids[2:])

    error = await _refused(flow, flow.env.outcome("b1", "nlp", corr, processed=ids))

    assert (error.reason, error.ids) == ("items_not_sent_to_phase", (ids[2],))


async def test_a_duplicate_outcome_for_a_finished_phase_is_still_ignored(flow: Flow) -> None:
    ids = await flow.ready("b1", items=2)
    corr = (await flow.start("b1", "nlp")).correlation_id
    await flow.outcome("b1", "spellcheck", corr, processed=ids)
    topic, value = flow.env.outcome("b1", "spellcheck", corr, processed=[*ids, "forged"])

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.inbox_result(value["event_id"]) == "ignored:duplicate_outcome"


async def test_registration_above_the_profiles_item_limit_is_refused() -> None:
    from pipeline_state import InMemoryRuntime
    from pipeline_state.profiles.huleedu.profile import huleedu_profile
    from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

    flow = Flow(InMemoryRuntime(huleedu_profile(max_items_per_batch=2)), HuleEduEnvelopes())

    with pytest.raises(ItemMismatchError) as caught:
        await flow.register("b1", items=3)

    assert caught.value.reason == "too_many_items"
    assert flow.rt.store.batch_count() == 0
    await flow.register("b2", items=2)


async def test_outcome_for_an_unknown_batch_names_nothing_new(flow: Flow) -> None:
    # Guard: the item check needs a phase's inputs; nothing else reads item lists.
    ids = await flow.ready("b1", items=1)
    corr = (await flow.start("b1", "nlp")).correlation_id
    assert new_id() != corr
    out = await flow.outcome("b1", "spellcheck", corr, processed=ids)
    assert refs(out, Topic.NLP.value) == [(ids[0], f"{ids[0]}-spellcheck")]
