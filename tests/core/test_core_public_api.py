"""The public surface: a curated ``__all__`` that matches what the package exports, and a
core that imports no I/O library."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pipeline_state

CURATED = {
    # lifecycles and statuses
    "BATCH_LIFECYCLE", "PHASE_LIFECYCLE", "RUN_LIFECYCLE", "BatchStatus", "Lifecycle", "PhaseStatus",
    "PipelineExecutionStatus", "RunStatus", "SharedMachine", "Transition", "define_lifecycle",
    # catalog and profile
    "Catalog", "Pipeline", "Plan", "Step", "CommandSpec", "Profile", "default_profile", "load_profile",
    # commands, decisions and state
    "ArchiveBatch", "CancelBatch", "CancelRun", "Command", "ExpireOverdue", "RecordPhaseCompletion",
    "RetryPhase", "Decision", "Emit", "Move", "decide", "BatchState", "ItemRef", "PhaseRun", "Run",
    # guards
    "AdmissionGuard", "AdmissionRequest", "CreditLedger", "CreditsGuard", "Denial", "InMemoryCreditLedger",
    "PromptGuard", "RateLimitGuard",
    # the generic wire (a profile's topics and models live with the profile)
    "EventEnvelope", "TopicSpec", "WireModel",
    # ports, adapters in memory, service, relay, runtime
    "Change", "Clock", "InboxEntry", "Outbox", "OutboxMessage", "OutboxRow", "Publisher", "Store",
    "TransitionRecord", "BatchingStore", "InboundMessage", "InMemoryBus", "InMemoryStore",
    "ManualClock", "SystemClock", "HandleResult",
    "PipelineService", "OutboxRelay", "RelayReport", "InMemoryRuntime", "snapshot",
    # errors
    "PipelineStateError", "DefinitionError", "CatalogError", "IllegalTransitionError",
    "InvalidMessageError", "UnknownTopicError", "BadCommandError", "BatchNotFoundError",
    "BatchConflictError", "UnknownPipelineError", "StoreError", "ConcurrencyConflictError",
    "DuplicateEventError", "StoreUnavailableError", "CorruptStateError", "PublishError",
}  # fmt: skip

BLOCKED = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "aiokafka",
    "fastapi",
    "httpx",
    "uvicorn",
    "starlette",
    "rich",
)


def test_all_is_the_curated_list_without_duplicates() -> None:
    assert len(pipeline_state.__all__) == len(set(pipeline_state.__all__))
    assert set(pipeline_state.__all__) == CURATED


def test_every_exported_name_resolves_and_none_is_private() -> None:
    for name in pipeline_state.__all__:
        assert not name.startswith("_"), name
        assert getattr(pipeline_state, name) is not None, name


def test_all_matches_the_public_names_of_the_package() -> None:
    public = {
        name
        for name, value in vars(pipeline_state).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }
    assert public == set(pipeline_state.__all__)
    namespace: dict[str, object] = {}
    exec("from pipeline_state import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(pipeline_state.__all__)


def test_errors_share_one_root() -> None:
    errors = [getattr(pipeline_state, n) for n in pipeline_state.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, pipeline_state.PipelineStateError) for e in errors)


def test_core_imports_and_runs_with_io_libraries_blocked() -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys

        BLOCKED = {BLOCKED!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked import of {{name}}")
                return None

        sys.meta_path.insert(0, Blocker())

        import pipeline_state
        from pipeline_state import InMemoryRuntime
        from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

        async def main():
            rt, env = InMemoryRuntime(), HuleEduEnvelopes()
            ids = env.item_ids("b1", 2)
            await rt.deliver(*env.register("b1", items=2))
            await rt.deliver(*env.provisioned("b1", ids))
            corr = "6a1f6c33-3f7b-4d58-9a49-7b2b4a0e5c11"
            await rt.deliver(*env.request("b1", "nlp", correlation_id=corr))
            await rt.deliver(*env.outcome("b1", "spellcheck", corr, processed=ids))
            out = await rt.deliver(*env.outcome("b1", "nlp", corr, processed=ids))
            assert out[0]["value"]["data"]["final_status"] == "completed_successfully", out
            snap = await rt.snapshot("b1")
            assert snap["status"] == "ready_for_pipeline_execution", snap

        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_blocker_really_blocks() -> None:
    script = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'httpx': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "import httpx\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "blocked" in proc.stderr
