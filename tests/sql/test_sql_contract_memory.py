"""The shipped store contract against the in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipeline_state import InMemoryStore
from pipeline_state.testing import ContractStore, StoreContract


class TestInMemoryStoreContract(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[ContractStore]:
        return InMemoryStore()
