"""Names a package imports from its submodules on first use (PEP 562 ``__getattr__``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping

__all__ = ["lazy_attribute"]


def lazy_attribute(package: str, homes: Mapping[str, str], name: str) -> object:
    """``name`` from the submodule of ``package`` that ``homes`` names for it, kept in the
    package's namespace so the next access is a plain lookup."""
    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{package}.{home}"), name)
    setattr(sys.modules[package], name, value)
    return value
