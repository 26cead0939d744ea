"""How the demo shows its story: ``rich`` tables, or the same tables in plain ASCII.

The story is told in chapters (a batch's registration, then each pipeline run). A chapter
is a log of the messages the runtime received (simulated time, sender, short topic, the key
facts) with what each one made it emit, followed for a run by its phases and the key fields
of its ``BatchPipelineCompletedV1``. The demo ends with each batch's history and the results
view the result aggregator built from the same events (each batch's read model, each class's
summary, the announcements). ``plain`` output has no colours and only ASCII characters, for
logs and CI.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

import attrs
from rich.console import Console, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from pipeline_state.profiles.huleedu.events import Topic

from .platform import Delivery, Message

__all__ = ["Chapter", "Renderer", "describe", "outline", "short_topic"]

_SHORT: Mapping[str, str] = {
    Topic.BATCH_REGISTER.value: "batch.register",
    Topic.CONTENT_PROVISIONED.value: "content.provisioned",
    Topic.ASSOCIATIONS_CONFIRMED.value: "associations.confirmed",
    Topic.ESSAYS_READY.value: "essays.ready",
    Topic.VALIDATION_ERRORS.value: "validation.errors",
    Topic.PIPELINE_REQUEST.value: "pipeline.request",
    Topic.PHASE_OUTCOME.value: "phase.outcome",
    Topic.ESSAYS_REGISTERED.value: "essays.registered",
    Topic.STUDENT_MATCHING.value: "matching.cmd",
    Topic.SPELLCHECK.value: "spellcheck.cmd",
    Topic.CJ_ASSESSMENT.value: "cj_assessment.cmd",
    Topic.NLP.value: "nlp.cmd",
    Topic.AI_FEEDBACK.value: "ai_feedback.cmd",
    Topic.PHASE_SKIPPED.value: "phase.skipped",
    Topic.PIPELINE_DENIED.value: "pipeline.denied",
    Topic.PIPELINE_COMPLETED.value: "pipeline.completed",
    Topic.TEACHER_NOTIFICATION.value: "notify",
    Topic.RESULTS_READY.value: "results.ready",
}
_NOTICES: Mapping[str, str] = {
    "batch_processing_started": "started",
    "pipeline_completed": "finished",
    "pipeline_denied": "denied",
    "batch_results_ready": "results",
}
_STATUS_STYLE: Mapping[str, str] = {
    "completed_successfully": "green",
    "completed_with_partial_success": "yellow",
    "completed_with_failures": "yellow",
    "failed": "red",
    "failed_critically": "red",
    "cancelled": "red",
}


def short_topic(topic: str) -> str:
    """A short readable name for a topic: ``huleedu.els.batch.phase.outcome.v1`` -> ``phase.outcome``."""
    if topic in _SHORT:
        return _SHORT[topic]
    parts = topic.split(".")
    if parts and parts[0] == "huleedu":
        parts = parts[1:]
    if parts and parts[-1][:1] == "v" and parts[-1][1:].isdigit():
        parts = parts[:-1]
    return ".".join(parts[-2:])


def describe(message: Message) -> str:
    """The key facts of an inbound message, in a few words."""
    topic, data = message.topic, message.data
    if topic == Topic.BATCH_REGISTER.value:
        kind = "guest" if data.get("class_id") is None else f"class {data['class_id']}"
        prompt = "" if data.get("student_prompt_ref") else ", no prompt"
        return f"{data['expected_essay_count']} essays, {kind}{prompt}"
    if topic == Topic.CONTENT_PROVISIONED.value:
        return f"{data['provisioned_count']}/{data['expected_count']} essays stored"
    if topic == Topic.ASSOCIATIONS_CONFIRMED.value:
        return f"{len(data['associations'])} students matched"
    if topic == Topic.ESSAYS_READY.value:
        return f"{len(data['ready_essays'])} essays ready"
    if topic == Topic.PIPELINE_REQUEST.value:
        prompt = " + prompt" if data.get("prompt_payload") else ""
        return f"{data['requested_pipeline']}{prompt}"
    if topic == Topic.PHASE_OUTCOME.value:
        ok, failed = len(data["processed_essays"]), len(data["failed_essay_ids"])
        return f"{data['phase_name']}: {ok} ok, {failed} failed"
    return ""


def outline(message: Message) -> str:
    """What an emitted message says, in a few words."""
    topic, data = message.topic, message.data
    name = short_topic(topic)
    if topic == Topic.TEACHER_NOTIFICATION.value:
        kind = str(data["notification_type"])
        return f"notify:{_NOTICES.get(kind, kind)}"
    if topic == Topic.PHASE_SKIPPED.value:
        return f"skipped:{data['phase_name']}"
    if topic == Topic.PIPELINE_DENIED.value:
        return f"DENIED: {data['denial_reason']}"
    if topic == Topic.PIPELINE_COMPLETED.value:
        return f"COMPLETED: {data['final_status']}"
    if "essays_to_process" in data:
        return f"{name}({len(data['essays_to_process'])})"
    return name


@attrs.frozen
class Chapter:
    """A part of one batch's story: its deliveries and, for a run, the completion event."""

    title: str
    deliveries: Sequence[Delivery]
    notes: Mapping[int, str] = attrs.field(factory=dict)
    completion: Mapping[str, Any] | None = None
    pruned: tuple[str, ...] = ()


