"""The ``pipeline-state`` CLI run in this process against one store, for the CLI tests: its
exit code and output (:class:`Cli`, :class:`Ran`), and the store opened beside it
(:func:`with_store`, :func:`read`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import pytest
from pipeline_state_sql import open_store

from pipeline_state._cli import main

__all__ = ["Cli", "Database", "Ran", "read", "run_main", "store_args", "with_store"]


class Database(Protocol):
    """A store to open: a URL and, on PostgreSQL, a schema."""

    @property
    def url(self) -> str: ...

    @property
    def schema(self) -> str | None: ...


@attrs.frozen
class Ran:
    """What one CLI call ended with."""

    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def run_main(argv: Sequence[str]) -> int:
    """``pipeline-state argv`` in this process; its exit code (argparse's too)."""
    try:
        return main(list(argv))
    except SystemExit as exc:  # argparse: --version, usage errors
        return int(exc.code or 0)


class Cli:
    """Runs ``pipeline-state`` in this process, with ``store_args`` after every command's own."""

    def __init__(self, capsys: pytest.CaptureFixture[str], store_args: Sequence[str]) -> None:
        self.capsys = capsys
        self.store_args = list(store_args)

    def __call__(self, *argv: str, store: bool = True) -> Ran:
        self.capsys.readouterr()
        code = run_main([*argv, *(self.store_args if store else [])])
        captured = self.capsys.readouterr()
        return Ran(code, captured.out, captured.err)


def store_args(db: Database) -> list[str]:
    """The CLI's options naming ``db``."""
    return ["--store", db.url] + (["--schema", db.schema] if db.schema else [])


async def with_store(db: Database, work: Any, *, upgrade: bool = True) -> Any:
    """``await work(store)`` on ``db`` opened in this process, closed afterwards."""
    store = await open_store(db.url, schema=db.schema, upgrade=upgrade)
    try:
        return await work(store)
    finally:
        await store.close()


def read(db: Database, work: Any) -> Any:
    """:func:`with_store`, run to its end from synchronous code."""
    return asyncio.run(with_store(db, work))
