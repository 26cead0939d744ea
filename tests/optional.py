"""Optional parts of the project a test needs: skipped when absent on a developer's machine,
a failure under ``CI=true``, where the ``dev`` extra installs every one of them."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(module: str) -> ModuleType:
    """``module`` imported; ``pytest.skip`` when it cannot be, or ``pytest.fail`` under CI."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} is required under CI=true (the dev extra installs it): {exc}")
        pytest.skip(f"{module} is not installed: {exc}")
