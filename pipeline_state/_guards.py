"""Pluggable admission guards.

A guard looks at an admission request (the batch, the resolved plan, the requester) and
either lets it through (``None``) or denies it with a reason. Guards are pure: anything
they need from outside (a credit balance) comes through a small synchronous port that the
service owner implements, for example from a cache it keeps fresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import attrs

from ._catalog import MAX_DEADLINE_SECONDS, Plan, check_deadline
from ._model import BatchState
from .errors import DefinitionError

__all__ = [
    "AdmissionGuard",
    "AdmissionRequest",
    "CreditLedger",
    "CreditsGuard",
    "Denial",
    "InMemoryCreditLedger",
    "PromptGuard",
    "RateLimitGuard",
]


@attrs.frozen
class AdmissionRequest:
    """What a guard may look at."""

    batch: BatchState
    plan: Plan
    user_id: str
    prompt_payload: Mapping[str, Any] | None
    now: datetime


@attrs.frozen
class Denial:
    """A guard's refusal: a machine-readable reason and a human-readable detail."""

    reason: str
    detail: str


@runtime_checkable
class AdmissionGuard(Protocol):
    """Decides whether a pipeline request may start. Must be pure and must not raise."""

    def check(self, request: AdmissionRequest) -> Denial | None: ...


@attrs.frozen
class PromptGuard:
    """Denies ``prompt_not_attached`` when a phase that needs a prompt would run without one.

    A prompt counts as attached when the batch was registered with a prompt reference, an
    earlier request attached one, or this request carries ``prompt_payload``. ``phases`` are
    the phases that need one (none by default: the profile names them).
    """

    phases: frozenset[str] = frozenset()

    def check(self, request: AdmissionRequest) -> Denial | None:
        if request.batch.prompt_ref is not None or request.prompt_payload:
            return None
        needing = [step.name for step in request.plan.to_run if step.name in self.phases]
        if not needing:
            return None
        return Denial("prompt_not_attached", f"phases {', '.join(needing)} need a prompt")


class CreditLedger(Protocol):
    """Tells how many credits a user (or their organisation) has left."""

    def available(self, user_id: str, org_id: str | None) -> int: ...


@attrs.define
class InMemoryCreditLedger:
    """A credit ledger kept in a dict: balances by org id, falling back to user id."""

    balances: dict[str, int] = attrs.field(factory=dict)

    def available(self, user_id: str, org_id: str | None) -> int:
        if org_id is not None and org_id in self.balances:
            return self.balances[org_id]
        return self.balances.get(user_id, 0)


@attrs.frozen
class CreditsGuard:
    """Denies ``insufficient_credits`` when the items the plan would process cost more than
    the ledger holds. Cost = items x credits per phase (``default_cost`` when unlisted);
    pruned phases cost nothing."""

    ledger: CreditLedger
    cost_per_item: Mapping[str, int] = attrs.field(factory=dict)
    default_cost: int = 1

    def check(self, request: AdmissionRequest) -> Denial | None:
        items = len(request.batch.items)
        cost = sum(self.cost_per_item.get(s.name, self.default_cost) * items for s in request.plan.to_run)
        balance = self.ledger.available(request.user_id, request.batch.org_id)
        if cost <= balance:
            return None
        return Denial("insufficient_credits", f"the request costs {cost} credits, {balance} available")


@attrs.frozen
class RateLimitGuard:
    """Denies ``rate_limit_exceeded`` when the batch already accepted ``max_runs`` runs in
    the last ``window_seconds``."""

    max_runs: int
    window_seconds: float

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_runs, bool) or not isinstance(self.max_runs, int) or self.max_runs < 1:
            raise DefinitionError(
                "RateLimitGuard", f"max_runs must be a whole number of at least 1, got {self.max_runs!r}"
            )
        if check_deadline(self.window_seconds) is not None:
            raise DefinitionError(
                "RateLimitGuard",
                f"window_seconds must be a positive number of seconds, at most {MAX_DEADLINE_SECONDS} "
                f"(ten years), got {self.window_seconds!r}",
            )

    @property
    def runs_remembered(self) -> int:
        """The archived runs whose acceptance time a batch must keep for this guard: its
        ``max_runs`` latest (if that many fell in the window, the latest did)."""
        return self.max_runs

    def check(self, request: AdmissionRequest) -> Denial | None:
        since = request.now - timedelta(seconds=self.window_seconds)
        batch = request.batch
        now = request.now  # a run "accepted" after now was stamped by a clock that stepped back since
        recent = sum(1 for accepted_at in batch.past.accepted if since < accepted_at <= now)
        active = batch.active_run
        recent += active is not None and since < active.accepted_at <= now
        if recent < self.max_runs:
            return None
        return Denial(
            "rate_limit_exceeded", f"{recent} runs in the last {self.window_seconds:g}s (max {self.max_runs})"
        )
