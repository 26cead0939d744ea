"""Fan-in: what a phase with several dependencies gets for each item.

The engine gathers, for each item that succeeded in **every** dependency of such a phase,
the ref each dependency reported for it (a :class:`FanInItem`: one :class:`DependencyRef`
per dependency, in plan order, the catalog's topological order). An item that failed in
any dependency does not go on. The profile's merge policy
(:attr:`~pipeline_state.Profile.fan_in`, a :class:`FanIn`) then says what the phase's command
carries for the item (a :class:`Merged`): the one ref it carries under
:attr:`~pipeline_state.ports.CommandFields.content_ref` (and the phase records as the item's
input), and the dependency refs it lists under
:attr:`~pipeline_state.ports.CommandFields.dependency_refs`, each as
``{dependency: phase, content_ref: ref}`` in the names the command model declares.

Two policies ship:

* :data:`EVERY_DEPENDENCY` (the default): the command lists every dependency's ref, and
  carries the last dependency's as its one ref. A profile with it must give each fan-in
  phase a command model that declares where the list goes (checked when the profile is
  built).
* :data:`LAST_DEPENDENCY`: the command carries the last dependency's ref and lists none,
  for command models that hold one ref per item.

A profile may bring its own: any object with a boolean ``lists_refs`` (whether
:meth:`~FanIn.merge` may return refs to list) and a ``merge(item) -> Merged`` method.
The merge applies to a run's fan-in phases, a retried one and a recorded completion alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

import attrs

from ._model import ItemRef

__all__ = [
    "EVERY_DEPENDENCY",
    "LAST_DEPENDENCY",
    "DependencyRef",
    "EveryDependency",
    "FanIn",
    "FanInItem",
    "LastDependency",
    "Merged",
    "gather",
]


@attrs.frozen(slots=True)
class DependencyRef:
    """The ref one dependency reported for an item: the dependency's phase name and where
    the item's content is after it."""

    phase: str
    content_ref: str | None


@attrs.frozen(slots=True)
class FanInItem:
    """An item that succeeded in every dependency of a fan-in phase, with each dependency's
    ref, in plan order (one per dependency, at least two)."""

    item_id: str
    refs: tuple[DependencyRef, ...]


@attrs.frozen(slots=True)
class Merged:
    """What a fan-in phase's command carries for one item: its one ``content_ref``, and the
    ``refs`` it lists under :attr:`~pipeline_state.ports.CommandFields.dependency_refs`
    (empty: none)."""

    content_ref: str | None
    refs: tuple[DependencyRef, ...] = ()


@runtime_checkable
class FanIn(Protocol):
    """A profile's merge policy for fan-in phases (see the module).

    ``lists_refs`` says whether :meth:`merge` may return refs to list: a profile with such a
    policy checks, when built, that the command model of each fan-in phase declares where
    they go.
    """

    @property
    def lists_refs(self) -> bool: ...

    def merge(self, item: FanInItem) -> Merged:
        """What the command carries for ``item``."""
        ...


@attrs.frozen
class LastDependency:
    """Carry the ref of the last dependency in plan order; list none.

    For command models with one ref per item: the item went through every dependency, and
    the last one's ref is the one its worker wrote last."""

    lists_refs: ClassVar[bool] = False

    def merge(self, item: FanInItem) -> Merged:
        return Merged(item.refs[-1].content_ref)


@attrs.frozen
class EveryDependency:
    """List every dependency's ref (plan order) and carry the last one's as the item's one
    ref (for a worker that reads only that)."""

    lists_refs: ClassVar[bool] = True

    def merge(self, item: FanInItem) -> Merged:
        return Merged(item.refs[-1].content_ref, item.refs)


LAST_DEPENDENCY = LastDependency()
"""The policy that carries the last dependency's ref and lists none."""

EVERY_DEPENDENCY = EveryDependency()
"""The policy that lists every dependency's ref (the default)."""


def gather(
    policy: FanIn, dependencies: Sequence[str], outputs: Sequence[tuple[ItemRef, ...]]
) -> tuple[tuple[ItemRef, ...], Mapping[str, tuple[DependencyRef, ...]]]:
    """The inputs of a phase fed by ``dependencies`` (two or more, in plan order) whose
    ``outputs`` are given in the same order: the items that succeeded in every one, in the
    order of the last one's outputs, each with the ref ``policy`` merges; and the refs each
    item's command lists (items listing none are left out)."""
    last = outputs[-1]
    if type(policy) is LastDependency:  # the merge is known: no per-item objects
        survivors = set.intersection(*({e.item_id for e in out} for out in outputs))
        return tuple(e for e in last if e.item_id in survivors), {}
    by_dependency = [{e.item_id: e.content_ref for e in out} for out in outputs[:-1]]
    inputs: list[ItemRef] = []
    listed: dict[str, tuple[DependencyRef, ...]] = {}
    for entry in last:
        item_id = entry.item_id
        if not all(item_id in refs for refs in by_dependency):
            continue
        refs = (
            *(
                DependencyRef(phase, found[item_id])
                for phase, found in zip(dependencies, by_dependency, strict=False)
            ),
            DependencyRef(dependencies[-1], entry.content_ref),
        )
        merged = policy.merge(FanInItem(item_id, refs))
        if not isinstance(merged, Merged):
            raise TypeError(
                f"the fan_in policy {policy!r} returned {type(merged).__name__} for item {item_id!r}, "
                "not a Merged"
            )
        inputs.append(ItemRef(item_id, merged.content_ref))
        if merged.refs:
            listed[item_id] = merged.refs
    return tuple(inputs), listed
