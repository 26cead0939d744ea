"""Re-inject dead-lettered records from ``<topic>.DLQ`` after a fix.

Each dead letter is handled like a record consumed from its topic, through
:class:`~pipeline_state._service.PipelineService` against the store (so ``decide`` decides,
the inbox dedupes, the transition log records it with who asked, and the outbox rows it
writes are published by the running relay). It keeps its own event id, so a letter that
was re-injected before, or that the consumer handled after all, is a duplicate; a fact
that waited too long (its inbox says ``dead_lettered:...``) gets an id derived from its own
(and one derived from that when it was re-injected too early and dead-lettered again).
A letter that still cannot apply is reported and left in the dead-letter topic, and so is a
truncated copy (a record too large for the dead-letter topic), which cannot be replayed.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from typing import Any

import attrs

from pipeline_state._commands import Command
from pipeline_state._profile import Profile
from pipeline_state._service import PipelineService
from pipeline_state.errors import InvalidMessageError

from .exits import ExitCode, OperatorError, in_range, one_line
from .output import emit
from .session import deployment, open_service, operator_name

__all__ = ["MAX_TIMEOUT_SECONDS", "reinject"]

MAX_TIMEOUT_SECONDS = 3600.0
"""The longest ``--timeout``: an hour of waiting for a broker is a hung command."""


def _fails_alone(error: Exception) -> bool:
    """Whether ``error`` makes one letter fail while the others go on: whatever the consumer
    would not retry, as it dead-letters it (bad input, a command that can never apply, a
    stored batch it cannot read, and an error it dead-letters after repeated unexpected
    failures: a rule of the database refusing the batch, say) and an illegal move. What the
    consumer retries (the store or broker out of reach) stops the command: the letters after
    it would fail the same way."""
    from pipeline_state_kafka.policy import ErrorPolicy, Verdict

    return ErrorPolicy().classify(error) is not Verdict.RETRY


@attrs.frozen
class Reinjected:
    """What re-injecting one dead letter did."""

    partition: int
    offset: int
    event_id: str | None
    batch_id: str | None
    result: str
    error: str | None = None


def _dlq_name(args: argparse.Namespace, profile: Profile) -> str:
    if args.topic not in profile.inbound:
        known = ", ".join(profile.inbound.names)
        raise OperatorError(ExitCode.USAGE, f"--topic {args.topic!r} is not a consumed topic ({known})")
    from pipeline_state_kafka.dlq import dlq_topic

    return f"{args.topic_prefix}{dlq_topic(args.topic)}"


async def _one(service: PipelineService, topic: str, origin: str, letter: Any, actor: str) -> Reinjected:
    raw: bytes = letter.value or b""
    where = {"partition": letter.partition, "offset": letter.offset}
    if letter.headers.get("dlq_truncated") == "1":
        size, digest = (
            letter.headers.get("dlq_original_size", "?"),
            letter.headers.get("dlq_original_sha256", "?"),
        )
        error = f"a truncated copy (the original had {size} bytes, sha256 {digest}): replay the original"
        return Reinjected(**where, event_id=None, batch_id=None, result="failed", error=error)
    try:
        envelope, payload = service.profile.inbound.parse(topic, raw, limits=service.limits)
    except InvalidMessageError as exc:
        return Reinjected(**where, event_id=None, batch_id=None, result="failed", error=one_line(exc))
    # A fact the waiting sweep dead-lettered is handled under the id its replay derives
    # (pipeline_state._replay): the service finds it, and answers it in the result.
    event_id = str(envelope.event_id)
    command = Command(payload, event_id, str(envelope.correlation_id), requested_by=actor)
    batch_id = command.batch_id
    named = letter.headers.get("dlq_original_topic")
    if named is not None and named != origin:
        # A letter this deployment's consumer or sweeper wrote names the topic it re-injects.
        error = f"a letter of {named!r}, not of {origin!r}: not re-injected here"
        return Reinjected(**where, event_id=event_id, batch_id=batch_id, result="failed", error=error)
    try:
        result = await service.handle(command, topic=topic, raw=raw)
    except Exception as exc:
        if not _fails_alone(exc):
            raise
        return Reinjected(**where, event_id=event_id, batch_id=batch_id, result="failed", error=one_line(exc))
    return Reinjected(**where, event_id=result.event_id, batch_id=batch_id, result=result.label)


async def reinject(args: argparse.Namespace) -> int:
    """``dlq reinject --kafka HOST:PORT --topic T [--limit N]``."""
    if args.limit is not None and args.limit < 1:
        raise OperatorError(ExitCode.USAGE, "--limit must be >= 1")
    # NaN and infinity are no timeouts: the reader waits ``int(timeout * 1000)`` ms per poll.
    in_range("--timeout", args.timeout, 0.001, MAX_TIMEOUT_SECONDS)
    if not args.kafka:
        raise OperatorError(ExitCode.USAGE, "--kafka is required (or set $PIPELINE_STATE_KAFKA)")
    from pipeline_state_kafka.errors import KafkaSettingsError
    from pipeline_state_kafka.settings import TOPIC_PREFIX_PATTERN, check_bootstrap

    try:
        check_bootstrap(args.kafka, "--kafka (or $PIPELINE_STATE_KAFKA)")
    except KafkaSettingsError as exc:
        raise OperatorError(ExitCode.USAGE, str(exc)) from None
    if len(args.topic_prefix) > 100 or not re.fullmatch(TOPIC_PREFIX_PATTERN, args.topic_prefix):
        raise OperatorError(
            ExitCode.USAGE,
            f"--topic-prefix {args.topic_prefix[:100]!r}: the characters of a Kafka topic name "
            "(ASCII letters, digits, '.', '_', '-'), at most 100, as serve takes it",
        )
    actor = operator_name(args.actor)
    settings = deployment(args)
    name = _dlq_name(args, settings.profile)
    from pipeline_state_kafka.dlq_reader import read_dead_letters

    done: list[Reinjected] = []
    attempted = 0
    origin = f"{args.topic_prefix}{args.topic}"
    try:
        async with open_service(args, settings=settings) as service:
            letters = read_dead_letters(args.kafka, name, patience=args.timeout)
            async with contextlib.aclosing(letters):
                async for letter in letters:
                    outcome = await _one(service, args.topic, origin, letter, actor)
                    done.append(outcome)
                    attempted += outcome.result != "duplicate"
                    if args.limit is not None and attempted >= args.limit:
                        break
    except Exception:
        if done:  # what was re-injected before the store or broker failed (the error follows)
            _report(args, name, done)
        raise
    return _report(args, name, done)


def _report(args: argparse.Namespace, name: str, done: list[Reinjected]) -> int:
    """Print what re-injecting ``done`` did; the exit code (1 when a letter failed)."""
    failed = [d for d in done if d.result == "failed"]
    doc = {"topic": name, "letters": [attrs.asdict(d) for d in done], "failed": len(failed)}

    def text() -> list[str]:
        lines = [
            f"{name}[{d.partition}]@{d.offset}  {d.event_id or '-'}  batch {d.batch_id or '-'}  {d.result}"
            + (f": {d.error}" if d.error else "")
            for d in done
        ]
        counts: dict[str, int] = {}
        for d in done:
            counts[d.result.partition(":")[0]] = counts.get(d.result.partition(":")[0], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no dead letter"
        return [*lines, f"{name}: {summary}"]

    emit(doc, as_json=args.json, text=text)
    return ExitCode.REFUSED if failed else ExitCode.OK
