"""The simulated platform: the downstream services of HuleEdu, in memory, driven by a seed.

:class:`Platform` is a small discrete-event loop around an
:class:`~pipeline_state._runtime.InMemoryRuntime`. Messages wait in a queue ordered by their
due time on the simulated clock. Each step takes the earliest one, moves the runtime's
:class:`~pipeline_state._clock.ManualClock` to its due time, delivers it to the runtime when
its topic is an inbound one, and hands it, and everything the delivery emitted, to the
services subscribed to those topics. A service answers with :class:`Reply` objects that are
queued after the service's simulated working time. Observers (:meth:`Platform.watch`, the
demo's result aggregator) see every message on their topics as it goes out, without answering.

The services are simple but honest about the contract: they validate the commands they
receive with the wire models, answer with valid payloads, give processed essays new
``text_storage_id`` values and, seeded, let some essays fail. Every service draws from its
own :class:`random.Random`, so one seed always gives the same story.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol

import attrs

from pipeline_state._runtime import InMemoryRuntime
from pipeline_state._wire import WireModel
from pipeline_state.profiles.huleedu.events import (
    INBOUND_TOPICS,
    TOPICS,
    BatchContentProvisioningCompletedV1,
    BatchEssaysReady,
    ELSBatchPhaseOutcomeV1,
    EssayProcessingInputRefV1,
    PhaseInitiateCommand,
    StudentAssociation,
    StudentAssociationsConfirmedV1,
    StudentMatchingInitiateCommandV1,
    Topic,
)

__all__ = [
    "ClassManagementService",
    "Delivery",
    "EssayLifecycleService",
    "Job",
    "Message",
    "Observer",
    "PhaseService",
    "Platform",
    "Reply",
    "Service",
    "SimulationError",
    "standard_services",
]

_INBOUND = frozenset(INBOUND_TOPICS)


class SimulationError(RuntimeError):
    """The simulated platform did not settle (a message loop or a runaway queue)."""


@attrs.frozen
class Message:
    """One message on the simulated bus: its topic, key and envelope dict."""

    topic: str
    key: str | None
    value: Mapping[str, Any]

    @property
    def data(self) -> Mapping[str, Any]:
        data: Mapping[str, Any] = self.value["data"]
        return data

    @property
    def correlation_id(self) -> str:
        return str(self.value["correlation_id"])

    @property
    def event_id(self) -> str:
        return str(self.value["event_id"])

    @property
    def sender(self) -> str:
        return str(self.value["source_service"])


@attrs.frozen
class Delivery:
    """One inbound message handled by the runtime, and what that did.

    ``at`` is the simulated time in seconds since the platform started; ``version_before``
    and ``version_after`` are the batch's versions around the delivery (``None`` while the
    batch does not exist) and ``status_after`` its status afterwards.
    """

    at: float
    message: Message
    emitted: tuple[Message, ...]
    version_before: int | None
    version_after: int | None
    status_after: str | None = None

    @property
    def changed(self) -> bool:
        return self.version_before != self.version_after


@attrs.frozen
class Reply:
    """A service's answer: ``payload`` goes out on ``topic`` after ``delay`` seconds."""

    topic: str
    payload: WireModel
    delay: float
    correlation_id: str | None = None


@attrs.frozen
class Job:
    """What a processing service was asked to do, and what it answered."""

    batch_id: str
    phase: str
    correlation_id: str
    inputs: tuple[tuple[str, str | None], ...]
    processed: tuple[tuple[str, str | None], ...]
    failed: tuple[str, ...]
    status: str


class Service(Protocol):
    """A simulated downstream service: the topics it listens to and how it reacts."""

    @property
    def name(self) -> str: ...

    @property
    def topics(self) -> tuple[str, ...]: ...

    def react(self, message: Message) -> Sequence[Reply]: ...


class Observer(Protocol):
    """Something that watches the bus: it is handed every message on its topics, in order."""

    @property
    def topics(self) -> tuple[str, ...]: ...

    async def observe(self, message: Message) -> None: ...


def _refs(items: Sequence[EssayProcessingInputRefV1]) -> tuple[tuple[str, str | None], ...]:
    return tuple((ref.essay_id, ref.text_storage_id) for ref in items)


def _working_time(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high) * 2) / 2


class EssayLifecycleService:
    """ELS: provisions content after registration; reports essays ready after matching."""

    name = "essay_lifecycle_service"
    topics = (Topic.ESSAYS_REGISTERED.value, Topic.ASSOCIATIONS_CONFIRMED.value)

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}:{self.name}")
        self.content: dict[str, list[EssayProcessingInputRefV1]] = {}

    def react(self, message: Message) -> Sequence[Reply]:
        if message.topic == Topic.ESSAYS_REGISTERED.value:
            batch_id = str(message.data["entity_id"])
            essays = [
                EssayProcessingInputRefV1(essay_id=e, text_storage_id=f"{e}.raw")
                for e in message.data["essay_ids"]
            ]
            self.content[batch_id] = essays
            provisioned = BatchContentProvisioningCompletedV1(
                batch_id=batch_id,
                provisioned_count=len(essays),
                expected_count=int(message.data["expected_essay_count"]),
                essays_for_processing=essays,
            )
            return [Reply(Topic.CONTENT_PROVISIONED.value, provisioned, _working_time(self.rng, 1.0, 3.0))]
        confirmed = StudentAssociationsConfirmedV1.model_validate(message.data)
        ready = BatchEssaysReady(batch_id=confirmed.batch_id, ready_essays=self.content[confirmed.batch_id])
        return [Reply(Topic.ESSAYS_READY.value, ready, 0.5)]


