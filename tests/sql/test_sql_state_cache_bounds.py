"""What the SQL stores keep in process memory of the states they wrote and read: bounded by
the size of the stored text, not only by the number of batches (found by an attack).

Before, the state cache kept up to 2,048 batches whatever their size, and on SQLite each
with its stored text as the key: batches as large as the wire admits (1,000 items with
100-character ids, ~0.8 MB each once decoded) would have pinned ~1.7 GB in one ``serve``
process; the module's text memo (256 states) kept ~175 MB of them after the store closed.
"""

from __future__ import annotations

import attrs
import pytest
from pipeline_state_sql import SqlStore, codec
from pipeline_state_sql.state_cache import STATE_CACHE_BYTES, StateCache

from pipeline_state._model import BatchState, ItemRef
from pipeline_state.ports import Change
from pipeline_state.testing import T0, make_state


def _big_state(batch_id: str, items: int = 1000) -> BatchState:
    """A batch the wire admits: 1,000 items, ids of 100 characters."""
    refs = tuple(
        ItemRef(f"{batch_id}-{n:04d}".ljust(100, "i"), f"store/{batch_id}-{n:04d}".ljust(100, "r"))
        for n in range(items)
    )
    state = make_state(batch_id)
    return attrs.evolve(state, items=refs, item_ids=tuple(r.item_id for r in refs), expected_items=items)


def test_the_cache_keeps_at_most_its_bytes_and_never_a_state_too_large() -> None:
    cache = StateCache(size=100, max_bytes=16_000)  # one entry: at most 1,000
    states = {f"b{n}": make_state(f"b{n}") for n in range(10)}
    for batch_id, state in states.items():
        cache.written(state, f"key-{batch_id}", 900)
    assert (len(cache), cache.bytes) == (10, 9000)
    for n in range(14):  # 14,000 more: the eight oldest (7,200) go to fit
        cache.written(make_state(f"x{n}"), f"x{n}", 1000)
    assert cache.bytes <= 16_000
    assert [b for b in states if b in cache._entries] == ["b8", "b9"]
    cache.written(make_state("huge"), "huge", 1001)  # over a sixteenth of the budget
    assert "huge" not in cache._entries
    cache.written(states["b9"], "key-b9", 1001)  # an entry that grows past the limit goes
    assert "b9" not in cache._entries
    assert cache.bytes == sum(weight for _, _, weight in cache._entries.values())
    cache.forget()
    assert (len(cache), cache.bytes) == (0, 0)
    with pytest.raises(ValueError, match="max_bytes"):
        StateCache(max_bytes=0)


async def test_large_batches_on_sqlite_stay_within_the_cache_budget(sqlite_store: SqlStore) -> None:
    count = 12
    for n in range(count):
        await sqlite_store.commit(Change(f"big-{n}", None, _big_state(f"big-{n}"), T0))
    cache = sqlite_store._states
    assert cache is not None
    text = len(codec.state_text(_big_state("big-0")))
    assert text > 64 * 1024  # the size the attack used: far larger than a usual batch
    assert cache.bytes <= STATE_CACHE_BYTES
    assert cache.bytes == sum(weight for _, _, weight in cache._entries.values())
    # Every batch still reads back whole, cached or not.
    for n in range(count):
        state = await sqlite_store.load(f"big-{n}")
        assert state is not None
        assert len(state.items) == 1000


def test_the_text_memo_keeps_a_bounded_amount_of_text() -> None:
    for n in range(40):
        codec.state_text(_big_state(f"memo-{n}", items=200))
    kept = sum(len(text) for _, text in codec._TEXTS.values())
    assert kept <= codec._TEXTS_BYTES
    assert kept == codec._texts_bytes
    huge = _big_state("memo-huge")
    text = codec.state_text(huge)
    assert len(text) > codec._TEXTS_BYTES // 16
    assert id(huge) not in codec._TEXTS  # not kept: encoded again when asked again
