"""The store contract held to a second profile's states (issue 13.3): the media profile of
``examples/custom_catalog.py`` on the in-memory store, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_state_sql import open_store

from pipeline_state import InMemoryStore, Profile
from pipeline_state.profiles import load_profile
from pipeline_state.testing import ContractStore, StoreContract

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"


MEDIA = load_profile(f"{EXAMPLE}:MEDIA")


class _Media(StoreContract):
    @pytest.fixture
    def profile(self) -> Profile:
        return MEDIA


class TestInMemoryStoreMediaContract(_Media):
    @pytest.fixture
    async def store(self) -> AsyncIterator[ContractStore]:
        return InMemoryStore()


class TestSqliteStoreMediaContract(_Media):
    @pytest.fixture
    async def store(self, sqlite_url: str) -> AsyncIterator[ContractStore]:
        store = await open_store(sqlite_url)
        yield store
        await store.close()


@pytest.mark.postgres
class TestPostgresStoreMediaContract(_Media):
    @pytest.fixture
    async def store(self, pg: Any) -> AsyncIterator[ContractStore]:
        store = await open_store(pg.url, schema=pg.schema)
        yield store
        await store.close()
