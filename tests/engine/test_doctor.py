"""Failure fingerprints, when the Doctor may be called, and the retry / escalate / replan / block policy."""

from __future__ import annotations

from runs.engine.doctor import Failure, decide, doctor_allowed, failure_fingerprint, normalise_error
from runs.engine.hardening import Mitigation
from runs.engine.outcome import OutcomeKind
from runs.engine.prompts import DoctorAdvice
from runs.engine.spec import History, PhaseSpec

FAILURE = Failure("new_failures", "test_x failed: assert 1 == 2", "tests.test_x::test_x assert 1 == 2")


def spec(**history) -> PhaseSpec:
    return PhaseSpec(run_id=1, phase_pk=1, phase_id="p", name="p", history=History(**history))


def test_fingerprints_ignore_paths_line_numbers_and_timings():
    one = "/tmp/pytest-1/repo/tests/test_x.py:12: AssertionError in 0.31s at 0x7f00aa"
    two = "/home/ci/work/repo/tests/test_x.py:14: AssertionError in 1.02s at 0x7f11bb"
    assert normalise_error(one) == normalise_error(two)
    assert failure_fingerprint("new_failures", one) == failure_fingerprint("new_failures", two)
    assert failure_fingerprint("new_failures", one) != failure_fingerprint("new_failures", "KeyError: 'name'")
    assert failure_fingerprint("new_failures", one).startswith("new_failures:")


def test_the_doctor_is_only_called_from_the_second_attempt_and_within_its_limits():
    assert not doctor_allowed(spec(attempt_number=1))
    assert doctor_allowed(spec(attempt_number=2))
    assert not doctor_allowed(spec(attempt_number=3, phase_doctor_calls=2))
    assert not doctor_allowed(spec(attempt_number=3, run_doctor_calls=10))


def test_a_first_failure_retries_with_the_failure_as_feedback():
    decision = decide(spec=spec(), failure=FAILURE, mitigation=None, advice=None, can_escalate_model=True)
    assert decision.kind == OutcomeKind.RETRY and decision.reason == FAILURE.feedback
    assert not decision.escalate_model and not decision.replan


def test_the_same_failure_twice_escalates_the_model_or_replans_at_the_top_of_the_ladder():
    seen = spec(attempt_number=2, failure_fingerprints=[FAILURE.fingerprint])
    assert decide(spec=seen, failure=FAILURE, mitigation=None, advice=None, can_escalate_model=True).escalate_model
    top = decide(spec=seen, failure=FAILURE, mitigation=None, advice=None, can_escalate_model=False)
    assert top.replan and not top.escalate_model


def test_the_same_failure_a_third_time_blocks():
    stuck = spec(attempt_number=3, failure_fingerprints=[FAILURE.fingerprint, "other:1", FAILURE.fingerprint])
    decision = decide(spec=stuck, failure=FAILURE, mitigation=None, advice=None, can_escalate_model=True)
    assert decision.kind == OutcomeKind.BLOCKED and decision.reason.startswith("stuck: the same failure 3 times")


def test_the_attempt_limit_blocks():
    decision = decide(
        spec=spec(attempt_number=5), failure=FAILURE, mitigation=None, advice=None, can_escalate_model=True
    )
    assert decision.kind == OutcomeKind.BLOCKED and "attempt limit" in decision.reason


def test_doctor_actions_map_to_outcomes():
    def with_action(action: str):
        advice = DoctorAdvice(action, 0.8, "because", "do this")
        return decide(
            spec=spec(attempt_number=2), failure=FAILURE, mitigation=None, advice=advice, can_escalate_model=True
        )

    assert (with_action("retry_with_fix").kind, with_action("retry_with_fix").builder_hint) == (
        OutcomeKind.RETRY,
        "do this",
    )
    assert with_action("replan").replan
    assert with_action("skip_phase").kind == OutcomeKind.SKIPPED
    fatal = with_action("mark_fatal")
    assert fatal.kind == OutcomeKind.FAILED and fatal.run_failure_reason == "needs_human"


def test_a_hardening_mitigation_becomes_the_hint():
    mitigation = Mitigation("no_tests_collected", "name tests test_*.py", "no tests")
    decision = decide(spec=spec(), failure=FAILURE, mitigation=mitigation, advice=None, can_escalate_model=True)
    assert decision.builder_hint == "name tests test_*.py" and decision.source == "hardening"