def _styled(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _emitted(delivery: Delivery) -> Text:
    """The emitted column: one styled phrase per message, or what happened instead."""
    if not delivery.emitted:
        if delivery.changed:
            return Text(f"(now {delivery.status_after})", style="dim")
        return Text("nothing, no change", style="dim")
    text = Text()
    for index, message in enumerate(delivery.emitted):
        if index:
            text.append(", ")
        style = {
            Topic.PIPELINE_DENIED.value: "bold red",
            Topic.PIPELINE_COMPLETED.value: "bold",
            Topic.TEACHER_NOTIFICATION.value: "dim",
            Topic.PHASE_SKIPPED.value: "cyan",
        }.get(message.topic, "")
        text.append(outline(message), style=style)
    return text


def _encodes(stream: IO[str], text: str) -> bool:
    """Whether ``stream``'s encoding can write ``text`` (unknown encodings: assume UTF-8)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class Renderer:
    """Writes the story to a console: rich (colours where the terminal has them) or plain.

    Plain output uses ASCII only, has no colours and no trailing spaces.
    """

    def __init__(self, *, plain: bool = False, file: IO[str] | None = None, width: int = 100) -> None:
        # A stream that cannot encode the rich output's arrows and rules (an ASCII terminal,
        # PYTHONIOENCODING=ascii) gets the plain story instead of an encoding error.
        plain = plain or not _encodes(file or sys.stdout, "→·─━│")
        self.plain = plain
        self.file = file
        if plain:
            self.console = Console(
                file=io.StringIO(), width=width, color_system=None, highlight=False, emoji=False
            )
        else:
            probe = Console(file=file)
            fit = min(probe.width, width) if probe.is_terminal else width
            self.console = Console(file=file, width=fit, highlight=False, emoji=False)
        self.arrow = "->" if plain else "→"
        self.dot = "|" if plain else "·"
        self.rule_char = "=" if plain else "─"

    def _print(self, *objects: RenderableType | str, markup: bool = True) -> None:
        if not self.plain:
            self.console.print(*objects, markup=markup)
            return
        with self.console.capture() as capture:
            self.console.print(*objects, markup=markup)
        lines = [line.rstrip() for line in capture.get().splitlines()]
        out = self.file or sys.stdout
        out.write("".join(f"{line}\n" for line in lines))

    def _rule(self, title: str) -> None:
        self._print(Rule(title, characters=self.rule_char, style="bold"))

    def _table(self, *columns: str, title: str | None = None) -> Table:
        table = Table(
            box=None,
            title=title,
            title_justify="left",
            title_style="bold",
            header_style="dim",
            pad_edge=False,
        )
        for column in columns:
            table.add_column(column, no_wrap=column in {"t", "run", "received"}, overflow="fold")
        return table

    # -- the story ------------------------------------------------------------------------
    def title(self, seed: int, batches: int) -> None:
        self._rule(f"pipeline-state demo {self.dot} seed {seed} {self.dot} {batches} batches")
        self._print(
            "The platform played in memory: each message the orchestrator received, "
            f"{self.arrow} what it emitted."
        )

    def batch_header(self, batch_id: str, class_id: str | None, essays: int, teacher: str) -> None:
        kind = "guest batch" if class_id is None else f"regular batch of {class_id}"
        self._print("")
        self._rule(f"{batch_id} {self.dot} {kind} {self.dot} {essays} essays {self.dot} {teacher}")

    def chapter(self, chapter: Chapter) -> None:
        self._print("")
        table = self._table("t", "received", "facts", f"{self.arrow} emitted", title=chapter.title)
        for index, delivery in enumerate(chapter.deliveries):
            facts = describe(delivery.message)
            note = chapter.notes.get(index)
            if note:
                facts = f"{facts} ({note})"
            table.add_row(
                f"{delivery.at:5.1f}s", short_topic(delivery.message.topic), Text(facts), _emitted(delivery)
            )
        self._print(table)
        if chapter.completion is not None:
            self.completion(chapter.completion, chapter.pruned)

    def completion(self, event: Mapping[str, Any], pruned: Sequence[str]) -> None:
        status = str(event["final_status"])
        title = Text.assemble(
            f"  run {str(event['run_id'])[:8]} {self.dot} {event['pipeline_name']} {self.arrow} ",
            _styled(status),
            f" {self.dot} {event['successful_essay_count']} essays through, "
            f"{event['failed_essay_count']} failed, {event['processing_duration_seconds']:.1f}s",
        )
        table = self._table("  phase", "status", "successful", "failed", "seconds")
        for phase in pruned:
            table.add_row(f"  {phase}", Text("skipped: already_completed", style="cyan"), "-", "-", "-")
        for phase, result in event["phase_results"].items():
            table.add_row(
                f"  {phase}",
                _styled(str(result["status"])),
                str(result["successful"]),
                str(result["failed"]),
                f"{result['duration_seconds']:.1f}",
            )
        completed = ", ".join(event["completed_phases"]) or "-"
        skipped = ", ".join(event["skipped_phases"]) or "-"
        self._print(title)
        self._print(table)
        self._print(Text(f"  completed_phases: {completed} {self.dot} skipped_phases: {skipped}"))

    def history(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        self._print("")
        self._rule("history")
        for snap in snapshots:
            table = self._table(
                "run",
                "pipeline",
                "final_status",
                "completed_phases",
                "skipped_phases",
                title=f"{snap['batch_id']} {self.dot} {snap['status']} {self.dot} version {snap['version']}",
            )
            for run in snap["history"]:
                table.add_row(
                    str(run["run_id"])[:8],
                    str(run["pipeline_name"]),
                    _styled(str(run["final_status"])),
                    ", ".join(run["completed_phases"]) or "-",
                    ", ".join(run["skipped_phases"]) or "-",
                )
            self._print(table)

    def results(
        self,
        views: Sequence[Mapping[str, Any]],
        classes: Sequence[Mapping[str, Any]],
        ready: int,
        notes: int,
    ) -> None:
        """The results read model of each batch, each class's summary and what was announced."""
        self._print("")
        self._rule("results")
        for view in views:
            kind = "guest" if view["class_id"] is None else str(view["class_id"])
            runs = len(view["runs"])
            title = Text.assemble(
                f"{view['batch_id']} {self.dot} ",
                _styled(str(view["status"])),
                f" {self.dot} {view['user_id']} {self.dot} {kind} {self.dot} "
                f"{view['essays_succeeded']} essays succeeded, {view['essays_failed']} failed "
                f"{self.dot} {runs} run{'s' if runs != 1 else ''}",
            )
            table = self._table("phase", "status", "successful", "failed", "seconds")
            for phase, figures in view["phases"].items():
                seconds = figures["duration_seconds"]
                table.add_row(
                    phase,
                    _styled(str(figures["status"])),
                    str(figures["successful"]),
                    str(figures["failed"]),
                    "-" if seconds is None else f"{seconds:.1f}",
                )
            self._print(title)
            self._print(table)
        for summary in classes:
            statuses = ", ".join(f"{s} {n}" for s, n in summary["batches_by_status"].items()) or "-"
            count = summary["batch_count"]
            self._print(
                Text(
                    f"class {summary['class_id']} {self.dot} {count} batch{'es' if count != 1 else ''}: "
                    f"{statuses} {self.dot} {summary['essays_succeeded']} essays succeeded, "
                    f"{summary['essays_failed']} failed"
                )
            )
        self._print(
            Text(
                f"announced: {ready} BatchResultsReadyV1 {self.dot} "
                f"{notes} batch_results_ready notifications (processing_results, high)"
            )
        )

    def verdict(self, passed: int, violations: Sequence[str]) -> None:
        if not violations:
            self._print(f"[green]OK[/green]: the story checked out ({passed} checks).")
            return
        self._print(
            f"[red]FAILED[/red]: {len(violations)} of {passed + len(violations)} checks did not hold:"
        )
        for violation in violations:
            self._print(f"  - {violation}", markup=False)
