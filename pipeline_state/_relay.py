"""The outbox relay: moves committed outbox rows to a transport.

Transport-agnostic: it reads an :class:`~pipeline_state.ports.Outbox` and writes to a
:class:`~pipeline_state.ports.Publisher`. Rows keep the ``event_id`` they were written
with, go out in order per key, are marked published once the transport confirms, and are
retried with exponential backoff; after ``max_attempts`` failures a row is parked with its
last error for an operator to inspect.

**Hand-off.** A store that writes the outbox rows of its own process's units of work
already leased to this relay (the SQL store's ``attach_relay``) gives them to
:meth:`OutboxRelay.hand_off` once committed; a pass publishes them with no claim statement,
together with whatever the claim found when one is due. Rows a commit could not lease
(another process's or a failed older row of their key holds them back, they have no key,
they were re-queued) are left to the claim, which keeps each key's order.

**Bound.** The hand-off holds at most ``max_handed`` rows (default :data:`MAX_HANDED`). A
store asks :meth:`OutboxRelay.accepting` before it leases a commit's rows to the relay and,
past the bound, leaves them to the claim; rows handed to a full relay all the same (a
commit under way when it filled) are kept by id only, hold their keys back as a failed row
does, and the next pass takes the lease off them. So a publish that hangs while the service
goes on consuming costs the database a backlog, not this process's memory.

**Order per key.** Handed-off rows wait in one queue per key. A pass publishes one *wave*:
the oldest waiting row of each key (for up to ``batch_size`` rows, keys handed first), in
one publish call; the runner starts the next pass at once (no claim, no poll interval), so
a key's rows go out one wave after the other, each once the previous one was acknowledged,
and a long run of one key never holds back the rows of other keys. ``rows_per_key`` above
1 lets a wave carry up to that many rows of one key, in order, for a transport that keeps
the order of one call's messages per key (the Kafka publisher: one request in flight per
connection, a failed batch retried before the next is sent); a later row of a key can then
overtake an earlier one of the same call only when the transport gave the earlier one up
for good after its own retries while accepting the later one. Once a row fails, the
handed-off rows of its key that are newer than it (those waiting and those that arrive
while it may still be pending) are not published but given back to the claim (their lease
is released), so no row overtakes an older one of its key. A row given back holds its key in
turn (until its release is committed the store still reads it as leased here and hands over
newer rows of its key): a key is held until every row that held it went out here or parked,
or for a lease.

**Leases.** A claimed or handed-off row is this relay's only until its lease ends
(:attr:`~pipeline_state.ports.OutboxRow.leased_until`; when the store does not say, the
relay's ``lease_seconds`` from the claim or the hand-off): after that another relay may
claim and publish it. So a pass does not publish a row whose lease has ended (a publish
that hung past the lease kept it waiting): it leaves it, and the newer handed-off rows of
its key, to the claim, and holds the key back as after a failure (a row of the key handed
over before the store hears that the newer rows were given back goes to the claim too). A
failure is recorded under the lease the relay held: an outbox whose ``mark_failed`` takes
``leased_until`` (the shipped stores) counts it only while the row is still held under
that lease, ended or not (once another relay claimed it, its attempts, back-off and lease
are not this relay's to change; while nobody did, a row whose every publish outlasts the
lease still backs off and parks); with another outbox, the relay records no failure once
the lease has ended.

**Marking.** :meth:`OutboxRelay.run_once` marks the rows it published at once; a runner
may pass ``mark=False`` and call :meth:`OutboxRelay.flush_marks` later, so one
``UPDATE`` marks the rows of several passes (a crash before it re-publishes them after the
lease, with their original ``event_id``).

Each publish attempt is a producer span in the trace stored on its row (the decision that
emitted it, see :mod:`pipeline_state._tracing`), and the transport is handed that span's
trace context, so a retry after a failure or a restart still continues the decision's trace.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol, cast, runtime_checkable

import attrs

from ._tracing import for_publish, publish_span, record_published
from .errors import StoreUnavailableError
from .ports import CLOCK_STEP_HORIZON_SECONDS, Clock, Outbox, OutboxRow, Publisher

__all__ = ["OutboxRelay", "RelayReport", "ReleasingOutbox"]

log = logging.getLogger("pipeline_state.relay")

MAX_HANDED = 10_000
"""The default bound of an :class:`OutboxRelay`'s hand-off: rows handed to it in memory and
not published yet (see :meth:`OutboxRelay.hand_off`)."""


@attrs.frozen
class RelayReport:
    """What one relay pass did."""

    published: int = 0
    failed: int = 0
    parked: int = 0

    @property
    def idle(self) -> bool:
        return not (self.published or self.failed or self.parked)

    def plus(self, other: RelayReport) -> RelayReport:
        """The report of this pass and ``other`` together."""
        return RelayReport(
            self.published + other.published, self.failed + other.failed, self.parked + other.parked
        )


_IDLE = RelayReport()


@runtime_checkable
class ReleasingOutbox(Outbox, Protocol):
    """An outbox that can give rows handed off to its relay back to the claim."""

    async def release(self, row_ids: Sequence[int]) -> None: ...


def _row_id(row: OutboxRow) -> int:
    return row.id


def _answer(publisher: Publisher, answer: object, count: int) -> Sequence[BaseException | None]:
    """``answer`` if it is what :meth:`Publisher.publish` must return for ``count`` messages
    (one ``None`` or exception per message, in order), else a :class:`TypeError` naming the
    publisher: a publisher that breaks its contract is a bug to fix, not a failure to retry
    (the messages may have gone out; their rows stay leased and go again after the lease)."""
    sequence = isinstance(answer, list | tuple) or (
        isinstance(answer, Sequence) and not isinstance(answer, str | bytes)
    )
    if sequence and _one_result_each(cast("Sequence[object]", answer), count):
        return cast("Sequence[BaseException | None]", answer)
    shown = repr(answer)
    raise TypeError(
        f"{type(publisher).__name__}.publish must return one None or exception per message "
        f"({count}), in order; it returned {shown if len(shown) <= 80 else shown[:77] + '...'}"
    )


def _leased(row: OutboxRow, until: datetime) -> OutboxRow:
    """``row`` with the end of its lease: the store's, else ``until``."""
    return row if row.leased_until is not None else attrs.evolve(row, leased_until=until)


