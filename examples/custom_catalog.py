"""The engine is generic: a media platform instead of an education one.

A custom catalog (built with ``Catalog.from_dict``) declares the pipelines of a video
publishing service, and a custom :class:`~pipeline_state.Profile` names the command that
starts each phase (its own command models, on the service's own topics, which declare the
names the engine fills them under: ``episodes``, each an ``episode_id`` and a ``source_uri``;
``publish``, which waits for two steps, also lists the file each of them produced, as the
profile's default fan-in merge does). The same engine then prunes, dispatches in parallel,
expires a phase deadline, skips dependents of a failed phase and completes every run
exactly once. The profile's own ``Outbound`` words what the engine announces: a release
report on the media topics instead of the education platform's completion event, skip and
refusal events of its own, and no registration event or owner notifications. Its inbound
wire is its own too: the profile's ``Inbound`` reads a season opened by a producer, its
source files uploaded, a release request and a step's report as the engine's inputs, and
writes them back for tests and demos.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

import attrs
from pydantic import Field

from pipeline_state import Catalog, CommandSpec, Inbound, InboundTopic, InMemoryRuntime, Profile, WireModel
from pipeline_state.ports import (
    BatchState,
    CommandFields,
    ContentReady,
    Denial,
    ItemRef,
    Notice,
    Outgoing,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    Run,
    RunSummary,
)
from pipeline_state.testing import Envelopes

MEDIA_COMMAND_FIELDS = CommandFields(
    items="episodes", item_id="episode_id", content_ref="source_uri", category="channel", group_id="series_id"
)
"""The names the engine fills the media commands under."""


class EpisodeRef(WireModel):
    """One episode of a command and where its (possibly processed) file is."""

    episode_id: str
    source_uri: str | None = None


class StepCommand(WireModel):
    """Base of the media commands: the engine fills the season id and its episodes."""

    command_fields: ClassVar[CommandFields] = MEDIA_COMMAND_FIELDS

    batch_id: str
    episodes: list[EpisodeRef]


class TranscodeCommand(StepCommand):
    """Start transcoding: ``episodes`` carries the episodes and their source files."""


class ThumbnailsCommand(StepCommand):
    """Render thumbnails from the transcoded files."""


class CaptionsCommand(StepCommand):
    """Write captions; the engine fills ``language`` from the batch."""

    language: str


class StepFile(WireModel):
    """Where one step left an episode's file."""

    step: str
    source_uri: str | None = None


class PublishedEpisode(EpisodeRef):
    """An episode to publish, with the file each step it waited for produced."""

    sources: list[StepFile] = Field(default_factory=list)


class PublishCommand(StepCommand):
    """Publish the episodes that came through thumbnails and captions: for each, the file
    each of them produced (``sources``, in plan order: thumbnails, then captions)."""

    command_fields: ClassVar[CommandFields] = attrs.evolve(
        MEDIA_COMMAND_FIELDS, dependency_refs="sources", dependency="step"
    )

    episodes: list[PublishedEpisode]  # type: ignore[assignment]


class ReleaseReportV1(WireModel):
    """How a run of the media platform ended."""

    season_id: str
    pipeline: str
    outcome: str
    episodes_done: int
    episodes_failed: int
    steps_done: list[str]


class StepSkippedV1(WireModel):
    season_id: str
    step: str
    why: str


class RequestRefusedV1(WireModel):
    season_id: str
    pipeline: str
    why: str


class SeasonOpenedV1(WireModel):
    """A producer opened a season of ``episodes`` episodes, in a series (the batch's group)
    or none."""

    season_id: str
    producer_id: str
    episodes: list[str]
    language: str = "en"
    series_id: str | None = None


class SourceFile(WireModel):
    episode_id: str
    uri: str


class SourcesUploadedV1(WireModel):
    """Every episode's source file is uploaded."""

    season_id: str
    files: list[SourceFile]


class ReleaseRequestedV1(WireModel):
    """Run one of the catalog's pipelines (``preview`` or ``release``) on a season."""

    season_id: str
    pipeline: str
    requested_by: str


