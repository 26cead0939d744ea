"""The results package's public surface: a curated ``__all__``, and no I/O library imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pipeline_state.profiles.huleedu.results as results

CURATED = {
    # read model and facts
    "BatchResults", "ClassDelta", "ClassResults", "Owner", "PhaseOutcome", "PhaseResultView",
    "ResultsStatus", "RunCompletion", "ResultsFact", "PhaseDispatch", "PhasePruned",
    # projection
    "CONSUMED_TOPICS", "apply_fact", "cache_keys", "class_deltas", "fact_from_message",
    "pending_announcements", "project",
    # announcements
    "NOTIFICATION_CATEGORY", "NOTIFICATION_PRIORITY", "NOTIFICATION_TYPE", "announcement",
    # ports and adapters
    "CacheInvalidator", "ClassPageStore", "OwnerLookup", "ResultsChange", "ResultsStore",
    "InMemoryResultsStore",
    "NoopCacheInvalidator", "RecordingCacheInvalidator", "StoreOwnerLookup",
    # service, retention, queries, views, codec
    "ResultsHandled", "ResultsService", "DEFAULT_RETENTION", "RetentionPolicy", "ResultsQueries",
    "batch_summary", "batch_view", "class_view", "run_view", "teacher_view", "batch_from_document",
    "batch_to_document",
}  # fmt: skip


def test_all_is_curated_and_importable() -> None:
    assert set(results.__all__) == CURATED
    assert len(results.__all__) == len(CURATED)
    for name in results.__all__:
        assert getattr(results, name) is not None


def test_results_imports_no_driver() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"sqlalchemy", "aiosqlite", "asyncpg", "aiokafka", "fastapi",
                                           "httpx", "uvicorn", "alembic"}:
                    raise ImportError(f"blocked: {name}")
                return None
        sys.meta_path.insert(0, Block())
        import pipeline_state.profiles.huleedu.results
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
