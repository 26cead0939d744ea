"""The shipped store contract against PostgreSQL (asyncpg), one schema per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipeline_state_sql import open_store

from pipeline_state.testing import ContractStore, StoreContract

pytestmark = pytest.mark.postgres


class TestPostgresStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, pg: Any) -> AsyncIterator[ContractStore]:
        store = await open_store(pg.url, schema=pg.schema)
        yield store
        await store.close()
