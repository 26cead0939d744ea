"""The topics a custom profile's ``Outbound`` announces on are checked when it is built.

Was a defect (found by an attack on the generic seam).

Command topics are checked when a profile is built (``_check_text`` in
``pipeline_state/_profile.py``: 1 to 200 characters, no control characters, "it travels in
every envelope"); the topics of the events its ``outbound`` announces are found when the
profile is built (``Profile.event_topics`` / ``announced_events``) but their text is not
checked. A profile whose completion report goes to a topic with a NUL (or of more than 200
characters, which no envelope's ``event_type`` may be) builds. With a NUL, on PostgreSQL the
unit of work that finishes a run cannot be written (the outbox row is refused:
``RejectedDataError``), so the outcome that ends
the run fails, every time it is retried: the run never completes and its batch stays in
``processing_pipelines`` (contract section 2, "Completion (exactly once per run)"; "No run
blocks its batch for ever"). Now such a topic is a ``DefinitionError`` when the profile is
built, as a command topic with the same text is.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import attrs
import pytest

from pipeline_state import PipelineService, Profile
from pipeline_state.errors import DefinitionError
from pipeline_state.profiles import load_profile
from pipeline_state.testing import Envelopes

MEDIA = load_profile(f"{Path(__file__).resolve().parents[2] / 'examples' / 'custom_catalog.py'}:MEDIA")
MediaOutbound = type(MEDIA.outbound)

pytestmark = pytest.mark.timeout(120)

BAD_TOPICS = {"nul": "media.release\x00report.v1", "long": "media.release.report." + "x" * 280}


def _reporting_on(topic: str) -> Profile:
    class Reports(MediaOutbound):
        def completed(self, state: Any, summary: Any) -> Any:
            return tuple(attrs.evolve(o, topic=topic) for o in super().completed(state, summary))

    return attrs.evolve(MEDIA, name="media-bad-report", outbound=Reports())


@pytest.mark.parametrize("bad", sorted(BAD_TOPICS))
def test_an_event_topic_no_envelope_or_outbox_can_carry_is_refused_when_built(bad: str) -> None:
    """Expected: ``DefinitionError`` at load time, as for a command topic with the same text.
    (It built, before the fix.)"""
    with pytest.raises(DefinitionError):
        _reporting_on(BAD_TOPICS[bad])


@pytest.mark.parametrize("bad", ["nul"])
async def test_a_run_of_the_accepted_profile_completes_on_postgres(bad: str) -> None:
    """The run's last outcome must complete it (one report, batch ready again)."""
    from pipeline_state_sql.store import open_store

    from tests.http.serving import pg_schema, postgres_url

    try:
        profile = _reporting_on(BAD_TOPICS[bad])
    except DefinitionError:
        return  # refused at load time: the expected behaviour
    env = Envelopes(profile=profile)
    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_att_out") as schema:
        store = await open_store(url, schema=schema)
        try:
            service = PipelineService(store, profile=profile)
            ids = env.item_ids("s1", 1)
            await service.handle_message(*env.register("s1", items=1, category="MEDIA", prompt=None))
            await service.handle_message(*env.provisioned("s1", ids))
            await service.handle_message(*env.request("s1", "preview"))
            corr = (await store.load("s1")).active_run.correlation_id  # type: ignore[union-attr]
            await service.handle_message(*env.outcome("s1", "transcode", corr, processed=ids))
            errors = []
            for _ in range(2):  # the consumer retries the record; it fails the same way
                try:
                    await service.handle_message(*env.outcome("s1", "thumbnails", corr, processed=ids))
                    break
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            state = await store.load("s1")
            assert state is not None
            assert state.active_run is None, f"the run never completes: {errors}"
            assert state.status.value == "ready_for_pipeline_execution"
        finally:
            await store.close()
