"""The golden wire tests import their recorder as ``tests.golden.record`` (the module that
``python -m tests.golden.record`` runs), so the repository root must be importable."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
