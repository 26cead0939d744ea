"""The media profile of ``examples/custom_catalog.py`` on the SQL store (issue 13): its own
inbound wire waits, survives a restart and completes its runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from pipeline_state_sql import SqlStore

from pipeline_state import ManualClock, PipelineService
from pipeline_state.profiles import load_profile
from pipeline_state.testing import Envelopes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"
StoreMaker = Callable[[], Awaitable[SqlStore]]


MEDIA = load_profile(f"{EXAMPLE}:MEDIA")


async def test_the_media_wire_waits_survives_a_restart_and_completes(make_store: StoreMaker) -> None:
    env, clock = Envelopes(profile=MEDIA), ManualClock()
    episodes = env.item_ids("s1", 3)
    store = await make_store()
    service = PipelineService(store, profile=MEDIA, clock=clock)
    request = env.request("s1", "release")
    sources = env.provisioned("s1", episodes)
    results = await service.handle_many([request, sources])
    assert [getattr(r, "waiting", None) for r in results] == ["batch_registration"] * 2
    await store.close()

    store = await make_store()  # a restart: the media facts wait in the database
    service = PipelineService(store, profile=MEDIA, clock=clock)
    assert [f.topic for f in await store.list_waiting("s1")] == [
        "media.release.requested.v1",
        "media.sources.uploaded.v1",
    ]
    opened = await service.handle_message(*env.register("s1", item_ids=episodes))
    assert len(opened.resumed) == 2
    pending = [m.as_dict() for m in opened.all_messages]
    answered: list[str] = []
    while pending:
        message = pending.pop(0)
        phase = env.phase_of(message)
        if phase is None:
            continue
        answered.append(phase)
        handled = await service.handle_message(*env.answer(message))
        pending += [m.as_dict() for m in handled.all_messages]

    state = await service.get_batch("s1")
    assert sorted(answered) == ["captions", "publish", "thumbnails", "transcode"]
    assert state.active_run is None
    assert [r.status.value for r in state.history] == ["completed_successfully"]
    assert await store.count_waiting() == 0
    assert (await service.handle_message(*sources)).duplicate
    await store.close()
