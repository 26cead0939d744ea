"""``LaneStore``: what both SQL stores are built on: lanes, error translation, the outbox port.

A store keeps long-lived connections (:mod:`.lanes`): writes run in one transaction on a
writing lane, single-statement reads without one on a reading lane. Driver errors become
the library's errors at this boundary (:func:`translated`, :mod:`pipeline_state_sql.errors`).
The :class:`~pipeline_state.ports.Outbox` port is the shared ``outbox`` table
(:mod:`.outbox`), claimed for ``lease`` seconds under the store's own ``owner`` id. The
pipeline store (:class:`~pipeline_state_sql.store.SqlStore`) and the results store
(:class:`~pipeline_state_sql.results_store.SqlResultsStore`) are both lane stores.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline_state._catalog import check_deadline
from pipeline_state._limits import check_limit
from pipeline_state.errors import RejectedDataError, StoreError
from pipeline_state.ports import OutboxRow

from . import driver_threads
from . import outbox as sql_outbox
from .engine import check_store_url, create_engine, is_postgres
from .errors import DRIVER_ERRORS, translate
from .lanes import alone, in_transaction, outside_transaction, reader_writer_lanes
from .migrate import create_or_upgrade

__all__ = ["LaneStore", "open_on_new_engine", "translated"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def translated(batch_id: str | None = None) -> Iterator[None]:
    """Driver errors raised inside become the library's errors (``raise ... from``)."""
    try:
        yield
    except (StoreError, RejectedDataError):
        raise
    except DRIVER_ERRORS as exc:
        raise translate(exc, batch_id=batch_id) from exc
    except UnicodeEncodeError as exc:  # a lone surrogate the driver could not encode
        raise RejectedDataError(f"a value cannot be encoded: {exc.reason}", batch_id=batch_id) from exc
    except OverflowError as exc:  # a number the driver cannot bind (SQLite: past 64 bits)
        raise RejectedDataError(f"a value is out of range: {exc}", batch_id=batch_id) from exc


class LaneStore:
    """Reading and writing lanes on ``engine`` and the outbox port (see the module doc).

    ``lease`` is how long a claimed outbox row stays reserved for the relay that claimed it
    (after that another relay may claim it again). :meth:`close` disposes the engine when
    the store owns it.
    """

    def __init__(self, engine: AsyncEngine, *, lease: float = 30.0, owns_engine: bool = False) -> None:
        if check_deadline(lease) is not None:
            raise ValueError(f"lease must be a positive number of seconds, at most ten years, got {lease!r}")
        self.engine = engine
        self.lease = timedelta(seconds=lease)
        self.owner = uuid.uuid4().hex[:16]
        self._owns_engine = owns_engine
        self._readers, self._writers = reader_writer_lanes(engine)
        self._one_statement_alone = is_postgres(engine)

    @property
    def concurrent_writers(self) -> int | None:
        """How many write transactions the database runs at once, when it has a limit of its
        own: 1 on SQLite (one writer at a time: concurrent units of work queue for it, each
        with its own commit and ``fsync``), ``None`` on PostgreSQL. A consumer handling
        several lanes of a fetch at once gains nothing from more lanes than this (see
        ``pipeline_state_service``'s runner)."""
        return None if is_postgres(self.engine) else 1

    async def close(self) -> None:
        """Close the store's connections; dispose the engine if this store created it."""
        await self._readers.close()
        await self._writers.close()
        if self._owns_engine:
            await self.engine.dispose()

    # -- plumbing ---------------------------------------------------------------------------
    async def _read(
        self, fn: Callable[Concatenate[Connection, _P], _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """``fn`` on a reading lane, outside a transaction, errors translated."""
        with translated():
            return await self._readers.run(outside_transaction, fn, *args, **kwargs)

    async def _write(
        self, fn: Callable[Concatenate[Connection, _P], _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """``fn`` in one transaction on a writing lane (errors untranslated: the caller
        translates them naming what it writes, see :func:`translated`)."""
        return await self._writers.run(in_transaction, fn, *args, **kwargs)

    async def _write_one(
        self, fn: Callable[Concatenate[Connection, _P], _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """:meth:`_write` for an ``fn`` that sends one statement: on PostgreSQL that
        statement is sent alone, in autocommit (:func:`~pipeline_state_sql.lanes.alone`),
        one round trip instead of ``BEGIN``, the statement and ``COMMIT``."""
        if self._one_statement_alone:
            return await self._writers.run(alone, fn, *args, **kwargs)
        return await self._writers.run(in_transaction, fn, *args, **kwargs)

    # -- Outbox (each operation one statement) --------------------------------------------
    async def claim(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        check_limit(limit)
        with translated():
            return await self._write_one(
                sql_outbox.claim_rows, now, limit, lease=self.lease, owner=self.owner
            )

    async def mark_published(self, row_ids: Sequence[int], now: datetime) -> None:
        with translated():
            await self._write_one(sql_outbox.mark_published, row_ids, now)

    async def mark_failed(
        self,
        row_id: int,
        error: str,
        now: datetime,
        *,
        retry_at: datetime,
        park: bool,
        leased_until: datetime | None = None,
    ) -> bool:
        with translated():
            return await self._write_one(
                sql_outbox.mark_failed,
                row_id,
                error,
                now,
                retry_at=retry_at,
                park=park,
                owner=self.owner,
                leased_until=leased_until,
            )

    async def pending_count(self) -> int:
        return await self._read(sql_outbox.count_pending)

    async def parked(self, limit: int = 100) -> list[OutboxRow]:
        check_limit(limit)
        return await self._read(sql_outbox.parked_rows, limit)


_Store = TypeVar("_Store", bound=LaneStore)


async def open_on_new_engine(
    cls: type[_Store],
    url: str | URL,
    *,
    upgrade: bool = True,
    schema: str | None = None,
    lease: float = 30.0,
    **engine_options: Any,
) -> _Store:
    """A ``cls`` store on a new engine for ``url`` that it owns (closed with its ``close``),
    after :func:`~pipeline_state_sql.migrate.create_or_upgrade` unless ``upgrade`` is false;
    the engine is disposed again if the upgrade fails."""
    check_store_url(url, schema=schema)
    threads = driver_threads.workers()
    engine = create_engine(url, schema=schema, **engine_options)
    try:
        if upgrade:
            await create_or_upgrade(engine)
    except BaseException:
        await engine.dispose()
        await driver_threads.settle(threads)  # the caller may close its loop at once
        raise
    return cls(engine, lease=lease, owns_engine=True)
