"""The names a profile shows for the engine's batch states and triggers.

The engine names its batch states and triggers in its own words
(:class:`~pipeline_state._lifecycle.BatchStatus`, the triggers of
:data:`~pipeline_state._lifecycle.BATCH_LIFECYCLE`). A profile whose wire already spoke of
some of them under other names (a status its services know, a trigger named in the reasons
it reports) gives those names here; the engine then uses them wherever a state or trigger
leaves it as text: refusal reasons and details, the keys of facts that wait for a state,
and the batch views. Inside the engine, in the state and in the transition log, the
engine's own names stay.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._wire import is_id_text
from .errors import DefinitionError

__all__ = ["MAX_STATE_NAME_LENGTH", "NO_RENAMES", "StateNames"]

MAX_STATE_NAME_LENGTH = 100
"""Upper bound (characters) on a state's or trigger's shown name: it is written into
waiting facts' keys (``batch_state:<name>``), whose stored width is the id's
(:data:`~pipeline_state._wire.MAX_ID_LENGTH`)."""


def _frozen_pairs(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, StateNames):
        return value.pairs
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        engines = [engine for engine, _ in value]
        twice = sorted({e for e in engines if engines.count(e) > 1}, key=str)
        if twice:
            raise DefinitionError("state_names", f"names {twice} more than once (each may be shown one way)")
        value = dict(value)
    if not isinstance(value, Mapping):
        raise DefinitionError("state_names", f"expected a mapping of names, got {type(value).__name__}")
    pairs = []
    for engine, shown in value.items():
        if not isinstance(engine, str) or not isinstance(shown, str) or not shown.strip():
            raise DefinitionError(
                "state_names", f"names must be non-empty strings, got {engine!r} -> {shown!r}"
            )
        if len(shown) > MAX_STATE_NAME_LENGTH or not is_id_text(shown):
            raise DefinitionError(
                "state_names",
                f"{engine!r} is shown as {shown!r:.80}: a shown name travels in envelopes and "
                f"waiting facts' keys, so it must be 1 to {MAX_STATE_NAME_LENGTH} characters "
                "without control or bidirectional-override characters",
            )
        pairs.append((str(engine), str(shown)))
    return tuple(sorted(pairs))


@attrs.frozen(cache_hash=True)
class StateNames:
    """Engine name -> the profile's name, for the batch states and triggers a profile renames.

    Names not listed show as they are. :meth:`check` (run when a profile is built) makes
    sure every renamed name is one of the batch lifecycle's and that no two names show alike.
    """

    pairs: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_frozen_pairs)
    _shown: Mapping[str, str] = attrs.field(init=False, eq=False, repr=False)
    _engine: Mapping[str, str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_shown", dict(self.pairs))
        object.__setattr__(self, "_engine", {shown: engine for engine, shown in self.pairs})

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def show(self, name: str) -> str:
        """The profile's name of engine state or trigger ``name``."""
        return self._shown.get(name, name)

    def read(self, shown: str) -> str:
        """The engine's name of a state or trigger the profile shows as ``shown``."""
        return self._engine.get(shown, shown)

    def check(self, profile: str, known: frozenset[str]) -> None:
        """Raise :class:`~pipeline_state.errors.DefinitionError` unless every renamed name is
        in ``known`` and every shown name is unique (neither another rename's nor a name
        of ``known`` other than its own: a state shown under another state's engine name
        would read as that state wherever both names appear, as in a transition log)."""
        unknown = sorted(engine for engine, _ in self.pairs if engine not in known)
        if unknown:
            raise DefinitionError(
                profile, f"state_names renames {unknown}, which are not batch states or triggers"
            )
        seen: dict[str, str] = {name: name for name in known}
        for engine, shown in self.pairs:
            other = seen.get(shown)
            if other is not None and other != engine:
                raise DefinitionError(
                    profile, f"state_names shows {engine!r} as {shown!r}, which already names {other!r}"
                )
            seen[shown] = engine


NO_RENAMES = StateNames()
"""State names that rename nothing: every state and trigger shows as the engine names it."""
