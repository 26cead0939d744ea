"""The HuleEdu education platform as a profile of the engine: its catalog
(:mod:`.catalog`), wire models and topics (:mod:`.events`), how its inbound messages read as
engine inputs (:mod:`.inbound`), how it words the events the engine emits (:mod:`.outbound`)
and the profile factory (:func:`huleedu_profile`, in :mod:`.profile`).

:func:`huleedu_profile` is imported on first use: :mod:`pipeline_state._profile` reads this
package's wire while it is being imported itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .catalog import HULEEDU_CATALOG
from .inbound import HULEEDU_INBOUND, default_language
from .outbound import HULEEDU_OUTBOUND, HuleEduOutbound

if TYPE_CHECKING:
    from .profile import HULEEDU_DEFAULT_DEADLINE_SECONDS, HULEEDU_PHASE_COMMANDS, huleedu_profile

__all__ = [
    "HULEEDU_CATALOG",
    "HULEEDU_DEFAULT_DEADLINE_SECONDS",
    "HULEEDU_INBOUND",
    "HULEEDU_OUTBOUND",
    "HULEEDU_PHASE_COMMANDS",
    "HuleEduOutbound",
    "default_language",
    "huleedu_profile",
]

_LAZY = frozenset({"HULEEDU_DEFAULT_DEADLINE_SECONDS", "HULEEDU_PHASE_COMMANDS", "huleedu_profile"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import profile

        return getattr(profile, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
