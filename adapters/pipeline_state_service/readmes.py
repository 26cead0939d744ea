"""The tables of ``PIPELINE_STATE_*`` variables in the packages' READMEs, generated.

Each adapter's README lists the variables of its own settings model
(:class:`pipeline_state_sql.Settings`, :class:`pipeline_state_kafka.Settings`,
:class:`pipeline_state_http.Settings`); this package's README lists every variable ``serve``
reads. The tables sit between ``<!-- BEGIN settings:NAME -->`` and ``<!-- END settings:NAME -->``
markers and are rendered from the models (name, default, description), so they cannot drift
from the code; a test re-renders them. Regenerate them with::

    python -m pipeline_state_service.readmes            # rewrite the tables that changed
    python -m pipeline_state_service.readmes --check    # exit 1 and list the stale READMEs
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pipeline_state_http
import pipeline_state_kafka
import pipeline_state_sql

from pipeline_state._settings import EnvironmentSettings, replace_block, variables_table

from . import settings as serve_settings

__all__ = ["REGENERATE_COMMAND", "main", "render_readmes", "stale_readmes", "write_readmes"]

REGENERATE_COMMAND = "python -m pipeline_state_service.readmes"


def _readme(package: object) -> Path:
    return Path(str(getattr(package, "__file__", ""))).parent / "README.md"


def _blocks() -> dict[Path, dict[str, tuple[type[EnvironmentSettings], ...]]]:
    return {
        _readme(pipeline_state_sql): {"settings:sql": (pipeline_state_sql.Settings,)},
        _readme(pipeline_state_kafka): {"settings:kafka": (pipeline_state_kafka.Settings,)},
        _readme(pipeline_state_http): {"settings:http": (pipeline_state_http.Settings,)},
        Path(__file__).parent / "README.md": {
            "settings:serve": (serve_settings.Settings,),
            "settings:serve-adapters": (pipeline_state_kafka.Settings, pipeline_state_sql.Settings),
            "settings:serve-http": (pipeline_state_http.Settings,),
        },
    }


def render_readmes() -> dict[Path, str]:
    """Every README with generated tables, as it should read."""
    rendered: dict[Path, str] = {}
    for path, blocks in _blocks().items():
        text = path.read_text(encoding="utf-8")
        for name, models in blocks.items():
            text = replace_block(text, name, variables_table(models))
        rendered[path] = text
    return rendered


def stale_readmes() -> list[Path]:
    """The READMEs whose tables differ from a fresh render."""
    return [path for path, text in render_readmes().items() if path.read_text(encoding="utf-8") != text]


def write_readmes() -> list[Path]:
    """Rewrite the stale READMEs; returns them."""
    stale = stale_readmes()
    rendered = render_readmes()
    for path in stale:
        path.write_text(rendered[path], encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE_COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale READMEs and exit 1, write nothing")
    args = parser.parse_args(argv)
    paths = stale_readmes() if args.check else write_readmes()
    for path in paths:
        print(("stale: " if args.check else "wrote: ") + str(path))
    return 1 if args.check and paths else 0


if __name__ == "__main__":
    raise SystemExit(main())
