"""The deadline sweep's re-sends on SQLite and PostgreSQL: a second re-send is filed under its
real deadline, and a batch filed before its deadline takes no slot of the sweep (the
scenarios and the defect they showed: tests/core/test_core_deadline_resend_filing.py)."""

from __future__ import annotations

from tests.core.test_core_deadline_resend_filing import (
    early_filed_batch_takes_no_slot,
    second_resend_keeps_its_place,
)

from .conftest import StoreMaker


async def test_a_second_re_send_keeps_its_place_in_the_sweep(make_store: StoreMaker) -> None:
    await second_resend_keeps_its_place(await make_store())


async def test_a_batch_filed_before_its_deadline_takes_no_slot_of_the_sweep(make_store: StoreMaker) -> None:
    await early_filed_batch_takes_no_slot(await make_store())