class StepFinishedV1(WireModel):
    """A worker's report on one step: files it produced, episodes it could not do."""

    season_id: str
    step: str
    result: Literal["completed_successfully", "completed_with_failures", "failed_critically"]
    produced: list[SourceFile] = Field(default_factory=list)
    failed_episodes: list[str] = Field(default_factory=list)
    run_id: str


def _files(refs: tuple[ItemRef, ...]) -> list[dict[str, str | None]]:
    return [{"episode_id": r.item_id, "uri": r.content_ref} for r in refs]


def _refs(files: list[SourceFile]) -> tuple[ItemRef, ...]:
    return tuple(ItemRef(f.episode_id, f.uri) for f in files)


MEDIA_INBOUND = Inbound(
    (
        InboundTopic(
            "media.season.opened.v1",
            SeasonOpenedV1,
            RegisterBatch,
            lambda p: RegisterBatch(
                p.season_id,
                p.producer_id,
                len(p.episodes),
                tuple(p.episodes),
                "MEDIA",
                p.language,
                group_id=p.series_id,
            ),
            lambda r: {
                "season_id": r.batch_id,
                "producer_id": r.owner,
                "episodes": list(r.item_ids or ()),
                "language": r.language,
                **({} if r.group_id is None else {"series_id": r.group_id}),
            },
            key_field="season_id",
        ),
        InboundTopic(
            "media.sources.uploaded.v1",
            SourcesUploadedV1,
            ContentReady,
            lambda p: ContentReady(p.season_id, _refs(p.files)),
            lambda c: {"season_id": c.batch_id, "files": _files(c.items)},
            key_field="season_id",
        ),
        InboundTopic(
            "media.release.requested.v1",
            ReleaseRequestedV1,
            RequestPipeline,
            lambda p: RequestPipeline(p.season_id, p.pipeline, p.requested_by),
            lambda r: {"season_id": r.batch_id, "pipeline": r.pipeline, "requested_by": r.requested_by},
            key_field="season_id",
        ),
        InboundTopic(
            "media.step.finished.v1",
            StepFinishedV1,
            PhaseOutcome,
            lambda p: PhaseOutcome(
                p.season_id, p.step, p.result, _refs(p.produced), tuple(p.failed_episodes), p.run_id
            ),
            lambda o: {
                "season_id": o.batch_id,
                "step": o.phase,
                "result": o.status,
                "produced": _files(o.processed),
                "failed_episodes": list(o.failed),
                "run_id": o.correlation_id,
            },
            key_field="season_id",
        ),
    )
)
"""What the media orchestrator consumes: four topics of its own, no group matching (every
season, in a series or not, is ready once its sources are uploaded) and no validation step."""


class MediaOutbound:
    """The media platform's wording: reports and skips on its own topics, nothing else."""

    def registered(self, state: BatchState) -> tuple[Outgoing, ...]:
        return ()

    def phase_skipped(self, state: BatchState, run: Run, phase: str, reason: str) -> tuple[Outgoing, ...]:
        data = {"season_id": state.batch_id, "step": phase, "why": reason}
        return (Outgoing("media.step.skipped.v1", state.batch_id, StepSkippedV1, data, run.correlation_id),)

    def denied(self, state: BatchState, user_id: str, requested: str, denial: Denial) -> tuple[Outgoing, ...]:
        data = {"season_id": state.batch_id, "pipeline": requested, "why": denial.reason}
        return (Outgoing("media.request.refused.v1", state.batch_id, RequestRefusedV1, data),)

    def completed(self, state: BatchState, summary: RunSummary) -> tuple[Outgoing, ...]:
        run = summary.run
        data = {
            "season_id": state.batch_id,
            "pipeline": run.pipeline_name,
            "outcome": run.status.value,
            "episodes_done": summary.successful_items,
            "episodes_failed": summary.failed_items,
            "steps_done": list(run.completed_phases),
        }
        return (
            Outgoing("media.release.report.v1", state.batch_id, ReleaseReportV1, data, run.correlation_id),
        )

    def notify(self, notice: Notice) -> tuple[Outgoing, ...]:
        return ()


CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "preview": {
                "steps": [{"name": "transcode"}, {"name": "thumbnails", "depends_on": ["transcode"]}]
            },
            "release": {
                "steps": [
                    {"name": "transcode"},
                    {"name": "thumbnails", "depends_on": ["transcode"]},
                    {"name": "captions", "depends_on": ["transcode"], "deadline_seconds": 60},
                    {"name": "publish", "depends_on": ["thumbnails", "captions"]},
                ]
            },
        }
    }
)
MEDIA = Profile(
    name="media",
    catalog=CATALOG,
    phase_commands={
        "transcode": CommandSpec("media.transcode.start.v1", TranscodeCommand),
        "thumbnails": CommandSpec("media.thumbnails.start.v1", ThumbnailsCommand),
        "captions": CommandSpec("media.captions.start.v1", CaptionsCommand),
        "publish": CommandSpec("media.publish.start.v1", PublishCommand),
    },
    source_service="media_orchestrator",
    # publish lists two more files per episode: a season is bounded so that its largest
    # command still fits the default max_command_bytes (the profile checks it when built)
    max_items_per_batch=500,
    outbound=MediaOutbound(),
    inbound=MEDIA_INBOUND,
)
PHASE_OF = {spec.topic: phase for phase, spec in MEDIA.phase_commands.items()}


def show(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        topic, data = message["topic"], message["value"]["data"]
        if topic in PHASE_OF:
            print(f"  -> {topic} ({len(data['episodes'])} episodes)")
        elif topic == "media.step.skipped.v1":
            print(f"  -> skipped {data['step']}: {data['why']}")
        elif topic == "media.release.report.v1":
            print(f"  == {data['pipeline']}: {data['outcome']}, done {data['steps_done']}")
        else:
            raise AssertionError(f"the media profile emits nothing on {topic}")


async def run(rt: InMemoryRuntime, env: Envelopes, pipeline: str, *, stall: str | None = None) -> None:
    """Request ``pipeline`` and answer every phase command, except that ``stall`` never answers."""
    print(f"request {pipeline}")
    pending = await rt.deliver(*env.request("season-1", pipeline))
    show(pending)
    while pending:
        message = pending.pop(0)
        phase = PHASE_OF.get(message["topic"])
        if phase is None:
            continue
        rt.clock.advance(5)
        if phase == stall:
            rt.clock.advance(60)  # the captions service never answers: its deadline passes
            out = await rt.expire_overdue()
        else:
            ids = env.sent_item_ids(message)
            out = await rt.deliver(
                *env.outcome("season-1", phase, message["value"]["correlation_id"], processed=ids)
            )
        show(out)
        pending += out


async def main() -> None:
    rt, env = InMemoryRuntime(MEDIA), Envelopes(source_service="media_upload", profile=MEDIA)
    episodes = env.item_ids("season-1", 3)
    await rt.deliver(*env.register("season-1", items=3, category="MEDIA", prompt=None))
    await rt.deliver(*env.provisioned("season-1", episodes))
    # transcode, then thumbnails and captions in parallel; captions times out, publish is skipped
    await run(rt, env, "release", stall="captions")
    # transcode and thumbnails are pruned; captions runs again (failed steps are never pruned)
    await run(rt, env, "release")
    # every step of preview completed earlier: the run is accepted and completes at once
    await run(rt, env, "preview")
    snap = await rt.snapshot("season-1")
    print(f"history of {snap['batch_id']} ({snap['status']}):")
    for past in snap["history"]:
        print(f"  {past['pipeline_name']:8} {past['final_status']:23} ran {past['completed_phases']}")
    statuses = [past["final_status"] for past in snap["history"]]
    assert statuses == ["failed_critically", "completed_successfully", "completed_successfully"], statuses


if __name__ == "__main__":
    asyncio.run(main())