def _takes_lease(outbox: Outbox) -> bool:
    """Whether ``outbox.mark_failed`` takes ``leased_until`` (and so tells a failure under
    the lease the relay held from one under another relay's)."""
    try:
        return "leased_until" in inspect.signature(outbox.mark_failed).parameters
    except (TypeError, ValueError):  # pragma: no cover - a callable without a signature
        return False


def _lease_ended(row: OutboxRow, now: datetime) -> bool:
    return row.leased_until is not None and row.leased_until <= now


def _one_result_each(answer: Sequence[object], count: int) -> bool:
    return len(answer) == count and all(e is None or isinstance(e, BaseException) for e in answer)


class OutboxRelay:
    """Publishes outbox rows; run :meth:`run_once` in a loop or :meth:`run` until stopped.

    ``lease_seconds`` is the outbox's lease on rows (how long a failed row's key is held back
    from hand-off: see the module doc).
    """

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        clock: Clock,
        *,
        batch_size: int = 100,
        max_attempts: int = 5,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
        lease_seconds: float = 30.0,
        rows_per_key: int = 1,
        max_handed: int = MAX_HANDED,
    ) -> None:
        if batch_size < 1 or max_attempts < 1 or rows_per_key < 1:
            raise ValueError("batch_size, max_attempts and rows_per_key must be at least 1")
        if isinstance(max_handed, bool) or not isinstance(max_handed, int) or max_handed < 1:
            raise ValueError(f"max_handed must be a whole number of at least 1, got {max_handed!r}")
        if not 0 <= base_backoff <= max_backoff <= CLOCK_STEP_HORIZON_SECONDS:
            raise ValueError(
                "backoffs must satisfy 0 <= base_backoff <= max_backoff <= "
                f"{CLOCK_STEP_HORIZON_SECONDS:g} (an hour: a due time further ahead reads as a clock "
                f"step), got {base_backoff} and {max_backoff}"
            )
        self.outbox = outbox
        self.publisher = publisher
        self.clock = clock
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.lease = timedelta(seconds=lease_seconds)
        self.rows_per_key = rows_per_key
        self._lease_checked = _takes_lease(outbox)
        self.claim_due = True
        """Whether the next pass of a runner should claim (set by :meth:`hand_off` when a
        commit left rows to the claim, after a claim that filled a batch, and after a claim
        whose rows were published: later rows of their keys may be due)."""
        self.max_handed = max_handed
        self._queues: dict[str | None, collections.deque[OutboxRow]] = {}  # handed rows by key
        self._handed_ids: set[int] = set()
        self._overflow: list[int] = []  # rows a full hand-off refused: their lease is taken off
        self._held: dict[str, tuple[set[int], datetime]] = {}  # key -> rows holding it, until
        self._unmarked: list[int] = []

    # -- hand-off -------------------------------------------------------------------------------
    def hand_off(self, rows: Sequence[OutboxRow], poll: bool = False) -> None:
        """Rows just committed under this relay's lease, in id order (published by the next
        pass without a claim); ``poll``: the commit also left rows to the claim.

        The hand-off holds at most ``max_handed`` rows. A store asks :meth:`accepting`
        before it leases a commit's rows, so only the rows of commits already under way
        when it filled can come past the bound: they are left to the claim (the next pass
        takes the lease off them, by id) and each holds its key back as a failed row does,
        so a later row of its key handed meanwhile goes to the claim too, behind it."""
        handed, queues = self._handed_ids, self._queues
        now: datetime | None = None
        for row in rows:
            if row.id in handed:
                continue
            # The store does not say: a lease from now, which may overstate the store's (it
            # began before the commit); a store that hands rows off should give the lease's end.
            if row.leased_until is None:
                now = now or self.clock.now()
                row = attrs.evolve(row, leased_until=now + self.lease)
            if len(handed) >= self.max_handed:
                self._overflow.append(row.id)
                key = row.message.key
                if key is not None:
                    now = now or self.clock.now()
                    self._hold(key, row.id, now)
                self.claim_due = True
                continue
            handed.add(row.id)
            queues.setdefault(row.message.key, collections.deque()).append(row)
        if poll:
            self.claim_due = True

    def accepting(self) -> bool:
        """Whether the hand-off takes more rows (it holds fewer than ``max_handed``): a store
        that hands rows off asks before it leases a commit's rows to this relay, and leaves
        them to the claim when not."""
        return len(self._handed_ids) < self.max_handed

    @property
    def handed(self) -> int:
        """Rows handed off and not taken by a pass yet."""
        return len(self._handed_ids)

    @property
    def overflow(self) -> int:
        """Rows a full hand-off refused whose lease the next pass takes off (see :meth:`hand_off`)."""
        return len(self._overflow)

    @property
    def unmarked(self) -> int:
        """Rows published and not marked yet (see :meth:`flush_marks`)."""
        return len(self._unmarked)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before the next try after ``attempts`` failures."""
        return float(min(self.max_backoff, self.base_backoff * 2 ** max(0, attempts - 1)))

    async def run_once(self, *, claim: bool = True, mark: bool = True) -> RelayReport:
        """One pass: rows handed off (see :meth:`hand_off`) and, with ``claim``, one batch of
        due rows claimed from the outbox, published in order per key; with ``mark``, the rows
        published (by this pass and earlier unmarked ones) are marked before returning."""
        if self._overflow:
            await self._release_overflow()
        claimed: list[OutboxRow] = []
        if claim:  # before the handed rows are taken: a store that fails here takes none
            self.claim_due = True
            claimed_at = self.clock.now()
            claimed = await self.outbox.claim(claimed_at, self.batch_size)
            # A full batch: more rows are probably due.
            self.claim_due = len(claimed) >= self.batch_size
            claimed = [_leased(row, claimed_at + self.lease) for row in claimed]
        handed = self._take_handed()
        if claimed:  # a handed row claimed again (its lease had ended) goes under the new lease
            again = {r.id for r in claimed}
            handed = [r for r in handed if r.id not in again]
        rows = sorted([*handed, *claimed], key=_row_id)
        report = await self._publish(rows, {r.id for r in handed}) if rows else _IDLE
        if claim and report.published and len(rows) > len(handed):
            # A claim returns one row per key: the next rows of the keys it published may be
            # due now, so a runner claims again rather than wait its idle period (a backlog
            # on one key then drains a row per pass, not a row per idle period).
            self.claim_due = True
        if mark:
            await self.flush_marks()
        return report

    async def flush_marks(self) -> None:
        """Mark the rows published and not marked yet, with one statement."""
        if not self._unmarked:
            return
        ids = list(self._unmarked)
        await self.outbox.mark_published(ids, self.clock.now())
        del self._unmarked[: len(ids)]

    async def _release_overflow(self) -> None:
        """Give the rows a full hand-off refused back to the claim now (not after the lease),
        a thousand ids per statement. If the store fails, the rest are kept for the next pass
        (their keys stay held back meanwhile)."""
        if isinstance(self.outbox, ReleasingOutbox):
            while self._overflow:
                chunk = self._overflow[:1000]
                await self.outbox.release(chunk)
                del self._overflow[: len(chunk)]
        else:
            self._overflow.clear()
        self.claim_due = True

    def _take_handed(self) -> list[OutboxRow]:
        """The oldest ``rows_per_key`` handed-off rows of each key, up to ``batch_size`` rows
        (keys whose rows were handed first first): a long run of one key never holds back
        the others."""
        taken: list[OutboxRow] = []
        queues = self._queues
        for key in list(queues):
            queue = queues[key]
            for _ in range(self.rows_per_key):
                if not queue or len(taken) >= self.batch_size:
                    break
                row = queue.popleft()
                self._handed_ids.discard(row.id)
                taken.append(row)
            if not queue:
                del queues[key]
            if len(taken) >= self.batch_size:
                break
        return taken

    def _give_back_key(self, key: str, failed_id: int) -> list[int]:
        """The handed-off rows of ``key`` newer than the row that failed, taken out of the
        queue; each holds the key (see :meth:`_hold`) until it goes out here or the hold
        lapses, as the row that failed does: until their release is committed, the store
        reads them as leased here and hands over a newer row of the key."""
        queue = self._queues.pop(key, None)
        if not queue:
            return []
        back = [r for r in queue if r.id > failed_id]
        kept = collections.deque(r for r in queue if r.id <= failed_id)
        if kept:
            self._queues[key] = kept
        if back:
            now = self.clock.now()
            for row in back:
                self._handed_ids.discard(row.id)
                self._hold(key, row.id, now)
        return [r.id for r in back]

    def _hold(self, key: str, row_id: int, now: datetime) -> None:
        """Hold ``key``'s handed rows newer than row ``row_id`` back from hand-off for a lease
        from ``now``, merged with a hold in force (its rows and this one, the later end); a
        lapsed hold counts as none."""
        until = now + self.lease
        held = self._held.get(key)
        if held is None or held[1] <= now:
            self._held[key] = ({row_id}, until)
        else:
            held[0].add(row_id)
            self._held[key] = (held[0], max(held[1], until))

    def _release_hold(self, key: str | None, row_id: int) -> None:
        """Row ``row_id`` went out or was parked: it holds ``key`` back no more. The hold ends
        once none of the rows that put it holds it (others, such as a row given back to the
        claim, keep it until they go out here or it lapses with its lease)."""
        held = None if key is None else self._held.get(key)
        if key is None or held is None:
            return
        held[0].discard(row_id)
        if not held[0]:
            del self._held[key]

    def _held_back(self, row: OutboxRow, now: datetime) -> bool:
        """A handed-off row whose key had a row fail here, older than it, within the lease."""
        key = row.message.key
        if key is None or key not in self._held:
            return False
        holding, until = self._held[key]
        if until <= now:
            del self._held[key]
            return False
        return row.id > min(holding)

    async def _publish(self, rows: list[OutboxRow], handed: set[int]) -> RelayReport:
        """Publish one wave of ``rows`` (in id order): the oldest ``rows_per_key`` rows of each
        key; a key's later handed-off rows wait, first in line, for the next wave (see the
        module doc)."""
        now = self.clock.now()
        if self._held:  # forget keys whose hold has lapsed (their row parked, or went out elsewhere)
            self._held = {key: held for key, held in self._held.items() if held[1] > now}
        wave: list[OutboxRow] = []
        later: list[OutboxRow] = []
        give_back: list[int] = []
        seen: dict[str | None, int] = {}
        lapsed: set[str | None] = set()  # keys with a row whose lease ended before this pass
        left = 0
        for row in rows:
            key = row.message.key
            if _lease_ended(row, now) or (key is not None and key in lapsed):
                # Another relay may hold it now: not published here, nor the key's newer rows
                # (still leased here: given back). A lapsed lease is not this relay's to release.
                left += 1
                if not _lease_ended(row, now):
                    give_back.append(row.id)
                if key is not None and key not in lapsed:
                    newer = self._give_back_key(key, row.id)
                    give_back.extend(newer)
                    left += len(newer)
                    # Until the rows given back are released (after the publish below), the
                    # store reads them as leased here and hands over a newer row of the key
                    # that a commit writes meanwhile: held as after a failure, that row goes
                    # to the claim, behind this one.
                    self._hold(key, row.id, now)
                lapsed.add(key)
            elif row.id in handed and self._held_back(row, now):
                # Leased to this relay: back to the claim, with the key's newer handed rows
                # (left here, they would go out once the hold ends, ahead of this one). It
                # holds the key itself: until its release is committed, the store reads it as
                # leased here and hands over a newer row of the key that a commit writes
                # meanwhile, which must go to the claim behind it, even once the row that held
                # the key so far has gone out.
                give_back.append(row.id)
                if key is not None:
                    give_back.extend(self._give_back_key(key, row.id))
                    self._hold(key, row.id, now)
            elif seen.get(key, 0) >= self.rows_per_key:
                later.append(row)
            else:
                seen[key] = seen.get(key, 0) + 1
                wave.append(row)
        for row in reversed(later):  # handed-off rows (a claim returns one row per key)
            self._handed_ids.add(row.id)
            self._queues.setdefault(row.message.key, collections.deque()).appendleft(row)
        published: list[int] = []
        failures: list[tuple[OutboxRow, BaseException, bool]] = []
        results = await self._send(wave) if wave else []
        after = self.clock.now() if wave else now  # a hold lasts a lease from the answer
        for row, error in zip(wave, results, strict=True):
            key = row.message.key
            if error is None:
                published.append(row.id)
                self._release_hold(key, row.id)  # the row that held its key back went out
                continue
            # Held before the store hears of it: should marking the failure fail (the store
            # out of reach), the key's newer rows still wait behind this one.
            failures.append((row, error, row.attempts + 1 >= self.max_attempts))
            if key is not None:
                self._hold(key, row.id, after)
                give_back.extend(self._give_back_key(key, row.id))
        self._unmarked.extend(published)
        parked = 0
        for row, error, park in failures:
            if not await self._fail(row, error, park=park):
                continue
            if park:
                parked += 1
                self._release_hold(row.message.key, row.id)  # parked: it holds its key back no more
        failed = len(failures)
        if lapsed:
            log.warning(
                "%s outbox rows not published: their lease ended before this pass (a publish "
                "outlasted it); left to the claim",
                left,
            )
            self.claim_due = True
        if give_back and isinstance(self.outbox, ReleasingOutbox):
            await self.outbox.release(give_back)
            self.claim_due = True
        return RelayReport(len(published), failed, parked)

    async def _send(self, rows: list[OutboxRow]) -> Sequence[BaseException | None]:
        """Publish ``rows`` in one call; one result per row (each attempt a producer span)."""
        spans = [publish_span(r.message, r.attempts + 1) for r in rows]
        results: Sequence[BaseException | None] = ()
        try:
            try:
                answer: object = await self.publisher.publish(
                    [for_publish(r.message, span) for r, span in zip(rows, spans, strict=True)]
                )
            except Exception as exc:  # a transport's error, or a publisher that raised for one message
                results = [exc] * len(rows)
            else:
                results = _answer(self.publisher, answer, len(rows))
        finally:
            for index, span in enumerate(spans):
                error = results[index] if index < len(results) else RuntimeError("not published")
                record_published(span, error)
        return results

    async def _fail(self, row: OutboxRow, error: BaseException, *, park: bool) -> bool:
        """Record a failed attempt of ``row`` (``False``: not recorded). An outbox that takes
        the lease (``leased_until``) counts it only while the row is still held under that
        lease, even when it ended (no other relay claimed the row since: a publish that
        always outlasts the lease still gets its back-off and parks); with another, the
        relay records no failure once the lease has ended."""
        now = self.clock.now()
        text = f"{type(error).__name__}: {error}"
        lease = row.leased_until if self._lease_checked else None
        if lease is None and _lease_ended(row, now):
            log.warning(
                "outbox row %s failed after its lease ended (%s); not counted here, left to the claim",
                row.id,
                text,
            )
            return False
        retry_at = now + timedelta(seconds=self.backoff(row.attempts + 1))
        if lease is None:
            counted = await self.outbox.mark_failed(row.id, text, now, retry_at=retry_at, park=park)
        else:
            counted = await self.outbox.mark_failed(  # type: ignore[call-arg]
                row.id, text, now, retry_at=retry_at, park=park, leased_until=lease
            )
        if counted is False:
            # Another relay claimed it since (its lease here ended) or published it: not this
            # relay's failure to count, nor its park; the key stays held for a lease.
            log.warning(
                "outbox row %s failed after another relay took it (%s); not counted here", row.id, text
            )
            return False
        if park:
            log.error(
                "parked outbox row %s (%s) after %s attempts: %s",
                row.id,
                row.message.topic,
                row.attempts + 1,
                text,
            )
        else:
            log.warning("outbox row %s failed (attempt %s): %s", row.id, row.attempts + 1, text)
        return True

    async def drain(self, *, max_passes: int = 1000) -> RelayReport:
        """Publish until nothing is due: stop after a pass that published nothing, or once
        the outbox has no pending row left (no empty pass after the last one)."""
        total: RelayReport | None = None
        for _ in range(max_passes):
            report = await self.run_once()
            total = report if total is None else total.plus(report)
            if report.published == 0 or not await self.outbox.pending_count():
                break
        return _IDLE if total is None else total

    async def run(self, stop: asyncio.Event, *, idle_seconds: float = 0.2) -> None:
        """Relay until ``stop`` is set, then flush what is due once more."""
        while not stop.is_set():
            try:
                report = await self.run_once()
            except StoreUnavailableError as exc:
                log.warning("outbox unavailable, retrying: %s", exc)
                report = RelayReport()
            if report.published == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=idle_seconds)
        await self.drain()
