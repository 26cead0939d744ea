"""The shipped results store contract against the in-memory results store."""

from __future__ import annotations

import pytest

from pipeline_state.profiles.huleedu.results import InMemoryResultsStore
from pipeline_state.profiles.huleedu.testing.results_contract import (
    ContractResultsStore,
    ResultsStoreContract,
)


class TestInMemoryResultsStoreContract(ResultsStoreContract):
    @pytest.fixture
    async def store(self) -> ContractResultsStore:
        return InMemoryResultsStore()
