"""A long fuzzing campaign against governed apply's confinement; prints examples run and violations found.

    .venv/bin/python bench/fuzz_apply.py [--examples 3000] [--diff-examples 500] [--seed N]

Runs the same generators and invariants as ``tests/engine/test_apply_properties.py`` (hostile operation lists
with injected write failures, hostile edit documents cut at random offsets, hostile unified diffs), but many more
examples and with a fresh random seed, and it does not stop at the first failure: every broken invariant
(something outside the worktree changed, a partial apply, an unreported change) is counted and the first few
are printed. The expected result is ``violations found: 0``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from runs.engine.apply import governed_apply  # noqa: E402
from runs.engine.edits import parse_edits  # noqa: E402
from tests.engine import test_apply_properties as properties  # noqa: E402

TALLY = {"examples": 0, "applied": 0, "violations": 0}
FAILURES: list[str] = []


def checked(description: str, worktree: Path, outside: Path, run) -> None:
    TALLY["examples"] += 1
    try:
        result = properties.check_invariants(worktree, outside, run)
    except AssertionError as error:
        TALLY["violations"] += 1
        if len(FAILURES) < 5:
            FAILURES.append(f"{error}\n    input: {description[:500]}")
        return
    TALLY["applied"] += int(result.applied)


def campaign_settings(examples: int, campaign_seed: int):
    options = settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],  # generate only: no shrinking needed, failures are counted instead
    )

    def decorate(function):
        return seed(campaign_seed)(options(function))

    return decorate


def run_campaigns(examples: int, diff_examples: int, campaign_seed: int) -> None:
    @campaign_settings(examples, campaign_seed)
    @given(operations=properties.documents, policy=properties.policies, fail_at=st.none() | st.integers(1, 4))
    def operations_campaign(operations, policy, fail_at):
        with properties.fresh_world() as (worktree, outside):
            ops = [properties.to_op(data, outside) for data in operations]
            with properties.failing_writes(fail_at):
                checked(repr(ops), worktree, outside, lambda: governed_apply(worktree, ops, policy=policy))

    @campaign_settings(examples, campaign_seed + 1)
    @given(operations=properties.documents, cut=st.none() | st.integers(0, 600))
    def documents_campaign(operations, cut):
        with properties.fresh_world() as (worktree, outside):
            for data in operations:
                data["path"] = properties.resolve(data["path"], outside)
            document = "\n".join(json.dumps(data) for data in operations)
            document = document if cut is None else document[:cut]
            checked(document, worktree, outside, lambda: governed_apply(worktree, document))

    @campaign_settings(diff_examples, campaign_seed + 2)
    @given(diff=properties.hostile_diff())
    def diffs_campaign(diff):
        with properties.fresh_world() as (worktree, outside):
            text = properties.resolve(diff, outside)
            checked(text, worktree, outside, lambda: governed_apply(worktree, parse_edits(text)))

    operations_campaign()
    documents_campaign()
    diffs_campaign()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000, help="examples per operations/documents campaign")
    parser.add_argument("--diff-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    campaign_seed = args.seed if args.seed is not None else random.randrange(2**32)
    started = time.perf_counter()
    run_campaigns(args.examples, args.diff_examples, campaign_seed)
    elapsed = time.perf_counter() - started
    print(f"seed: {campaign_seed}")
    print(f"examples run: {TALLY['examples']} ({TALLY['applied']} applied, the rest refused) in {elapsed:.0f} s")
    print(f"violations found: {TALLY['violations']}")
    for failure in FAILURES:
        print(f"  - {failure}")
    if TALLY["violations"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
