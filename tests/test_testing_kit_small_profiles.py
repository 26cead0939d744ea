"""The public testing kit (``pipeline_state.testing``) and the demo with a custom profile
that allows few items per batch (each test: a defect found by an attack on the kit).

A profile may allow as few as one item per batch (``Profile.max_items_per_batch`` is
validated to lie between 1 and the wire bound). The kit's suites that "take the profile as
a parameter" (docs/testing.md, "A profile with a wire of its own") must then still drive
that profile, not fail or report everything unreachable because they hard-code batch sizes.
"""

from __future__ import annotations

from pipeline_state import Catalog, InMemoryStore
from pipeline_state._profile import Profile
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.testing import coverage, explore
from pipeline_state.testing.contract import StoreContract

CATALOG = Catalog.from_dict(
    {"pipelines": {"check": {"steps": [{"name": "spellcheck", "deadline_seconds": 30}]}}}
)


def _profile(max_items: int) -> Profile:
    return huleedu_profile(catalog=CATALOG, max_items_per_batch=max_items)


def test_path_generator_reaches_registration_on_a_profile_of_one_item_per_batch() -> None:
    """Was a defect. Expected: ``explore(profile)`` (and ``pipeline-state paths --profile``) on a valid
    profile with ``max_items_per_batch=1`` registers a batch and walks its runs, as it does
    for the same catalog with the default bound. Actual: the alphabet always registers
    ``_ITEMS`` (2) items (paths.py ``inputs_for``: ``_registration(batch_id, _ITEMS, ...)``),
    every registration is refused with ``too_many_items``, and the report names all 40
    declared transitions, ``register`` included, as unreachable: the coverage gate fails
    for a reason that is the kit's, not the user's profile's."""
    exploration = explore(_profile(1), intake_profile=None)
    assert exploration.complete
    assert not exploration.crashes
    assert not exploration.violations
    missing = {str(t) for t in coverage(exploration).missing}
    assert "batch: register (absent) -> awaiting_content_validation" not in missing
    assert "run: finish active -> completed_successfully" not in missing


async def test_store_contract_drives_a_profile_of_two_items_per_batch() -> None:
    """Was a defect. Expected: the store contract's ``profile`` fixture "drives every pipeline of that
    profile through your store" (docs/testing.md); held against the reference
    ``InMemoryStore`` with a valid profile allowing two items per batch, the round-trip test
    passes. Actual: ``test_every_state_of_the_profiles_runs_round_trips`` (contract.py, the
    ``items = env.item_ids("whole-1", 3)`` line) always registers three items, the service
    raises ``ItemMismatchError: too_many_items (3 items, the profile allows 2)`` and the
    contract fails, blaming the user's store for the kit's own batch size."""
    contract = StoreContract()
    await contract.test_every_state_of_the_profiles_runs_round_trips(InMemoryStore(), _profile(2))


def test_profile_machine_holds_a_profile_of_two_items_per_batch() -> None:
    """Was a defect. Expected: ``ProfileMachine.for_profile(profile)`` "holds any profile to the promises"
    (profile_machine.py docstring, docs/testing.md); on a valid profile allowing two items
    per batch it passes. Actual: its ``register`` rule draws 1..3 items regardless of
    ``profile.max_items_per_batch`` (profile_machine.py ``@rule(items=st.integers(min_value=1,
    max_value=3), ...)``), so the runtime raises ``ItemMismatchError: too_many_items (3
    items, the profile allows 2)`` and the property test fails on the kit's own input."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    from pipeline_state.testing import ProfileMachine

    machine = ProfileMachine.for_profile(_profile(2))
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=10,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


TWO_ITEMS = _profile(2)
"""A valid profile allowing two items per batch, for ``--profile FILE.py:NAME``."""


def test_demo_plays_a_profile_of_two_items_per_batch(capsys) -> None:
    """Was a defect. Expected: ``pipeline-state demo --profile FILE.py:NAME`` "plays any profile in
    memory" (docs/testing.md) and exits 0 on a valid profile allowing two items per batch.
    Actual: the demo registers ``ITEMS_PER_BATCH = 3`` items per batch whatever the profile
    allows (pipeline_state/_demo/any_profile.py), the runtime refuses the registration and
    the command exits 1 with ``error: batch 'demo-1': too_many_items (3 items, the profile
    allows 2)``."""
    from pipeline_state._cli import main

    code = main(["demo", "--profile", f"{__file__}:TWO_ITEMS", "--plain"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