class ClassManagementService:
    """Class management: matches every essay to a student of the class."""

    name = "class_management_service"
    topics = (Topic.STUDENT_MATCHING.value,)

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}:{self.name}")

    def react(self, message: Message) -> Sequence[Reply]:
        command = StudentMatchingInitiateCommandV1.model_validate(message.data)
        associations = [
            StudentAssociation(essay_id=ref.essay_id, student_id=f"student-{self.rng.randrange(100, 999)}")
            for ref in command.essays_to_process
        ]
        confirmed = StudentAssociationsConfirmedV1(
            batch_id=command.batch_id, class_id=command.class_id, associations=associations
        )
        return [
            Reply(
                Topic.ASSOCIATIONS_CONFIRMED.value,
                confirmed,
                _working_time(self.rng, 2.0, 4.0),
                message.correlation_id,
            )
        ]


class PhaseService:
    """A processing service (spellcheck, CJ, NLP, AI feedback) answering its initiate command.

    Each essay fails with probability ``failure_rate`` (seeded), but at least one essay always
    comes through, so the phase ends ``completed_successfully`` or ``completed_with_failures``.
    Processed essays get a new ``text_storage_id`` (``<essay>.<phase>``). Every job is kept
    in :attr:`jobs` so the story can be checked afterwards.
    """

    def __init__(
        self,
        phase: str,
        topic: str,
        *,
        name: str,
        seed: int,
        failure_rate: float,
        working_time: tuple[float, float],
    ) -> None:
        self.phase = phase
        self.name = name
        self.topics = (topic,)
        self.failure_rate = failure_rate
        self.working_time = working_time
        self.rng = random.Random(f"{seed}:{name}")
        self.model: type[WireModel] = TOPICS[topic].model
        self.jobs: list[Job] = []

    def react(self, message: Message) -> Sequence[Reply]:
        command = self.model.model_validate(message.data)
        assert isinstance(command, PhaseInitiateCommand)
        essays = command.essays_to_process
        failing = {ref.essay_id for ref in essays if self.rng.random() < self.failure_rate}
        if len(failing) >= len(essays):
            failing.discard(essays[0].essay_id)
        processed = [
            EssayProcessingInputRefV1(essay_id=ref.essay_id, text_storage_id=f"{ref.essay_id}.{self.phase}")
            for ref in essays
            if ref.essay_id not in failing
        ]
        failed = [ref.essay_id for ref in essays if ref.essay_id in failing]
        status = "completed_with_failures" if failed else "completed_successfully"
        outcome = ELSBatchPhaseOutcomeV1(
            batch_id=command.batch_id,
            phase_name=self.phase,
            phase_status=status,
            processed_essays=processed,
            failed_essay_ids=failed,
            correlation_id=uuid.UUID(message.correlation_id),
        )
        self.jobs.append(
            Job(
                command.batch_id,
                self.phase,
                message.correlation_id,
                _refs(essays),
                _refs(processed),
                tuple(failed),
                status,
            )
        )
        delay = _working_time(self.rng, *self.working_time)
        return [Reply(Topic.PHASE_OUTCOME.value, outcome, delay, message.correlation_id)]


def standard_services(seed: int) -> list[Service]:
    """The HuleEdu services the demo plays: ELS, class management and the four phases."""
    return [
        EssayLifecycleService(seed),
        ClassManagementService(seed),
        PhaseService(
            "spellcheck",
            Topic.SPELLCHECK.value,
            name="spellchecker_service",
            seed=seed,
            failure_rate=0.12,
            working_time=(2.0, 5.0),
        ),
        PhaseService(
            "cj_assessment",
            Topic.CJ_ASSESSMENT.value,
            name="cj_assessment_service",
            seed=seed,
            failure_rate=0.1,
            working_time=(6.0, 12.0),
        ),
        PhaseService(
            "nlp", Topic.NLP.value, name="nlp_service", seed=seed, failure_rate=0.1, working_time=(3.0, 6.0)
        ),
        PhaseService(
            "ai_feedback",
            Topic.AI_FEEDBACK.value,
            name="ai_feedback_service",
            seed=seed,
            failure_rate=0.15,
            working_time=(5.0, 10.0),
        ),
    ]


