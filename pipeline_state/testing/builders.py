"""Builders of valid inbound envelopes, for any profile.

Used by tests, the demo and the stateful harness; handy in a service's own tests too::

    env = Envelopes(profile=my_profile)
    await rt.deliver(*env.register("b1", owner="o1", items=3))

Each builder makes an engine input (:mod:`pipeline_state._inputs`) and the profile's
:class:`~pipeline_state._inbound.Inbound` encodes it (:meth:`Envelopes.send`), so the same
test reads for any profile (default: :func:`~pipeline_state.profiles.default_profile`).
``Envelopes`` also answers the phase commands the engine emits (:meth:`Envelopes.phase_of`,
:meth:`Envelopes.answer`) without spelling out their topics; item ids are derived from the
batch id unless given (``register(..., item_ids=[...])``). A profile's own kit may subclass
it to write its services' exact payloads (the shipped profile's does).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline_state._inputs import (
    ContentReady,
    EngineInput,
    GroupConfirmed,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state._model import ItemRef
from pipeline_state._profile import CommandSpec, Profile, command_fields
from pipeline_state.profiles import default_profile

__all__ = ["Delivery", "Envelopes", "item_refs"]

Delivery = tuple[str, dict[str, Any]]
"""A message to deliver: ``(topic, envelope dict)``."""


def item_refs(ids: Iterable[str], suffix: str) -> tuple[ItemRef, ...]:
    """An :class:`~pipeline_state._model.ItemRef` per id, its ref ``<id>-<suffix>``."""
    return tuple(ItemRef(i, f"{i}-{suffix}") for i in ids)


class Envelopes:
    """Makes ``(topic, envelope dict)`` pairs in the wire of ``profile``; ids are random
    unless given.

    ``profile`` (default: the default profile) tells how each input is written and which
    topics carry which phase's command, for :meth:`phase_of` and :meth:`answer`.
    """

    DEFAULT_OWNER = "owner-1"
    """Owner of registrations and requester of requests that do not name one."""
    DEFAULT_CATEGORY = "category-1"
    """Category of registrations that do not name one."""
    DEFAULT_LANGUAGE = "en"
    """Language of registrations that do not name one."""

    def __init__(
        self,
        source_service: str = "tests",
        timestamp: datetime | None = None,
        *,
        profile: Profile | None = None,
    ) -> None:
        self.source_service = source_service
        self.timestamp = timestamp or datetime(2025, 1, 1, tzinfo=UTC)
        self.profile = profile if profile is not None else default_profile()
        self._phase_topics: dict[str, str] | None = None

    def send(self, value: EngineInput, **kw: Any) -> Delivery:
        """The message of the profile's wire that carries ``value`` (``TypeError`` when the
        profile consumes no input of its kind)."""
        topic, data = self.profile.inbound.encode(value)
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
    def item_ids(batch_id: str, count: int) -> list[str]:
        """The item ids :meth:`register` derives: ``<batch_id>-e0``, ``<batch_id>-e1``, ..."""
        return [f"{batch_id}-e{i}" for i in range(count)]

    def registered_ids(self, batch_id: str, items: int | None, item_ids: Sequence[str] | None) -> list[str]:
        """The ids a registration names: ``item_ids`` when given, else ``items`` (default 3)
        derived ids."""
        if item_ids is not None:
            return list(item_ids)
        return self.item_ids(batch_id, 3 if items is None else items)

    def register(
        self,
        batch_id: str,
        *,
        owner: str | None = None,
        items: int | None = None,
        item_ids: Sequence[str] | None = None,
        group_id: str | None = None,
        category: str | None = None,
        language: str | None = None,
        prompt: str | None = "prompt-1",
        **kw: Any,
    ) -> Delivery:
        """A registration of ``items`` items (default 3) with the ids :meth:`item_ids`
        derives, or of exactly ``item_ids`` (``items`` then defaults to their number; give
        both to build a registration whose count and ids disagree)."""
        named = self.registered_ids(batch_id, items, item_ids)
        value = RegisterBatch(
            batch_id,
            owner or self.DEFAULT_OWNER,
            len(named) if items is None else items,
            tuple(named),
            category or self.DEFAULT_CATEGORY,
            language or self.DEFAULT_LANGUAGE,
            group_id=group_id,
            prompt_ref=prompt,
        )
        return self.send(value, **kw)

    def provisioned(self, batch_id: str, item_ids: Sequence[str], **kw: Any) -> Delivery:
        """The content of ``item_ids`` is stored (refs ``<id>-text``)."""
        return self.send(ContentReady(batch_id, item_refs(item_ids, "text")), **kw)

    def group_confirmed(
        self, batch_id: str, group_id: str, item_ids: Sequence[str] = (), **kw: Any
    ) -> Delivery:
        """The items of the batch are matched to the members of ``group_id`` (``item_ids``
        are the matched items, for a wire that lists them)."""
        return self.send(GroupConfirmed(batch_id, group_id), **kw)

    def items_ready(self, batch_id: str, item_ids: Sequence[str], **kw: Any) -> Delivery:
        """``item_ids`` passed validation (refs ``<id>-text``)."""
        return self.send(ItemsReady(batch_id, item_refs(item_ids, "text")), **kw)

    def validation_errors(self, batch_id: str, *, critical: bool = True, **kw: Any) -> Delivery:
        return self.send(ValidationFailed(batch_id, critical), **kw)

    def request(
        self,
        batch_id: str,
        pipeline: str,
        *,
        requested_by: str | None = None,
        correlation_id: str | None = None,
        prompt_payload: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Delivery:
        corr = correlation_id or str(uuid.uuid4())
        value = RequestPipeline(batch_id, pipeline, requested_by or self.DEFAULT_OWNER, prompt=prompt_payload)
        return self.send(value, correlation_id=corr, **kw)

    @staticmethod
    def outcome_status(processed: Sequence[str], failed: Sequence[str]) -> str:
        """The status an outcome of ``processed`` and ``failed`` items reports by default."""
        if not failed:
            return "completed_successfully"
        return "completed_with_failures" if processed else "failed_critically"

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
        status = status or self.outcome_status(processed, failed)
        refs = item_refs(processed, suffix or phase)
        value = PhaseOutcome(batch_id, phase, status, refs, tuple(failed), correlation_id)  # type: ignore[arg-type]
        return self.send(value, correlation_id=correlation_id, **kw)

    # -- answering the engine's phase commands ------------------------------------------------
    def phase_topics(self) -> Mapping[str, str]:
        """Command topic: phase name, for the profile given."""
        if self._phase_topics is None:
            self._phase_topics = {spec.topic: phase for phase, spec in self._commands().items()}
        return self._phase_topics

    def _commands(self) -> Mapping[str, CommandSpec]:
        return self.profile.phase_commands

    def phase_of(self, message: Mapping[str, Any]) -> str | None:
        """The phase whose command ``message`` (one ``{"topic", "key", "value"}`` the engine
        emitted) is, or ``None`` for any other message."""
        return self.phase_topics().get(message["topic"])

    def sent_item_ids(self, message: Mapping[str, Any]) -> list[str]:
        """The ids of the items the phase command ``message`` sent, read under the names its
        model declares (:class:`~pipeline_state._profile.CommandFields`). Raises ``ValueError``
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
