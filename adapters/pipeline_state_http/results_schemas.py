"""Response models of the results routes: the JSON views of
:mod:`pipeline_state.profiles.huleedu.results.views` as pydantic models, so they appear in the OpenAPI schema.

Each model mirrors one view function field for field (the tests compare the two), and
``GET /v1/results/...`` answers exactly what :class:`~pipeline_state.profiles.huleedu.results.ResultsQueries`
returns.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchResultsSummary",
    "BatchResultsView",
    "ClassResultsView",
    "PhaseFigures",
    "PhaseOutcomeView",
    "ResultsRunView",
    "TeacherResultsView",
]


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PhaseFigures(_View):
    """One phase's figures: its status, essays that succeeded and failed, its duration."""

    status: str
    successful: int
    failed: int
    duration_seconds: float | None


class ResultsRunView(_View):
    """One completed run (``BatchPipelineCompletedV1``) with its figures."""

    run_id: str
    correlation_id: str
    pipeline_name: str
    final_status: str
    completed_phases: list[str]
    skipped_phases: list[str]
    processing_duration_seconds: float
    total_essays: int
    successful_essays: int
    failed_essays: int
    completed_at: str | None
    phase_results: dict[str, PhaseFigures]


class PhaseOutcomeView(_View):
    """A phase outcome of a run that has not completed yet."""

    correlation_id: str
    phase: str
    status: str
    successful: int
    failed: int
    observed_at: str | None


class BatchResultsView(_View):
    """The results read model of one batch (``ResultsQueries.batch_json``)."""

    batch_id: str
    status: str = Field(description="'registered', 'processing' or the latest run's final status")
    user_id: str | None
    class_id: str | None
    expected_essays: int | None
    essays_succeeded: int
    essays_failed: int
    completed_phases: list[str]
    phases: dict[str, PhaseFigures] = Field(description="each phase's latest figures")
    latest_run: ResultsRunView | None
    runs: list[ResultsRunView] = Field(description="completed runs, oldest first")
    in_progress: list[PhaseOutcomeView] = Field(description="outcomes of a run not completed yet")
    last_activity_at: str | None
    updated_at: str | None
    version: int


class BatchResultsSummary(_View):
    """A batch as a line of a class or teacher listing."""

    batch_id: str
    status: str
    user_id: str | None
    class_id: str | None
    essays_succeeded: int
    essays_failed: int
    latest_pipeline: str | None
    completed_at: str | None


class ClassResultsView(_View):
    """A class's summary and a page of its batches, by batch id (``ResultsQueries.class_json``)."""

    class_id: str
    batch_count: int
    batches_by_status: dict[str, int]
    essays_succeeded: int
    essays_failed: int
    batches: list[BatchResultsSummary]


class TeacherResultsView(_View):
    """A page of a teacher's batches, with counts by status over that page
    (``ResultsQueries.teacher_json``)."""

    user_id: str
    batch_count: int
    batches_by_status: dict[str, int]
    batches: list[BatchResultsSummary]
