"""Builders of valid inbound envelopes.

Used by tests, the demo and the stateful harness; handy in a service's own tests too::

    env = Envelopes()
    await rt.deliver(*env.register("b1", user_id="t1", essays=3))

Messages are written in the wire of the profile given (default: the shipped HuleEdu
profile): the builders make an engine input (:mod:`pipeline_state.inputs`) and the
profile's :class:`~pipeline_state.inbound.Inbound` encodes it (:meth:`Envelopes.send`), so
the same test reads for any profile; for HuleEdu's own wire they write the fields the
platform's services send. ``Envelopes`` also answers the phase commands the engine emits
(:meth:`Envelopes.phase_of`, :meth:`Envelopes.answer`) without spelling out their topics;
item ids are derived from the batch id unless given (``register(..., item_ids=[...])``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline_state.inputs import (
    ContentReady,
    EngineInput,
    GroupConfirmed,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state.model import ItemRef
from pipeline_state.profile import CommandSpec, Profile, command_fields
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.inbound import HULEEDU_INBOUND
from pipeline_state.profiles.huleedu.profile import HULEEDU_PHASE_COMMANDS

__all__ = ["Envelopes", "essay_refs"]

Delivery = tuple[str, dict[str, Any]]


def essay_refs(essay_ids: Iterable[str], suffix: str = "text") -> list[dict[str, str]]:
    """``[{essay_id, text_storage_id}]`` for the given ids."""
    return [{"essay_id": e, "text_storage_id": f"{e}-{suffix}"} for e in essay_ids]


def _item_refs(ids: Iterable[str], suffix: str) -> tuple[ItemRef, ...]:
    return tuple(ItemRef(i, f"{i}-{suffix}") for i in ids)


class Envelopes:
    """Makes ``(topic, envelope dict)`` pairs; ids are random unless given.

    ``profile`` (default: the shipped HuleEdu profile) tells which topics carry which
    phase's command, for :meth:`phase_of` and :meth:`answer`.
    """

    def __init__(
        self,
        source_service: str = "tests",
        timestamp: datetime | None = None,
        *,
        profile: Profile | None = None,
    ) -> None:
        self.source_service = source_service
        self.timestamp = timestamp or datetime(2025, 1, 1, tzinfo=UTC)
        self.profile = profile
        self._phase_topics: dict[str, str] | None = None
        self._inbound = HULEEDU_INBOUND if profile is None else profile.inbound
        self._native = self._inbound is HULEEDU_INBOUND

    def send(self, value: EngineInput, **kw: Any) -> Delivery:
        """The message of the profile's wire that carries ``value`` (``TypeError`` when the
        profile consumes no input of its kind)."""
        topic, data = self._inbound.encode(value)
        return self.wrap(topic, data, **kw)

    def wrap(
        self,
        topic: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Delivery:
        return topic, {
            "event_id": event_id or str(uuid.uuid4()),
            "event_type": topic,
            "event_timestamp": self.timestamp.isoformat(),
            "source_service": self.source_service,
            "schema_version": 1,
            "correlation_id": correlation_id or str(uuid.uuid4()),
            "data": data,
            "metadata": None,
        }

    @staticmethod
    def essay_ids(batch_id: str, count: int) -> list[str]:
        """The item ids :meth:`register` derives: ``<batch_id>-e0``, ``<batch_id>-e1``, ..."""
        return [f"{batch_id}-e{i}" for i in range(count)]

    def register(
        self,
        batch_id: str,
        *,
        user_id: str = "teacher-1",
        essays: int | None = None,
        item_ids: Sequence[str] | None = None,
        class_id: str | None = None,
        course_code: str = "ENG5",
        prompt: str | None = "prompt-1",
        **kw: Any,
    ) -> Delivery:
        """A registration of ``essays`` items (default 3) with the ids :meth:`essay_ids`
        derives, or of exactly ``item_ids`` (``essays`` then defaults to their number; give
        both to build a registration whose count and ids disagree)."""
        ids = list(item_ids) if item_ids is not None else None
        count = essays if essays is not None else (len(ids) if ids is not None else 3)
        if not self._native:
            named = tuple(ids if ids is not None else self.essay_ids(batch_id, count))
            value = RegisterBatch(
                batch_id, user_id, count, named, course_code, "en", group_id=class_id, prompt_ref=prompt
            )
            return self.send(value, **kw)
        data = {
            "batch_id": batch_id,
            "expected_essay_count": count,
            "essay_ids": ids if ids is not None else self.essay_ids(batch_id, count),
            "user_id": user_id,
            "class_id": class_id,
            "course_code": course_code,
            "student_prompt_ref": prompt,
        }
        return self.wrap(Topic.BATCH_REGISTER.value, data, **kw)

    def provisioned(self, batch_id: str, essay_ids: Sequence[str], **kw: Any) -> Delivery:
        if not self._native:
            return self.send(ContentReady(batch_id, _item_refs(essay_ids, "text")), **kw)
        data = {
            "batch_id": batch_id,
            "provisioned_count": len(essay_ids),
            "expected_count": len(essay_ids),
            "essays_for_processing": essay_refs(essay_ids),
        }
        return self.wrap(Topic.CONTENT_PROVISIONED.value, data, **kw)

    def associations(self, batch_id: str, class_id: str, essay_ids: Sequence[str], **kw: Any) -> Delivery:
        if not self._native:
            return self.send(GroupConfirmed(batch_id, class_id), **kw)
        data = {
            "batch_id": batch_id,
            "class_id": class_id,
            "associations": [{"essay_id": e, "student_id": f"student-{e}"} for e in essay_ids],
            "timeout_triggered": False,
        }
        return self.wrap(Topic.ASSOCIATIONS_CONFIRMED.value, data, **kw)

    def essays_ready(self, batch_id: str, essay_ids: Sequence[str], **kw: Any) -> Delivery:
        if not self._native:
            return self.send(ItemsReady(batch_id, _item_refs(essay_ids, "text")), **kw)
        data = {"batch_id": batch_id, "ready_essays": essay_refs(essay_ids)}
        return self.wrap(Topic.ESSAYS_READY.value, data, **kw)

    def validation_errors(self, batch_id: str, *, critical: bool = True, **kw: Any) -> Delivery:
        if not self._native:
            return self.send(ValidationFailed(batch_id, critical), **kw)
        data = {"batch_id": batch_id, "error_summary": {"total_errors": 1, "critical_failure": critical}}
        return self.wrap(Topic.VALIDATION_ERRORS.value, data, **kw)

    def request(
        self,
        batch_id: str,
        pipeline: str,
        *,
        user_id: str = "teacher-1",
        correlation_id: str | None = None,
        prompt_payload: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Delivery:
        corr = correlation_id or str(uuid.uuid4())
        if not self._native:
            value = RequestPipeline(batch_id, pipeline, user_id, prompt=prompt_payload)
            return self.send(value, correlation_id=corr, **kw)
        data = {
            "batch_id": batch_id,
            "requested_pipeline": pipeline,
            "client_correlation_id": corr,
            "user_id": user_id,
            "is_retry": False,
            "prompt_payload": prompt_payload,
        }
        return self.wrap(Topic.PIPELINE_REQUEST.value, data, correlation_id=corr, **kw)

    def outcome(
        self,
        batch_id: str,
        phase: str,
        correlation_id: str,
        *,
        processed: Sequence[str] = (),
        failed: Sequence[str] = (),
        status: str | None = None,
        suffix: str | None = None,
        **kw: Any,
    ) -> Delivery:
        if status is None:
            status = (
                "completed_successfully"
                if not failed
                else ("completed_with_failures" if processed else "failed_critically")
            )
        if not self._native:
            refs = _item_refs(processed, suffix or phase)
            value = PhaseOutcome(batch_id, phase, status, refs, tuple(failed), correlation_id)  # type: ignore[arg-type]
            return self.send(value, correlation_id=correlation_id, **kw)
        data = {
            "batch_id": batch_id,
            "phase_name": phase,
            "phase_status": status,
            "processed_essays": essay_refs(processed, suffix or phase),
            "failed_essay_ids": list(failed),
            "correlation_id": correlation_id,
        }
        return self.wrap(Topic.PHASE_OUTCOME.value, data, correlation_id=correlation_id, **kw)

    # -- answering the engine's phase commands ------------------------------------------------
    def phase_topics(self) -> Mapping[str, str]:
        """Command topic: phase name, for the profile given (default: HuleEdu's)."""
        if self._phase_topics is None:
            self._phase_topics = {spec.topic: phase for phase, spec in self._commands().items()}
        return self._phase_topics

    def _commands(self) -> Mapping[str, CommandSpec]:
        return self.profile.phase_commands if self.profile is not None else HULEEDU_PHASE_COMMANDS

    def phase_of(self, message: Mapping[str, Any]) -> str | None:
        """The phase whose command ``message`` (one ``{"topic", "key", "value"}`` the engine
        emitted) is, or ``None`` for any other message."""
        return self.phase_topics().get(message["topic"])

    def sent_item_ids(self, message: Mapping[str, Any]) -> list[str]:
        """The ids of the items the phase command ``message`` sent, read under the names its
        model declares (:class:`~pipeline_state.profile.CommandFields`). Raises ``ValueError``
        for a message that is not a phase command of the profile."""
        phase = self.phase_of(message)
        if phase is None:
            raise ValueError(f"{message.get('topic')!r} is not the command topic of a phase of the profile")
        names = command_fields(self._commands()[phase].model)
        return [item[names.item_id] for item in message["value"]["data"][names.items]]

    def answer(
        self,
        message: Mapping[str, Any],
        *,
        failed: Iterable[str] = (),
        status: str | None = None,
        suffix: str | None = None,
        **kw: Any,
    ) -> Delivery:
        """The outcome of the phase command ``message``: every item it sent is processed
        except ``failed``, under the command's correlation id; ``status`` defaults as in
        :meth:`outcome`. Raises ``ValueError`` for a message that is not a phase command of
        the profile, or ``failed`` ids the command did not send (build such an outcome with
        :meth:`outcome`)."""
        phase = self.phase_of(message)
        if phase is None:
            raise ValueError(f"{message.get('topic')!r} is not the command topic of a phase of the profile")
        value = message["value"]
        data = value["data"]
        failing = set(failed)
        sent = self.sent_item_ids(message)
        unsent = sorted(failing.difference(sent))
        if unsent:
            raise ValueError(f"failed names items the {phase} command did not send: {unsent}")
        return self.outcome(
            data["batch_id"],
            phase,
            value["correlation_id"],
            processed=[i for i in sent if i not in failing],
            failed=[i for i in sent if i in failing],
            status=status,
            suffix=suffix,
            **kw,
        )
