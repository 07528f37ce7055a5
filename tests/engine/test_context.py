"""The context builder: scope first, repository map, hooks, budget, cuts and the stable cached prefix."""

from __future__ import annotations

from runs.engine.context import build_context, expand_scope
from runs.engine.gitrepo import init_repository
from runs.engine.spec import Budgets, PhaseSpec


def spec(**overrides) -> PhaseSpec:
    return PhaseSpec(run_id=1, phase_pk=1, phase_id="p", name="p", **overrides)


def make_repo(tmp_path, files):
    root = tmp_path / "repo"
    init_repository(root, files=files)
    return root


def test_scope_files_come_with_their_content_and_read_only_context_goes_in_the_stable_prefix(tmp_path):
    root = make_repo(
        tmp_path,
        {"app/a.py": "def alpha():\n    pass\n", "lib/b.py": "class Beta:\n    pass\n", "other/c.py": "GAMMA = 3\n"},
    )
    bundle = build_context(spec(scope_paths=["app/"], read_only_context=["lib/b.py"], goal="ship it"), root)
    assert "def alpha()" in bundle.volatile and "class Beta" in bundle.stable
    assert "GAMMA = 3" not in bundle.stable + bundle.volatile  # outside scope and context: only in the map
    assert "app/a.py: alpha" in bundle.stable and "lib/b.py: Beta" in bundle.stable and "other/c.py" in bundle.stable
    assert [(item.path, item.role) for item in bundle.files] == [("app/a.py", "scope"), ("lib/b.py", "read_only")]
    assert "ship it" in bundle.stable


def test_memory_and_insights_hooks_are_laid_out_in_the_prefix(tmp_path):
    root = make_repo(tmp_path, {"a.py": "x = 1\n"})
    bundle = build_context(spec(memory="we tried X", insights="BUILD-12 broke Y", goal_anchor="## Run goal\nZ"), root)
    assert (
        bundle.stable.index("Repository map")
        < bundle.stable.index("we tried X")
        < bundle.stable.index("BUILD-12 broke Y")
        < bundle.stable.index("## Run goal")
    )


def test_a_large_file_is_cut_with_a_marker_and_the_cut_is_counted_as_avoided(tmp_path):
    root = make_repo(tmp_path, {"big.py": "x = 1\n" * 5000})
    bundle = build_context(spec(scope_paths=["big.py"], budgets=Budgets(context_max_chars_per_file=1000)), root)
    assert "characters of big.py omitted from context" in bundle.volatile
    assert bundle.files[0].cut_chars == 30000 - 1000
    assert bundle.tokens_avoided >= (30000 - 1000) // 4


def test_files_beyond_the_token_budget_are_skipped_and_counted(tmp_path):
    files = {f"app/m{i}.py": "y = 2\n" * 400 for i in range(10)}  # ~600 tokens each
    root = make_repo(tmp_path, files)
    bundle = build_context(spec(scope_paths=["app/"], budgets=Budgets(context_tokens=3000)), root)
    assert 0 < len(bundle.files) < 10 and len(bundle.skipped) == 10 - len(bundle.files)
    assert bundle.tokens_avoided > 0 and bundle.tokens <= 3000 + 200


def test_the_stable_prefix_is_identical_across_attempts_on_the_same_commit(tmp_path):
    root = make_repo(tmp_path, {"app/a.py": "x = 1\n", "lib/b.py": "y = 2\n"})
    phase = spec(scope_paths=["app/"], read_only_context=["lib/b.py"])
    first = build_context(phase, root)
    (root / "app/a.py").write_text("x = 2\n")  # a scope file changes between attempts
    second = build_context(phase, root)
    assert first.stable == second.stable and first.volatile != second.volatile


def test_scope_entries_ending_in_a_slash_are_prefixes_and_others_exact():
    files = ["app/a.py", "app/sub/b.py", "apple.py", "lib/c.py"]
    assert expand_scope(["app/", "lib/c.py", "missing.py"], files) == ["app/a.py", "app/sub/b.py", "lib/c.py"]
