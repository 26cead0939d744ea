"""The shipped store contract against SQLite (a file in WAL mode, through aiosqlite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pipeline_state_sql import open_store

from pipeline_state.testing import ContractStore, StoreContract


class TestSqliteStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, sqlite_url: str) -> AsyncIterator[ContractStore]:
        store = await open_store(sqlite_url)
        yield store
        await store.close()


class TestSqliteInMemoryStoreContract(StoreContract):
    """An in-memory SQLite database: one shared connection for reads and writes."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[ContractStore]:
        store = await open_store("sqlite+aiosqlite://")
        yield store
        await store.close()


class TestSqliteStockDriverContract(StoreContract):
    """SQLAlchemy's own aiosqlite connections (``lean=False``) instead of LeanConnection."""

    @pytest.fixture
    async def store(self, sqlite_url: str) -> AsyncIterator[ContractStore]:
        store = await open_store(sqlite_url, lean=False)
        yield store
        await store.close()
