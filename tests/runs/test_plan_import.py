"""plan_import and manage.py import_plan: rows created in one transaction, duplicates, replace, atomicity."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection

from autopack_site.lib.errors import Conflict
from runs.models import Phase, Run, RunState, RunTransition, Tier
from runs.plan import PlanInvalid
from runs.services.control import run_start
from runs.services.plan import plan_import, plan_validate
from tests.factories import make_project, make_user

pytestmark = pytest.mark.django_db

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"


def three_phase_plan() -> dict[str, Any]:
    return {
        "name": "Three",
        "goal": "Do three things",
        "budgets": {"token_cap": 1000, "usd_cap": 2.5, "max_phases": 3, "max_minutes": 30},
        "models": {"builder": {"low": "claude-haiku-4-5"}},
        "tiers": [{"id": "a", "name": "A"}, {"id": "b", "name": "B", "description": "second"}],
        "phases": [
            {"id": "b1", "tier": "b", "name": "B one", "scope": {"deliverables": ["b1.py"]}},
            {"id": "a1", "tier": "a", "name": "A one", "category": "tests", "scope": {"deliverables": ["a1.py"]}},
            {"id": "a2", "tier": "a", "name": "A two", "complexity": "high", "scope": {"deliverables": ["a2.py"]}},
        ],
    }


def row_counts() -> tuple[int, int, int]:
    return Run.objects.count(), Tier.objects.count(), Phase.objects.count()


def test_import_creates_the_run_tiers_and_phases_in_execution_order() -> None:
    project = make_project("demo")
    user = make_user("alice")
    result = plan_import(project=project, document=three_phase_plan(), source_name="three.yaml", created_by=user)
    run = Run.objects.get(pk=result.run.pk)
    assert (run.name, run.goal, run.state, run.created_by) == ("Three", "Do three things", RunState.QUEUED, user)
    assert (run.token_cap, run.usd_cap, run.max_phases, run.max_minutes) == (1000, Decimal("2.5"), 3, 30)
    assert (run.max_failures, run.max_patch_failures, run.phases_total) == (25, 15, 3)
    assert run.model_mapping == {"builder": {"low": "claude-haiku-4-5"}}
    plan, _ = plan_validate(three_phase_plan())
    assert run.plan == plan
    assert run.plan_sha256 == plan_validate.__globals__["validate_plan"](three_phase_plan()).sha256
    assert list(run.tiers.values_list("index", "tier_id", "name", "description")) == [
        (0, "a", "A", ""),
        (1, "b", "B", "second"),
    ]
    phases = list(Phase.objects.filter(run=run).order_by("sequence"))
    assert [(p.sequence, p.tier.tier_id, p.index, p.phase_id) for p in phases] == [
        (0, "a", 0, "a1"),
        (1, "a", 1, "a2"),
        (2, "b", 0, "b1"),
    ]
    assert (phases[0].category, phases[1].complexity, phases[2].state) == ("tests", "high", "queued")
    assert phases[0].scope["paths"] == ["a1.py"]
    assert result.warnings[-1] == "phases: reordered to follow the order of their tiers (phases run tier by tier)"


def test_a_plan_failing_validation_leaves_no_rows() -> None:
    project = make_project()
    plan = three_phase_plan()
    plan["phases"][2]["scope"]["paths"] = ["../escape.py"]
    with pytest.raises(PlanInvalid) as caught:
        plan_import(project=project, document=plan, source_name="bad.yaml")
    assert [str(error) for error in caught.value.errors] == ["phases[2].scope.paths[0]: '..' segments are not allowed"]
    assert row_counts() == (0, 0, 0)


def test_a_database_error_on_the_phase_insert_rolls_back_the_run_and_tiers() -> None:
    project = make_project()
    seen: list[str] = []

    def fail_on_phase_insert(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql.split()[0])
        if sql.lstrip().upper().startswith("INSERT") and "runs_phase" in sql:
            raise DatabaseError("injected failure on the phase insert")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_on_phase_insert):
        with pytest.raises(DatabaseError, match="injected"):
            plan_import(project=project, document=three_phase_plan(), source_name="three.yaml")
    assert seen.count("INSERT") >= 3  # the run and both tiers were written before the failure
    assert row_counts() == (0, 0, 0)


def test_a_failing_start_rolls_back_the_import() -> None:
    project = make_project()

    def fail_on_transition(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT") and "runs_runtransition" in sql:
            raise DatabaseError("injected failure on start")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_on_transition):
        with pytest.raises(DatabaseError):
            plan_import(project=project, document=three_phase_plan(), source_name="x", start=True)
    assert row_counts() == (0, 0, 0)


def test_import_with_start_starts_the_run_as_the_importing_user() -> None:
    project = make_project()
    result = plan_import(
        project=project, document=three_phase_plan(), source_name="x", created_by=make_user("bob"), start=True
    )
    assert result.run.state == RunState.RUNNING
    transition = RunTransition.objects.get(run=result.run)
    assert (transition.from_state, transition.to_state, transition.actor) == ("queued", "running", "user:bob")


def test_importing_the_same_plan_twice_is_refused_naming_the_existing_run() -> None:
    project = make_project("demo")
    first = plan_import(project=project, document=three_phase_plan(), source_name="x").run
    with pytest.raises(Conflict) as caught:
        plan_import(project=project, document=three_phase_plan(), source_name="x")
    assert caught.value.message == (
        f"this plan is already imported into project demo as run #{first.pk} 'Three' (queued); "
        "use replace (--replace) to replace it before it starts"
    )
    assert row_counts() == (1, 2, 3)


def test_the_same_plan_may_go_into_another_project_or_after_a_cancel() -> None:
    project = make_project()
    first = plan_import(project=project, document=three_phase_plan(), source_name="x").run
    plan_import(project=make_project(), document=three_phase_plan(), source_name="x")
    Run.objects.filter(pk=first.pk).update(state=RunState.CANCELLED)
    again = plan_import(project=project, document=three_phase_plan(), source_name="x").run
    assert again.pk != first.pk
    assert Run.objects.count() == 3


def test_replace_swaps_a_run_that_has_not_started() -> None:
    project = make_project()
    first = plan_import(project=project, document=three_phase_plan(), source_name="x").run
    result = plan_import(project=project, document=three_phase_plan(), source_name="x", replace=True)
    assert not Run.objects.filter(pk=first.pk).exists()
    assert result.warnings[-1] == f"replaced run #{first.pk} 'Three', which had not started"
    assert row_counts() == (1, 2, 3)


def test_replace_of_an_edited_plan_finds_the_run_by_name() -> None:
    project = make_project()
    first = plan_import(project=project, document=three_phase_plan(), source_name="x").run
    edited = three_phase_plan()
    edited["goal"] = "Do three things, better"
    second = plan_import(project=project, document=edited, source_name="x", replace=True).run
    assert list(Run.objects.values_list("pk", "goal")) == [(second.pk, "Do three things, better")]
    assert first.pk != second.pk


def test_replace_refuses_a_run_that_has_started() -> None:
    project = make_project()
    first = plan_import(project=project, document=three_phase_plan(), source_name="x").run
    run_start(run_id=first.pk, actor="user:test")
    with pytest.raises(Conflict) as caught:
        plan_import(project=project, document=three_phase_plan(), source_name="x", replace=True)
    assert caught.value.message == (
        f"run #{first.pk} 'Three' has already started (running); only a run that has not started can be replaced"
    )
    assert Run.objects.get().pk == first.pk


def test_a_protected_path_in_scope_is_refused() -> None:
    project = make_project("guarded", protected_paths=["deploy/", "settings/prod.py"])
    plan = three_phase_plan()
    plan["phases"][0]["scope"] = {"paths": ["deploy/k8s.yaml"], "deliverables": ["settings/prod.py"]}
    with pytest.raises(PlanInvalid) as caught:
        plan_import(project=project, document=plan, source_name="x")
    assert [str(error) for error in caught.value.errors] == [
        "phases[0].scope.paths[0]: 'deploy/k8s.yaml' is protected in project guarded ('deploy/')",
        "phases[0].scope.deliverables[0]: 'settings/prod.py' is protected in project guarded ('settings/prod.py')",
    ]
    assert row_counts() == (0, 0, 0)


@pytest.mark.parametrize("name", ["example_basic.yaml", "example_loose.json"])
def test_the_documented_examples_import(name: str) -> None:
    project = make_project()
    text = (PLANS / name).read_text()
    run = plan_import(project=project, document=text, source_name=name).run
    assert (
        run.phases_total
        == Phase.objects.filter(run=run).count()
        == {"example_basic.yaml": 3, "example_loose.json": 2}[name]
    )


# --- manage.py import_plan ------------------------------------------------------------------------------


def run_command(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("import_plan", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code)
    return code, out.getvalue(), err.getvalue()


def test_import_plan_command_prints_the_run_id_and_warnings() -> None:
    make_project("demo")
    code, out, err = run_command(str(PLANS / "example_loose.json"), "--project", "demo")
    run = Run.objects.get()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "warning: tiers[0].phases: moved 2 nested phase(s) to the top-level phases list"
    assert len(lines) == 14
    assert lines[-1] == f"run {run.pk}: 'Rate limits', 2 phases, queued"


def test_import_plan_command_writes_each_error_on_its_own_line_and_exits_1(tmp_path: Path) -> None:
    make_project("demo")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: Bad\ntiers: [{id: t1, name: T}]\nphases:\n"
        "  - {id: p1, tier: t2, name: P, scope: {deliverables: [/abs.py]}}\n"
        "  - {id: p1, tier: t1, name: Q, complexity: extreme, scope: {deliverables: [q.py]}}\n"
    )
    code, out, err = run_command(str(bad), "--project", "demo")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "phases[0].scope.deliverables[0]: absolute paths are not allowed",
        "phases[0].tier: unknown tier 't2' (tiers: t1)",
        "phases[1].complexity: must be one of low, medium, high (got 'extreme')",
        "phases[1].id: duplicate phase id 'p1' (first used by phases[0])",
    ]
    assert Run.objects.count() == 0


def test_import_plan_command_refuses_a_duplicate_and_replaces_with_the_flag() -> None:
    make_project("demo")
    path = str(PLANS / "example_basic.yaml")
    assert run_command(path, "--project", "demo")[0] == 0
    code, _, err = run_command(path, "--project", "demo")
    assert code == 1
    assert "is already imported into project demo as run #" in err
    code, out, _ = run_command(path, "--project", "demo", "--replace", "--start")
    assert code == 0
    assert out.splitlines()[-1].endswith("'Invoice CSV export', 3 phases, running")
    assert Run.objects.count() == 1


def test_import_plan_usage_errors_exit_2(tmp_path: Path) -> None:
    make_project("demo")
    with pytest.raises(CommandError) as unknown_project:
        call_command("import_plan", str(PLANS / "example_basic.yaml"), "--project", "nope")
    assert unknown_project.value.returncode == 2
    assert str(unknown_project.value) == "unknown project 'nope' (projects: demo)"
    with pytest.raises(CommandError) as missing_file:
        call_command("import_plan", str(tmp_path / "missing.yaml"), "--project", "demo")
    assert missing_file.value.returncode == 2
    assert str(missing_file.value).endswith("missing.yaml: no such file")


def many_phase_plan(count: int) -> dict[str, Any]:
    return {
        "name": "Many",
        "budgets": {"max_phases": count},
        "tiers": [{"id": "t", "name": "T"}],
        "phases": [
            {"id": f"p{n}", "tier": "t", "name": f"P{n}", "scope": {"deliverables": [f"src/p{n}.py"]}}
            for n in range(count)
        ],
    }


def test_a_failure_on_the_last_phase_batch_rolls_back_the_earlier_batches() -> None:
    project = make_project()
    phase_inserts: list[int] = []

    def fail_on_second_phase_batch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT") and "runs_phase" in sql:
            phase_inserts.append(len(params))
            if len(phase_inserts) == 2:
                raise DatabaseError("injected failure on the last phase batch")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_on_second_phase_batch):
        with pytest.raises(DatabaseError, match="last phase batch"):
            plan_import(project=project, document=many_phase_plan(150), source_name="many.yaml")
    assert len(phase_inserts) == 2  # the first 100 phases were written before the failure
    assert row_counts() == (0, 0, 0)


def test_a_large_plan_imports_every_phase_in_order() -> None:
    run = plan_import(project=make_project(), document=many_phase_plan(150), source_name="many.yaml").run
    assert list(Phase.objects.filter(run=run).order_by("sequence").values_list("sequence", "index"))[-1] == (149, 149)
    assert run.phases_total == 150
