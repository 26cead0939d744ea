"""The reference model predicts a critical validation failure that ends an active run (open
phases cancelled, the run completed ``failed_critically``, the batch failed). Was a defect
of the shipped test kit (found by an attack on multi-step pipelines): the model asserted
that no such failure comes during a run, while the stateful harness can send one (early
facts re-attempted in arrival order on registration), so it failed a correct engine."""

from __future__ import annotations

import copy

import pytest

from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.profiles.huleedu.testing.reference import ReferenceModel


def test_reference_model_predicts_a_critical_failure_resumed_after_a_run_started() -> None:
    """The shipped harness (``PipelineMachine.arrive_early``) sends, for a batch not
    registered yet, any early fact in any order: provisioning, a pipeline request, then a
    critical ``BatchValidationErrorsV1``. On registration the engine re-attempts them in
    arrival order (CONTRACT 4): the batch becomes ready, the request starts a run, and the
    critical failure then fails the batch and its run (completion ``failed_critically``).
    The reference model cannot predict that step: ``_validation_errors`` asserts
    ``batch.active is None`` ("a critical failure during a run is not modelled"), so the
    stateful harness fails a correct engine on such an example (found with random seeds)."""
    catalog = {"pipelines": {"p": {"steps": [{"name": "a"}, {"name": "b", "depends_on": ["a"]}]}}}
    ref = ReferenceModel(copy.deepcopy(catalog))
    env = HuleEduEnvelopes()
    provisioned = env.provisioned("b1", ["b1-e0"])
    assert ref.provision(provisioned[1]["event_id"], "b1", {"b1-e0": "b1-e0-text"}).kind == "waiting"
    request = env.request("b1", "p")
    corr = request[1]["correlation_id"]
    assert ref.request(request[1]["event_id"], "b1", "p", corr, prompt=False).kind == "waiting"
    errors = env.validation_errors("b1", critical=True)
    assert ref.validation_errors(errors[1]["event_id"], "b1", critical=True).kind == "waiting"
    registration = env.register("b1", items=1)
    try:
        expected = ref.register(registration[1]["event_id"], registration[1]["data"])
    except AssertionError as exc:
        pytest.fail(f"the reference model cannot predict what the engine does here: {exc}")
    completions = expected.all_completed()
    assert [c.final_status for c in completions] == ["failed_critically"]
    assert ref.view("b1")["status"] == "failed_critically"
