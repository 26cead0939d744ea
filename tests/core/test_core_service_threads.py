"""A service used from several event loops at once, one per thread (supported: each loop
groups its own calls, the in-memory store takes a lock): the bookkeeping of new batches to
settle (``PipelineService._unsettled``) is shared by the threads."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

from pipeline_state import HandleResult, InboundMessage, InMemoryStore, ManualClock, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


def _unlucky_switch(frame: FrameType, event: str, arg: Any) -> None:
    """Give the other thread the GIL right before any ``set.pop`` (a thread switch can fall
    there on any run; this makes it fall there every time)."""
    if (
        event == "c_call"
        and getattr(arg, "__name__", "") == "pop"
        and isinstance(getattr(arg, "__self__", None), set)
    ):
        time.sleep(0.0005)


def _in_two_threads(
    svc: PipelineService,
    messages_of: Callable[[str], list[InboundMessage]],
    switch: Callable[[FrameType, str, Any], None],
    check: Callable[[HandleResult], None] = lambda _: None,
) -> list[BaseException]:
    """Two threads, each with its own event loop, hand ``messages_of(prefix)`` to ``svc``
    one after the other (``switch`` set as the threads' profile hook, which forces a thread
    switch where it falls); the errors the calls raised (or ``check`` did)."""
    errors: list[BaseException] = []

    def run(prefix: str) -> None:
        async def main() -> None:
            for message in messages_of(prefix):
                try:
                    check(await svc.handle_message(*message))
                except Exception as exc:
                    errors.append(exc)

        asyncio.run(main())

    threading.setprofile(switch)
    try:
        threads = [threading.Thread(target=run, args=(p,)) for p in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)  # ~7 s: a switch forced at every list append
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    assert not any(t.is_alive() for t in threads)
    return errors


def test_two_threads_settling_new_batches_both_get_their_results() -> None:
    """Was a defect (fixed): two threads both saw the set of new batches to settle non-empty
    and both popped it; the second raised ``KeyError`` out of a call whose work committed."""
    env = HuleEduEnvelopes()
    svc = PipelineService(InMemoryStore(), clock=ManualClock())

    def messages_of(prefix: str) -> list[InboundMessage]:
        return [env.register(f"{prefix}{n}", items=1) for n in range(300)]

    errors = _in_two_threads(svc, messages_of, _unlucky_switch)
    # Every message was committed (each registration's batch exists) ...
    for p in ("a", "b"):
        for n in range(300):
            assert asyncio.run(svc.store.load(f"{p}{n}")) is not None
    # ... and so no caller should have been told otherwise. Observed: KeyError('pop from an
    # empty set') raised out of handle_message after its commit.
    assert [repr(e) for e in errors] == []


def _switch_inside_list_waiting(frame: FrameType, event: str, arg: Any) -> None:
    """Give the other thread the GIL while ``list_waiting`` walks a batch's waiting facts (a
    thread switch can fall there on any run; this makes it fall there often)."""
    if (
        event == "c_call"
        and frame.f_code.co_name == "list_waiting"
        and getattr(arg, "__name__", "") == "append"
    ):
        time.sleep(0.0002)


def test_memory_store_lists_waiting_facts_while_another_thread_keeps_one() -> None:
    """Was a defect (fixed): ``list_waiting`` raised "dictionary changed size during
    iteration". InMemoryStore: "atomic with respect to other threads too (a service used from several
    event loops, one per thread)". Two threads keep early facts of the same batches: one
    thread's read of a batch's waiting facts walks the dict the other's commit adds to."""
    env = HuleEduEnvelopes()
    svc = PipelineService(InMemoryStore(), clock=ManualClock())

    def messages_of(_: str) -> list[InboundMessage]:
        return [
            env.outcome(f"early{n % 2}", "spellcheck", str(uuid.uuid4()), processed=["e1"])
            for n in range(150)
        ]

    def waits(result: HandleResult) -> None:
        assert result.waiting is not None

    errors = _in_two_threads(svc, messages_of, _switch_inside_list_waiting, waits)
    # Observed: RuntimeError('dictionary changed size during iteration') from
    # InMemoryStore.list_waiting, raised out of handle_message.
    assert [repr(e) for e in errors] == []
    assert asyncio.run(svc.store.count_waiting()) == 300
