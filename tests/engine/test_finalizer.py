"""The finalizer is the only way to complete: every gate of DESIGN.md step 11 must pass."""

from __future__ import annotations

from runs.engine.ci import CiDelta, CiRun
from runs.engine.finalizer import Evidence, finalize, missing_deliverables, required_tests_failing
from runs.engine.prompts import AuditVerdict

APPROVED = AuditVerdict(approved=True, parsed=True)


def good(**overrides) -> Evidence:
    values = dict(
        operations=2,
        changed_paths=["a.py"],
        delta=CiDelta(passed=3),
        after=CiRun(command="", results={"tests.test_a::test_a": "passed"}),
        verdict=APPROVED,
    )
    values.update(overrides)
    return Evidence(**values)


def test_all_gates_passing_completes():
    verdict = finalize(good())
    assert verdict.complete and verdict.failures == []
    assert verdict.gates == {
        "apply": "pass",
        "no_op": "pass",
        "deliverables": "pass",
        "ci": "pass",
        "required_tests": "pass",
        "audit": "pass",
    }


def test_a_change_that_changes_nothing_is_not_complete_unless_allowed():
    assert finalize(good(changed_paths=[])).primary.category == "no_op"
    assert finalize(good(changed_paths=[], allow_noop=True)).complete


def test_collection_errors_block_even_with_every_test_passing():
    verdict = finalize(good(delta=CiDelta(collection_errors=["tests/test_a.py: ImportError"], passed=10)))
    assert not verdict.complete and verdict.primary.category == "collection_errors"
    assert "ImportError" in verdict.feedback()


def test_new_persistent_failures_block_but_pre_existing_and_flaky_ones_do_not():
    assert finalize(good(delta=CiDelta(still_failing=["t::old"], flaky=["t::flaky"]))).complete
    verdict = finalize(good(delta=CiDelta(new_failures=["t::new"], messages={"t::new": "assert 1 == 2"})))
    assert verdict.primary.category == "new_failures" and "assert 1 == 2" in verdict.feedback()


def test_required_tests_must_exist_and_pass():
    after = CiRun(command="", results={"tests.test_a::test_a": "passed", "tests.test_b::test_b": "failed"})
    assert finalize(good(after=after, required_tests=["tests/test_a.py::test_a"])).complete
    failing = finalize(good(after=after, required_tests=["tests/test_b.py::test_b", "tests/test_c.py::test_c"]))
    assert failing.primary.category == "required_tests"
    assert required_tests_failing(after, ["tests/test_b.py::test_b", "tests/test_c.py::test_c"]) == [
        "tests/test_b.py::test_b",
        "tests/test_c.py::test_c",
    ]


def test_an_auditor_rejection_or_no_audit_at_all_is_not_complete():
    rejected = AuditVerdict(approved=False, parsed=True, summary="wrong")
    assert finalize(good(verdict=rejected)).primary.category == "audit_rejected"
    assert finalize(good(verdict=None)).primary.category == "audit_missing"


def test_missing_deliverables_block(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "a.py").write_text("x")
    assert missing_deliverables(tmp_path, ["a.py", "b.py", "docs/", "src/"]) == ["b.py", "docs/", "src/"]
    verdict = finalize(good(missing_deliverables=["b.py"], truncated=True))
    assert verdict.primary.category == "deliverables_missing" and "cut off at max_tokens" in verdict.feedback()


def test_a_refused_apply_stops_at_the_first_gate():
    verdict = finalize(good(apply_error="x.py: outside the phase scope", apply_rules=["out_of_scope"]))
    assert verdict.gates == {"apply": "fail"} and verdict.primary.patch_failure


def test_a_coverage_drop_blocks_only_in_strict_mode():
    dropped = CiDelta(coverage_before=90.0, coverage_after=80.0, coverage_dropped=True)
    assert finalize(good(delta=dropped)).complete
    assert finalize(good(delta=dropped, strict=True)).primary.category == "coverage_drop"


def test_every_failure_is_in_the_feedback_with_the_first_as_primary():
    verdict = finalize(good(missing_deliverables=["b.py"], delta=CiDelta(new_failures=["t::x"]), verdict=None))
    assert [f.category for f in verdict.failures] == ["deliverables_missing", "new_failures"]
