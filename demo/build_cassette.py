"""Regenerate ``demo/cassette.jsonl`` deterministically: run the demo plan with scripted model answers.

    .venv/bin/python demo/build_cassette.py [--check]

The demo runs in a throw-away data directory and SQLite database, through exactly the code path the demo
command and the web worker use (``execute_claim`` → the pipeline), with a provider that hands out the answers
below in order and a ``RecordingProvider`` writing every request and answer. So the cassette holds the real
prompts the pipeline builds, and replaying it later matches request for request. Re-run it whenever a prompt
template, the sample repository or the plan changes. ``--check`` only verifies that the committed cassette
still replays (exit status 1 otherwise).

The script exercises, in order: a truncated NDJSON answer (salvage, then escalate-once), a change that breaks
an existing test twice (retry with the failure, then the Doctor's hint), a pre-existing failing test that must
not block, and an auditor rejection followed by an approval.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASSETTE = ROOT / "demo" / "cassette.jsonl"

SLUG = '''"""URL slugs."""

import re

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """Lower-case ASCII letters and digits, every other run of characters becomes one dash."""
    return _NON_ALNUM.sub("-", text.lower()).strip("-")
'''
TEST_SLUG = """from textkit.slug import slugify


def test_slugify_joins_words_with_dashes():
    assert slugify("Hello, World!") == "hello-world"


def test_slugify_of_punctuation_only_is_empty():
    assert slugify("  --  ") == ""


def test_slugify_keeps_digits():
    assert slugify("Release 2.0 notes") == "release-2-0-notes"
"""
FREQUENCIES = '''def word_frequencies(text: str) -> dict[str, int]:
    """How often each word occurs, case-insensitively, with the same word rule as word_count."""
    counts: dict[str, int] = {}
    for word in _WORD.findall(text.lower()):
        counts[word] = counts.get(word, 0) + 1
    return counts


def title_case('''
TEST_STATS = """from textkit.core import word_frequencies


def test_word_frequencies_ignore_case():
    assert word_frequencies("a A b") == {"a": 2, "b": 1}


def test_word_frequencies_ignore_punctuation():
    assert word_frequencies("one, two; two.") == {"one": 1, "two": 2}


def test_word_frequencies_of_empty_text_is_empty():
    assert word_frequencies("") == {}
"""
CLI_BAD = '''"""Command line: python -m textkit.cli slug|count TEXT."""

import sys

from textkit.core import word_count
from textkit.slug import slugify


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("slug", "count"):
        print("usage: textkit slug|count TEXT")
        return 1
    command, text = argv
    print(slugify(text) if command == "slug" else word_count(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''
CLI_GOOD = CLI_BAD.replace(
    '        print("usage: textkit slug|count TEXT")\n        return 1',
    '        print("usage: textkit slug|count TEXT", file=sys.stderr)\n        return 2',
)
TEST_CLI_BAD = """from textkit.cli import main


def test_slug_command_prints_the_slug(capsys):
    assert main(["slug", "A B"]) == 0
    assert capsys.readouterr().out == "a-b\\n"


def test_count_command_prints_the_word_count(capsys):
    assert main(["count", "one two three"]) == 0
    assert capsys.readouterr().out == "3\\n"


def test_unknown_command_fails(capsys):
    assert main(["shout", "x"]) == 1
