"""The completion event's figures and final status against CONTRACT.md section 2
("Completion") and what docs/concepts.md says of them (an item *entered the run* when it
was sent to a phase of this run; the ``final_step_done`` guard)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pipeline_state import InMemoryRuntime
from pipeline_state._lifecycle import RUN_LIFECYCLE
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

ROOT = Path(__file__).resolve().parents[2]


def _one(out: list[dict[str, Any]], topic: str, kind: str | None = None) -> dict[str, Any]:
    found = [
        m["value"]["data"]
        for m in out
        if m["topic"] == topic and (kind is None or m["value"]["data"].get("notification_type") == kind)
    ]
    assert len(found) == 1, [m["topic"] for m in out]
    return found[0]


async def _ready(rt: InMemoryRuntime, env: HuleEduEnvelopes, batch: str, n: int) -> list[str]:
    ids = env.item_ids(batch, n)
    await rt.deliver(*env.register(batch, items=n))
    await rt.deliver(*env.provisioned(batch, ids))
    return ids


async def test_a_run_whose_phases_are_all_pruned_reports_what_it_sent() -> None:
    """Batch of 3 essays; run 1 ``ai_feedback``: spellcheck 3/3, nlp 2 processed 1 failed,
    ai_feedback 2/2 (its completion counts the third essay failed). Then ``comprehensive``
    runs cj_assessment alone on all 3: 2 successful (ai_feedback's recorded outputs), 1
    failed (sent to cj_assessment, not out of the final step). Then ``ai_feedback`` again:
    every step pruned, nothing sent, so 2 successful and none failed, and the teacher is
    told so (``high``, no action): the rule docs/concepts.md states. (An attack on the wire
    contract read CONTRACT's "essays that entered the run" as the batch's essays; the
    engine, the reference model and the demo's verifier all count what the run sent, and the
    docs now say so.)"""
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    ids = await _ready(rt, env, "b1", 3)
    c1 = str(uuid.uuid4())
    await rt.deliver(*env.request("b1", "ai_feedback", correlation_id=c1))
    await rt.deliver(*env.outcome("b1", "spellcheck", c1, processed=ids))
    await rt.deliver(*env.outcome("b1", "nlp", c1, processed=ids[:2], failed=ids[2:]))
    first = _one(
        await rt.deliver(*env.outcome("b1", "ai_feedback", c1, processed=ids[:2])), Topic.PIPELINE_COMPLETED
    )
    assert (first["successful_essay_count"], first["failed_essay_count"]) == (2, 1)

    c2 = str(uuid.uuid4())
    await rt.deliver(*env.request("b1", "comprehensive", correlation_id=c2))
    partly = await rt.deliver(*env.outcome("b1", "cj_assessment", c2, processed=ids))
    partly_done = _one(partly, Topic.PIPELINE_COMPLETED)
    assert partly_done["skipped_phases"] == ["spellcheck", "nlp", "ai_feedback"]
    assert (partly_done["successful_essay_count"], partly_done["failed_essay_count"]) == (2, 1)

    c3 = str(uuid.uuid4())
    pruned = await rt.deliver(*env.request("b1", "ai_feedback", correlation_id=c3))
    done = _one(pruned, Topic.PIPELINE_COMPLETED)
    assert done["completed_phases"] == []
    assert done["skipped_phases"] == ["spellcheck", "nlp", "ai_feedback"]
    assert (done["successful_essay_count"], done["failed_essay_count"]) == (2, 0)
    note = _one(pruned, Topic.TEACHER_NOTIFICATION, "pipeline_completed")
    assert (note["priority"], note["action_required"]) == ("high", False)
    concepts = " ".join((ROOT / "docs" / "concepts.md").read_text(encoding="utf-8").split())
    assert "An item *entered the run* when it was sent to a phase of this run" in concepts


async def test_a_final_step_that_produced_no_outputs_ends_the_run_as_the_docs_say() -> None:
    """Was a defect in the docs (found by an attack on the wire contract): they said the
    guard checks that the final step *produced outputs*; it checks that it completed.

    docs/concepts.md ("Alternatives"): a run's ``finish`` goes to ``completed_successfully``
    if every phase succeeded, "*else* to ``completed_with_failures`` if the final step
    produced outputs, *else* to ``failed_critically``"; the generated lifecycle reference
    (docs/reference/lifecycles.md) describes the guard ``final_step_done`` as "the
    pipeline's final step produced outputs".

    Run ``nlp`` on 3 essays: spellcheck 3/3, then nlp reports ``completed_with_failures``
    with no processed essay and all 3 failed. The final step produced no outputs
    (``successful_essay_count`` 0), yet the run ends ``completed_with_failures``: the guard
    (pipeline_state/_decide/completion.py:103 ``final_step_done``) checks the status
    (``is_done``), not the outputs. Expected: the code and the documentation of the guard
    agree (either the run ends ``failed_critically``, or the guard is documented as what it
    checks: the final step's status)."""
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    ids = await _ready(rt, env, "b1", 3)
    c1 = str(uuid.uuid4())
    await rt.deliver(*env.request("b1", "nlp", correlation_id=c1))
    await rt.deliver(*env.outcome("b1", "spellcheck", c1, processed=ids))
    out = await rt.deliver(*env.outcome("b1", "nlp", c1, status="completed_with_failures", failed=ids))
    done = _one(out, Topic.PIPELINE_COMPLETED)
    assert done["successful_essay_count"] == 0  # the final step produced no outputs

    assert done["final_status"] == "completed_with_failures"
    guard = RUN_LIFECYCLE.guards["final_step_done"]
    concepts = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    lifecycles = (ROOT / "docs" / "reference" / "lifecycles.md").read_text(encoding="utf-8")
    for text in (guard.doc, concepts, lifecycles):
        assert "produced outputs" not in text
    assert "final step completed, with or without failures" in guard.doc
    assert guard.doc in lifecycles
