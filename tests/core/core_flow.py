"""Helpers shared by the core behaviour tests: drive an :class:`InMemoryRuntime` through the
usual steps (register, provision, request, outcomes) and pick messages out of its output.

Not a test module: ``conftest.py`` puts this folder on ``sys.path`` so the test files can
``from core_flow import Flow``.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from pipeline_state import InMemoryRuntime
from pipeline_state.ports import BatchState
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

__all__ = ["Flow", "Message", "Started", "datas", "load_example", "new_id", "one", "refs", "topics"]

Message = dict[str, Any]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """The module ``examples/<name>.py``, imported (as ``_example_<name>``)."""
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


def new_id() -> str:
    """A fresh UUID string (event ids, correlation ids)."""
    return str(uuid.uuid4())


def topics(out: Sequence[Message]) -> list[str]:
    """The topics of ``out``, in order."""
    return [m["topic"] for m in out]


def datas(out: Sequence[Message], topic: str) -> list[dict[str, Any]]:
    """The ``data`` payloads of the messages of ``out`` on ``topic``, in order."""
    return [m["value"]["data"] for m in out if m["topic"] == topic]


def one(out: Sequence[Message], topic: str) -> dict[str, Any]:
    """The ``data`` of the only message of ``out`` on ``topic`` (fails if not exactly one)."""
    found = datas(out, topic)
    assert len(found) == 1, f"expected one message on {topic}, got {len(found)}: {topics(out)}"
    return found[0]


def refs(out: Sequence[Message], topic: str) -> list[tuple[str, str | None]]:
    """``(essay_id, text_storage_id)`` pairs of the only command on ``topic`` in ``out``."""
    return [(e["essay_id"], e["text_storage_id"]) for e in one(out, topic)["essays_to_process"]]


@attrs.frozen
class Started:
    """An accepted request: what it emitted, its correlation id and its run id."""

    out: list[Message]
    correlation_id: str
    run_id: str


class Flow:
    """Drives one runtime with builder envelopes."""

    def __init__(self, rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
        self.rt = rt
        self.env = env

    async def register(self, batch_id: str = "b1", *, items: int = 3, **kw: Any) -> list[Message]:
        return await self.rt.deliver(*self.env.register(batch_id, items=items, **kw))

    async def ready(self, batch_id: str = "b1", *, items: int = 3, **kw: Any) -> list[str]:
        """Register a guest batch and provision its content; returns the essay ids."""
        await self.register(batch_id, items=items, **kw)
        ids = self.env.item_ids(batch_id, items)
        await self.rt.deliver(*self.env.provisioned(batch_id, ids))
        state = await self.state(batch_id)
        assert state.status.value == "ready_for_pipeline_execution", state.status
        return ids

    async def request(self, batch_id: str, pipeline: str, **kw: Any) -> list[Message]:
        return await self.rt.deliver(*self.env.request(batch_id, pipeline, **kw))

    async def start(self, batch_id: str, pipeline: str, **kw: Any) -> Started:
        """Request ``pipeline`` and check it was accepted."""
        out = await self.request(batch_id, pipeline, **kw)
        assert Topic.PIPELINE_DENIED.value not in topics(out), out
        state = await self.state(batch_id)
        run = state.active_run if state.active_run is not None else state.history[-1]
        return Started(out, run.correlation_id, run.run_id)

    async def outcome(self, batch_id: str, phase: str, correlation_id: str, **kw: Any) -> list[Message]:
        return await self.rt.deliver(*self.env.outcome(batch_id, phase, correlation_id, **kw))

    async def state(self, batch_id: str = "b1") -> BatchState:
        return await self.rt.service.get_batch(batch_id)

    async def version(self, batch_id: str = "b1") -> int:
        return (await self.state(batch_id)).version

    async def inbox_result(self, event_id: str) -> str | None:
        entry = await self.rt.store.inbox_entry(event_id)
        return None if entry is None else entry.result
