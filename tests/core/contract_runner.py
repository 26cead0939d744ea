"""Run a whole contract suite (:class:`~pipeline_state.testing.contract.StoreContract`, the
results store's) against a store outside pytest's collection, for tests that hold it to
many stores (mutants) at once."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from pipeline_state.profiles import default_profile
from pipeline_state.testing.contract import StoreContract

__all__ = ["contract_failures"]


async def contract_failures(factory: Any, contract: type = StoreContract) -> list[str]:
    """The tests of ``contract`` that fail against a fresh store from ``factory`` each."""
    suite = contract()
    failed = []
    for name, method in inspect.getmembers(contract, inspect.iscoroutinefunction):
        if not name.startswith("test_"):
            continue
        params = inspect.signature(method).parameters
        kwargs: dict[str, Any] = {"store": factory()} if "store" in params else {}
        if "profile" in params:
            kwargs["profile"] = default_profile()
        try:
            await getattr(suite, name)(**kwargs)
        except pytest.skip.Exception:
            continue
        except BaseException:
            failed.append(name)
    return failed
