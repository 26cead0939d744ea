"""The layers of the code, enforced: the import-linter contracts of ``pyproject.toml``.

The core (``pipeline_state``) imports no adapter; each adapter (``pipeline_state_sql``,
``pipeline_state_kafka``, ``pipeline_state_http``) imports only the core and its own driver,
nothing of a sibling; only the composition root (``pipeline_state_service``) imports
adapters. ``lint-imports`` checks it here, a contract known to be broken shows that a broken
one fails, and the architecture page's diagram is compared with the contracts it draws.
"""

from __future__ import annotations

import itertools
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.optional import unavailable

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- contracts:begin -->", "<!-- contracts:end -->"


def _lint_imports() -> Any:
    try:
        from importlinter.cli import lint_imports
    except ImportError as exc:  # the dev extra is not installed
        unavailable(f"import-linter is not installed: {exc}")
    return lint_imports


def _run(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    # The linter's CLI configures logging with ``disable_existing_loggers``: every logger made
    # before it goes quiet, and a later test that reads a log line finds none. Put them back.
    loggers = [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    disabled = [logger.disabled for logger in loggers]
    try:
        code = _lint_imports()(config_filename=str(config), no_cache=True, no_logo=True)
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.disabled = was
    return code, capsys.readouterr().out


def _settings() -> dict[str, Any]:
    settings: dict[str, Any] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    return settings


def test_the_import_contracts_hold(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(PYPROJECT, capsys)
    contracts = _settings()["contracts"]
    assert code == 0, out
    assert f"Contracts: {len(contracts)} kept, 0 broken." in out
    for contract in contracts:
        assert f"{contract['name']} KEPT" in out


def _config_with(tmp_path: Path, contract: str) -> Path:
    roots = ", ".join(f'"{root}"' for root in _settings()["root_packages"])
    config = tmp_path / "contracts.toml"
    config.write_text(f"[tool.importlinter]\nroot_packages = [{roots}]\n\n{contract}", encoding="utf-8")
    return config


BROKEN = [
    pytest.param(
        # The same layers upside down (the core on top): the service imports the core, which
        # a lower layer may not; the linter names the importing modules.
        "upside down",
        '"pipeline_state", "pipeline_state_service"',
        [
            "pipeline_state_service is not allowed to import pipeline_state:",
            "- pipeline_state_service.extensions -> pipeline_state._service",
        ],
        id="core-on-top",
    ),
    pytest.param(
        # The composition root declared a sibling of the Kafka adapter (the shape of an
        # adapter that imports another adapter): it does import it, so the contract fails.
        "service as a sibling",
        '"pipeline_state_service | pipeline_state_kafka", "pipeline_state"',
        ["pipeline_state_service is not allowed to import pipeline_state_kafka"],
        id="adapter-imports-a-sibling",
    ),
]


@pytest.mark.parametrize(("name", "layers", "said"), BROKEN)
def test_a_broken_contract_fails_and_names_the_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, layers: str, said: list[str]
) -> None:
    contract = f'[[tool.importlinter.contracts]]\nname = "{name}"\ntype = "layers"\nlayers = [{layers}]\n'
    code, out = _run(_config_with(tmp_path, contract), capsys)
    assert code == 1, out
    assert f"{name} BROKEN" in out
    assert "Contracts: 0 kept, 1 broken." in out
    for line in said:
        assert line in out


def render_layers() -> list[str]:
    """The architecture page's diagram, drawn from the ``layers`` contract: an arrow from each
    package to each package of the layer below it (what it may import)."""
    (layers,) = [c for c in _settings()["contracts"] if c["type"] == "layers"]
    rows = [[name.strip() for name in layer.split("|")] for layer in layers["layers"]]
    lines = ["```mermaid", "flowchart TD"]
    for upper, lower in itertools.pairwise(rows):
        lines += [f"    {a} --> {b}" for a in upper for b in lower]
    lines += ["```", "", "| contract | kind | what it checks |", "|---|---|---|"]
    for contract in _settings()["contracts"]:
        if contract["type"] == "layers":
            what = " over ".join(" \\| ".join(f"`{n}`" for n in row) for row in rows)
        else:
            sources = ", ".join(f"`{m}`" for m in contract["source_modules"])
            what = f"{sources} never imports {', '.join(f'`{m}`' for m in contract['forbidden_modules'])}"
        lines.append(f"| {contract['name']} | {contract['type']} | {what} |")
    return lines


def test_the_architecture_page_draws_the_contracts() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    drawn = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n").splitlines()
    assert drawn == render_layers(), "\n".join(["docs/architecture.md should hold:", *render_layers()])


if __name__ == "__main__":  # print the block to paste between the markers
    print("\n".join(render_layers()))