"""
TEST_CLI_GOOD = TEST_CLI_BAD.replace(
    'def test_unknown_command_fails(capsys):\n    assert main(["shout", "x"]) == 1\n',
    'def test_unknown_command_prints_usage_to_stderr(capsys):\n    assert main(["shout", "x"]) == 2\n'
    '    captured = capsys.readouterr()\n    assert captured.out == ""\n    assert "usage" in captured.err\n',
)


def ndjson(*lines: dict) -> str:
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def write(path: str, content: str) -> dict:
    return {"op": "write", "path": path, "content": content}


def meta(summary: str, total: int) -> dict:
    return {"op": "meta", "summary": summary, "total_operations": total}


BAD_WORD_RULE = {
    "op": "edit",
    "path": "textkit/core.py",
    "search": '_WORD = re.compile(r"[A-Za-z0-9\']+")',
    "replace": '_WORD = re.compile(r"\\w+")',
}
ADD_FREQUENCIES = {"op": "edit", "path": "textkit/core.py", "search": "def title_case(", "replace": FREQUENCIES}
P1_FULL = ndjson(
    meta("Add slugify with tests", 2), write("textkit/slug.py", SLUG), write("tests/test_slug.py", TEST_SLUG)
)
# Cut by max_tokens in the middle of the second operation: the first one is complete and is salvaged.
P1_CUT = P1_FULL[: P1_FULL.index('{"op": "write", "path": "tests/test_slug.py"') + 80]
P2_BAD = ndjson(
    meta("Add word_frequencies; simplify the word rule", 3),
    BAD_WORD_RULE,
    ADD_FREQUENCIES,
    write("tests/test_stats.py", TEST_STATS),
)
P2_GOOD = ndjson(
    meta("Add word_frequencies reusing the existing word rule", 2),
    ADD_FREQUENCIES,
    write("tests/test_stats.py", TEST_STATS),
)
P3_BAD = ndjson(
    meta("Add the command line", 2), write("textkit/cli.py", CLI_BAD), write("tests/test_cli.py", TEST_CLI_BAD)
)
P3_GOOD = ndjson(
    meta("Add the command line; usage errors go to stderr with status 2", 2),
    write("textkit/cli.py", CLI_GOOD),
    write("tests/test_cli.py", TEST_CLI_GOOD),
)
APPROVE_P1 = '```json\n{"approved": true, "issues": [], "summary": "slugify matches the acceptance criteria."}\n```'
APPROVE_P2 = json.dumps(
    {
        "approved": True,
        "issues": [
            {
                "severity": "minor",
                "category": "style",
                "description": "word_frequencies could use collections.Counter",
                "file_path": "textkit/core.py",
                "line": None,
            }
        ],
        "summary": "Correct; the existing word rule is reused.",
    }
)
REJECT_P3 = json.dumps(
    {
        "approved": False,
        "issues": [
            {
                "severity": "major",
                "category": "correctness",
                "description": "Unknown commands must print usage to stderr and return 2; this prints to "
                "stdout and returns 1, and the test pins the wrong behaviour.",
                "file_path": "textkit/cli.py",
                "line": 11,
            }
        ],
        "summary": "Usage errors do not follow the phase's specification.",
    }
)
APPROVE_P3 = json.dumps({"approved": True, "issues": [], "summary": "The command line follows the specification."})
DOCTOR_P2 = "Diagnosis:\n" + json.dumps(
    {
        "action": "retry_with_fix",
        "confidence": 0.85,
        "rationale": 'The change replaced the word pattern with \\w+, which splits "It\'s" into two words and breaks '
        "test_word_count_ignores_punctuation.",
        "builder_hint": 'Do not change _WORD: keep r"[A-Za-z0-9\']+" so apostrophes stay inside words. Only add '
        "word_frequencies (reusing _WORD on text.lower()) and tests/test_stats.py.",
    }
)

# (role, answer, stop_reason) in call order.
SCRIPT: list[tuple[str, str, str]] = [
    ("builder", P1_CUT, "max_tokens"),  # p1 attempt 1: truncated, salvaged, deliverable missing → escalate
    ("builder", P1_FULL, "end_turn"),  # p1 attempt 2, with the escalated budget
    ("auditor", APPROVE_P1, "end_turn"),
    ("builder", P2_BAD, "end_turn"),  # p2 attempt 1: breaks an existing test → retry with the failure
    ("builder", P2_BAD, "end_turn"),  # p2 attempt 2: the same failure again → Doctor
    ("doctor", DOCTOR_P2, "end_turn"),
    ("builder", P2_GOOD, "end_turn"),  # p2 attempt 3: with the Doctor's hint (and the next model up)
    ("auditor", APPROVE_P2, "end_turn"),
    ("builder", P3_BAD, "end_turn"),  # p3 attempt 1: tests pass, the auditor rejects
    ("auditor", REJECT_P3, "end_turn"),
    ("builder", P3_GOOD, "end_turn"),
    ("auditor", APPROVE_P3, "end_turn"),
]
EXPECTED_ATTEMPTS = {"p1-slugify": 2, "p2-word-stats": 3, "p3-cli": 2}


class ScriptedDemoProvider:
    """Hands out SCRIPT in order; usage is derived from the request so the recorded numbers are plausible."""

    name = "scripted"

    def __init__(self) -> None:
        self.position = 0

    def complete(self, *, role: str, system: str, messages, model: str, max_tokens: int, cache_prefix=None, **_):
        from runs.engine.budget import approx_tokens
        from runs.engine.providers import LLMResponse, Usage

        expected_role, text, stop = SCRIPT[self.position]
        if role != expected_role:
            raise SystemExit(f"call {self.position + 1}: the pipeline asked the {role}, the script has {expected_role}")
        self.position += 1
        prompt = system + "".join(str(message["content"]) for message in messages)
        usage = Usage(
            input_tokens=approx_tokens(prompt),
            output_tokens=max_tokens if stop == "max_tokens" else approx_tokens(text),
            cache_creation_input_tokens=approx_tokens(cache_prefix or "") if role == "builder" else 0,
            cache_read_input_tokens=0,
        )
        return LLMResponse(
            text=text,
            usage=usage,
            stop_reason=stop,
            model=model,
            request_id=f"req_demo_{self.position:02d}",
            latency_ms=0,
            provider=self.name,
        )


def _setup_django(data_dir: Path) -> None:
    os.environ["AUTOPACK_DATA_DIR"] = str(data_dir)
    os.environ["DATABASE_URL"] = ""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autopack_site.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.AUTOPACK["ENQUEUE_TASKS"] = False  # nobody else drains this throw-away run
    call_command("migrate", verbosity=0)


def _drain(provider) -> dict:
    from runs.management.commands.demo import drain_run, run_summary, seed_demo

    run = seed_demo()
    drain_run(run, provider=provider, out=sys.stdout)
    return run_summary(run)


def _verify(summary: dict) -> None:
    attempts = {phase: info["attempts"] for phase, info in summary["phases"].items()}
    if summary["state"] != "complete" or attempts != EXPECTED_ATTEMPTS:
        raise SystemExit(f"the demo did not follow the script: {json.dumps(summary, indent=2)}")


def main() -> None:
    check = "--check" in sys.argv[1:]
    data_dir = Path(tempfile.mkdtemp(prefix="autopack-cassette-"))
    try:
        _setup_django(data_dir)
        from runs.engine.providers import RecordingProvider

        if check:
            summary = _drain(None)
        else:
            recording = data_dir / "cassette.jsonl"
            summary = _drain(RecordingProvider(ScriptedDemoProvider(), recording))
            shutil.copyfile(recording, CASSETTE)
        _verify(summary)
        print(f"{'replayed' if check else 'wrote'} {CASSETTE.relative_to(ROOT)}: {json.dumps(summary)}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
