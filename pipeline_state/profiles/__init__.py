"""Profiles: the shipped ones (:mod:`.huleedu`), :func:`default_profile`, the one used
wherever none is given (runtime, ``serve``, demo, docs), and :func:`load_profile`, which finds
one named on a command line (``pipeline-state demo --profile``, ``pipeline-state serve
--profile``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_state.errors import DefinitionError

if TYPE_CHECKING:
    from pipeline_state._docsgen import WireContract
    from pipeline_state._inbound import Inbound
    from pipeline_state._outbound import Outbound
    from pipeline_state._profile import Profile

__all__ = [
    "DEFAULT_PROFILE",
    "default_profile",
    "default_wire",
    "default_wire_contract",
    "load_profile",
    "run_default_demo",
]

DEFAULT_PROFILE = "pipeline_state.profiles.huleedu:huleedu_profile"
"""The profile used wherever none is given, as :func:`load_profile` reads it."""


def default_profile() -> Profile:
    """A new instance of the default profile (:data:`DEFAULT_PROFILE`) with its defaults."""
    from .huleedu.profile import huleedu_profile

    return huleedu_profile()


def default_wire() -> tuple[Inbound, Outbound]:
    """The default profile's inbound and outbound wire: what a :class:`Profile` built without
    its own consumes and emits."""
    from .huleedu import HULEEDU_INBOUND, HULEEDU_OUTBOUND

    return HULEEDU_INBOUND, HULEEDU_OUTBOUND


def default_wire_contract() -> WireContract:
    """What the documentation's wire-contract page describes: the default profile's topics."""
    from .huleedu.wire_contract import HULEEDU_WIRE_CONTRACT

    return HULEEDU_WIRE_CONTRACT


def run_default_demo(*, seed: int = 7, batches: int = 2, plain: bool = False) -> int:
    """Play the default profile's own demo story (``pipeline-state demo``) and print it;
    returns its exit code (0 when every expectation held)."""
    from .huleedu.demo import run_demo

    return run_demo(seed=seed, batches=batches, plain=plain)


def load_profile(spec: str) -> Profile:
    """The profile ``spec`` names (``file.py:NAME`` or ``module:NAME``).

    Raises:
        DefinitionError: the spec is malformed, names nothing or not a profile, or its
            module or factory raised (the error's class and message, on one line).
    """
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise DefinitionError("profile", f"{spec!r}: expected FILE.py:NAME or MODULE:NAME")
    loading: str | None = None  # the name a file is loaded under, dropped again if it fails
    try:
        if where.endswith(".py"):
            path = Path(where)
            module_name = f"_pipeline_state_profile_{abs(hash(path.resolve()))}"
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            if loader_spec is None or loader_spec.loader is None or not path.is_file():
                raise DefinitionError("profile", f"{spec!r}: no such file {where}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loading = module_name
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except DefinitionError:
        raise
    except ImportError as exc:
        _forget(loading)
        raise DefinitionError("profile", f"{spec!r}: cannot import {where}: {exc}") from None
    except Exception as exc:  # the user's module failed: one line, not a traceback
        _forget(loading)
        raise DefinitionError("profile", f"{spec!r}: {where} failed to load: {_error(exc)}") from None
    if not hasattr(module, name):
        raise DefinitionError("profile", f"{spec!r}: {where} has no {name}")
    from pipeline_state._profile import Profile, check_profile  # it imports this package

    found: Any = getattr(module, name)
    if callable(found) and not isinstance(found, Profile):
        try:
            found = found()
        except Exception as exc:  # the user's factory failed
            raise DefinitionError("profile", f"{spec!r}: {name}() failed: {_error(exc)}") from None
    return check_profile(found)


def _forget(module_name: str | None) -> None:
    if module_name is not None:
        sys.modules.pop(module_name, None)


def _error(exc: BaseException) -> str:
    """``ErrorClass: message`` on one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
