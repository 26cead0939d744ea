"""Optional parts of the project a test needs (packages and services): skipped when absent on
a developer's machine, a failure under ``CI=true``, where the ``dev`` extra installs every
package and ``.ci/run`` starts every service."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """A test cannot run for want of ``message``: ``pytest.fail`` under ``CI=true``, else
    ``pytest.skip``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI=true: {message}")
    pytest.skip(message)


def require(module: str) -> ModuleType:
    """``module`` imported; ``pytest.skip`` when it cannot be, or ``pytest.fail`` under CI."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        unavailable(f"{module} is not installed (the dev extra installs it): {exc}")
