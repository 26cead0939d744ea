"""Fixtures of the documentation tests: the site, built once per session with ``--strict``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["ROOT", "BuiltSite", "build_site"]

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class BuiltSite:
    """The outcome of ``mkdocs build --strict``: the site folder, exit code and output."""

    path: Path
    returncode: int
    output: str


def build_site(config: Path, site_dir: Path) -> BuiltSite:
    """Run ``mkdocs build --strict`` on ``config`` into ``site_dir`` (from the repository root)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    return BuiltSite(site_dir, completed.returncode, completed.stdout + completed.stderr)


@pytest.fixture(scope="session")
def mkdocs_build() -> Callable[[Path, Path], BuiltSite]:
    """:func:`build_site`, for tests that build a variant of the site."""
    return build_site


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The real site, built once; fails every dependent test when the build fails."""
    site = build_site(ROOT / "mkdocs.yml", tmp_path_factory.mktemp("docs-site") / "site")
    if site.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed (exit {site.returncode}):\n{site.output}")
    return site