class Platform:
    """The event loop: a time-ordered queue of messages, the runtime and the services."""

    def __init__(self, seed: int, *, runtime: InMemoryRuntime | None = None) -> None:
        self.runtime = runtime or InMemoryRuntime()
        self.ids = random.Random(f"{seed}:ids")
        self.started = self.runtime.clock.now()
        self.deliveries: list[Delivery] = []
        self._queue: list[tuple[float, int, Message]] = []
        self._seq = 0
        self._services: defaultdict[str, list[Service]] = defaultdict(list)
        self._all: list[Service] = []
        self._observers: list[Observer] = []

    # -- wiring ---------------------------------------------------------------------------
    def add(self, service: Service) -> None:
        self._all.append(service)
        for topic in service.topics:
            self._services[topic].append(service)

    def watch(self, observer: Observer) -> None:
        """Hand ``observer`` every message on its topics from now on."""
        self._observers.append(observer)

    async def observe(self, message: Message) -> None:
        """Show ``message`` to the observers of its topic (publishing does this itself)."""
        for observer in self._observers:
            if message.topic in observer.topics:
                await observer.observe(message)

    @property
    def services(self) -> tuple[Service, ...]:
        """Every service, in the order they were added."""
        return tuple(self._all)

    def jobs(self) -> list[Job]:
        """Every job the processing services did, service by service."""
        jobs: list[Job] = []
        for service in self._all:
            if isinstance(service, PhaseService):
                jobs.extend(service.jobs)
        return jobs

    def content(self, batch_id: str) -> tuple[tuple[str, str | None], ...]:
        """The essay refs ELS provisioned for ``batch_id``."""
        for s in self._all:
            if isinstance(s, EssayLifecycleService) and batch_id in s.content:
                return _refs(s.content[batch_id])
        return ()

    @property
    def now(self) -> float:
        """Simulated seconds since the platform started."""
        return (self.runtime.clock.now() - self.started).total_seconds()

    def new_id(self) -> str:
        """A random but seeded UUID (event and correlation ids)."""
        return str(uuid.UUID(int=self.ids.getrandbits(128), version=4))

    def envelope(
        self,
        topic: str,
        payload: WireModel,
        *,
        sender: str,
        correlation_id: str | None = None,
        at: float | None = None,
    ) -> Message:
        """Wrap ``payload`` in an :class:`~pipeline_state._wire.EventEnvelope` dict."""
        stamp = self.started + timedelta(seconds=self.now if at is None else at)
        data = payload.model_dump(mode="json")
        value = {
            "event_id": self.new_id(),
            "event_type": topic,
            "event_timestamp": stamp.isoformat(),
            "source_service": sender,
            "schema_version": 1,
            "correlation_id": correlation_id or self.new_id(),
            "data": data,
            "metadata": None,
        }
        return Message(topic, str(data.get("batch_id")), value)

    # -- the loop -------------------------------------------------------------------------
    def send(
        self,
        topic: str,
        payload: WireModel,
        *,
        sender: str,
        delay: float = 0.0,
        correlation_id: str | None = None,
    ) -> Message:
        """Queue a message to go out ``delay`` simulated seconds from now."""
        due = self.now + delay
        message = self.envelope(topic, payload, sender=sender, correlation_id=correlation_id, at=due)
        self.schedule(message, due)
        return message

    def schedule(self, message: Message, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, message))

    async def run_until_idle(self, *, max_steps: int = 500) -> list[Delivery]:
        """Process queued messages in time order until none is left; returns the deliveries."""
        first = len(self.deliveries)
        for _ in range(max_steps):
            if not self._queue:
                return self.deliveries[first:]
            due, _, message = heapq.heappop(self._queue)
            self.runtime.clock.set(self.started + timedelta(seconds=max(due, self.now)))
            await self.publish(message)
        raise SimulationError(f"the platform did not settle within {max_steps} messages")

    async def publish(self, message: Message) -> Delivery | None:
        """Put one message on the bus now: the runtime handles it if it is inbound, then the
        observers see it and everything it caused, and the services subscribed react."""
        delivery = None
        caused: tuple[Message, ...] = ()
        if message.topic in _INBOUND:
            delivery = await self.deliver(message)
            caused = delivery.emitted
        for produced in (message, *caused):
            await self.observe(produced)
            for service in self._services.get(produced.topic, ()):
                for reply in service.react(produced):
                    out = self.envelope(
                        reply.topic,
                        reply.payload,
                        sender=service.name,
                        correlation_id=reply.correlation_id,
                        at=self.now + reply.delay,
                    )
                    self.schedule(out, self.now + reply.delay)
        return delivery

    async def deliver(self, message: Message) -> Delivery:
        """Hand one inbound message to the runtime right away and record what it did."""
        batch_id = str(message.data.get("batch_id"))
        before, _ = await self._version(batch_id)
        emitted = await self.runtime.deliver(message.topic, dict(message.value))
        after, status = await self._version(batch_id)
        delivery = Delivery(
            self.now,
            message,
            tuple(Message(m["topic"], m["key"], m["value"]) for m in emitted),
            before,
            after,
            status,
        )
        self.deliveries.append(delivery)
        return delivery

    async def _version(self, batch_id: str) -> tuple[int | None, str | None]:
        state = await self.runtime.store.load(batch_id)
        return (None, None) if state is None else (state.version, state.status.value)
