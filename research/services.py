"""Build ledger workflows: import (idempotent upsert), write-back for completed runs, export.

Identity of an entry is ``entry_key``: its build id, date and title, plus how many entries with the same
three came before it in the file (ids repeat in real ledgers, sometimes with the same title). The content
hash of the raw section decides between ``updated`` and ``unchanged`` on re-import.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone

from autopack_site.lib.errors import NotFound, ValidationFailed
from autopack_site.lib.logging import redact
from research.ledger import (
    LedgerEntry,
    decode_ledger,
    format_entry,
    insert_entry,
    parse_ledger,
    render_ledger,
)
from research.models import BuildHistoryEntry, EntryStatus, GoalDriftCheck
from runs.models import Attempt, Phase, PhaseState, Project, Run, RunState

DEFAULT_LEDGER_PATH = "BUILD_HISTORY.md"
FIELDS = (
    "build_id",
    "title",
    "date",
    "status",
    "status_text",
    "category",
    "commits",
    "summary",
    "changes",
    "files_modified",
    "test_results",
    "impact",
    "sections",
    "raw_markdown",
    "line_number",
    "style",
)


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)  # "<file>:<line>: <message>"

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged

    def __str__(self) -> str:
        return f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, errors {len(self.errors)}"


def entry_keys(entries: list[LedgerEntry]) -> list[str]:
    """Stable identity per entry; the occurrence number tells apart true duplicates within one ledger."""
    seen: dict[tuple[str, str, str], int] = {}
    keys = []
    for entry in entries:
        natural = (entry.build_id, entry.date.isoformat() if entry.date else "", entry.title)
        seen[natural] = seen.get(natural, 0) + 1
        keys.append(hashlib.sha256("\x1f".join([*natural, str(seen[natural])]).encode("utf-8")).hexdigest())
    return keys


def _upsert(*, project: Project, entry: LedgerEntry, key: str, source: str, report: ImportReport) -> None:
    values = {name: getattr(entry, name) for name in FIELDS}
    values["status"] = entry.status if entry.status in EntryStatus.values else EntryStatus.UNKNOWN
    values.update(content_hash=entry.content_hash, source_file=source)
    existing = BuildHistoryEntry.objects.filter(project=project, entry_key=key).first()
    if existing is None:
        BuildHistoryEntry.objects.create(project=project, entry_key=key, **values)
        report.added += 1
    elif existing.content_hash != entry.content_hash:
        for name, value in values.items():
            setattr(existing, name, value)
        existing.save()
        report.updated += 1
    else:
        report.unchanged += 1


def ledger_import_text(*, text: str, project: Project, source: str = "") -> ImportReport:
    """Import one ledger's text. Malformed sections are reported by line; the rest is imported."""
    parsed = parse_ledger(text)
    report = ImportReport(errors=[f"{source or '<text>'}:{problem}" for problem in parsed.problems])
    with transaction.atomic():
        for entry, key in zip(parsed.entries, entry_keys(parsed.entries), strict=True):
            _upsert(project=project, entry=entry, key=key, source=source, report=report)
        refresh_search_vectors(project=project)
    return report


def ledger_import(*, paths: list[str | Path], project: Project) -> ImportReport:
    """Import ledger files (any of the three styles) into ``project``; idempotent on re-import."""
    total = ImportReport()
    for path in paths:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            total.errors.append(f"{path}:0: cannot read: {exc.strerror or exc}")
            continue
        report = ledger_import_text(text=decode_ledger(data), project=project, source=str(path))
        total.added += report.added
        total.updated += report.updated
        total.unchanged += report.unchanged
        total.errors += report.errors
    return total


def refresh_search_vectors(*, project: Project) -> None:
    """Fill the tsvector column on PostgreSQL (weighted: id and title, then summary, then the rest)."""
    if connection.vendor != "postgresql":
        return
    from research.queries import search_vector_expression

    BuildHistoryEntry.objects.filter(project=project).update(search_vector=search_vector_expression())


def ledger_export(*, project: Project) -> str:
    """The project's entries as one ledger in the fixture's style, newest first; re-imports unchanged."""
    entries = BuildHistoryEntry.objects.filter(project=project).order_by("-date", "id")
    return render_ledger([_export_section(entry) for entry in entries])


def _export_section(entry: BuildHistoryEntry) -> str:
    """Heading-style entries verbatim (so they re-import unchanged); others rewritten in that style."""
    if entry.style == "heading":
        return entry.raw_markdown
    fields = {name: getattr(entry, name) for name in FIELDS if name not in ("line_number", "style")}
    return format_entry(LedgerEntry(**fields))


def ledger_file(project: Project) -> Path:
    return Path(project.repository_path) / (project.ledger_path or DEFAULT_LEDGER_PATH)


def _run_entry(run: Run) -> LedgerEntry:
    phases = list(Phase.objects.filter(run=run).order_by("sequence"))
    done = [phase for phase in phases if phase.state == PhaseState.COMPLETE]
    files: list[str] = []
    for phase in done:
        for attempt in phase.attempts.filter(status="succeeded"):
            for path in attempt.summary.get("touched_paths", []) or []:
                if path not in files:
                    files.append(path)
        for path in phase.deliverables:  # what the phase had to produce, when attempts name no paths
            if path not in files:
                files.append(path)
    commits = [phase.commit_sha[:8] for phase in done if phase.commit_sha]
    status = {RunState.COMPLETE: "COMPLETE", RunState.FAILED: "FAILED", RunState.CANCELLED: "BLOCKED"}
    status_text = status.get(run.state, run.state.upper())
    tests = [f"- {phase.phase_id}: {phase.state}" for phase in phases]
    summary = (run.goal or run.name).strip().replace("\n", " ")
    if run.failure_detail:
        summary += f" Failure: {run.failure_detail.strip()}"
    return LedgerEntry(
        build_id=f"RUN-{run.pk}",
        title=run.name,
        date=(run.finished_at or timezone.now()).date(),
        status_text=status_text,
        status=status_text.lower() if status_text.lower() in EntryStatus.values else "unknown",
        commits=commits,
        summary=redact(summary)[:2000],  # failure details can quote keys from the environment
        files_modified=files,
        test_results="\n".join(tests) + f"\n- phases complete: {len(done)}/{len(phases)}",
        impact=f"Run {run.name} on branch {run.branch or run.default_branch_name()}.",
    )


def ledger_append_for_run(*, run_id: int) -> BuildHistoryEntry:
    """Write a finished run into its project's ledger file (newest first) and into the database.

    Idempotent: a run already written returns its existing entry and leaves the file alone.
    """
    run = Run.objects.select_related("project").filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    if not run.is_finished:
        raise ValidationFailed(f"run {run_id} is {run.state}; only finished runs are written to the ledger")
    existing = BuildHistoryEntry.objects.filter(run=run).first()
    if existing is not None:
        return existing
    entry = _run_entry(run)
    markdown = format_entry(entry)
    entry = parse_ledger(markdown).entries[0]  # what a later import of the file will read back
    path = ledger_file(run.project)
    current = decode_ledger(path.read_bytes()) if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    with transaction.atomic():
        report = ImportReport()
        key = entry_keys([entry])[0]
        _upsert(project=run.project, entry=entry, key=key, source=str(path), report=report)
        saved = BuildHistoryEntry.objects.get(project=run.project, entry_key=key)
        saved.run = run
        saved.save(update_fields=["run", "updated_at"])
        path.write_text(insert_entry(current, markdown), encoding="utf-8")
        refresh_search_vectors(project=run.project)
    return saved


def goal_drift_record(*, attempt_id: int, goal: str, text: str) -> GoalDriftCheck:
    """Measure and record, on the attempt, how far its description and diff summary drift from the goal."""
    from research.insights import goal_drift

    attempt = Attempt.objects.filter(pk=attempt_id).first()
    if attempt is None:
        raise NotFound(f"attempt {attempt_id} does not exist")
    result = goal_drift(goal=goal, text=text)
    return GoalDriftCheck.objects.create(
        attempt=attempt,
        similarity=result.similarity,
        drifted=result.drifted,
        threshold=result.threshold,
        embedder=result.embedder,
    )


def memory_record_attempt(*, attempt_id: int) -> list[int]:
    """Remember what a finished attempt teaches: its failure (ci_errors) and the Doctor's hint (doctor_hints).

    Returns the ids of the memory items written (identical texts are stored once).
    """
    from research.memory import memory_add

    attempt = Attempt.objects.select_related("phase__run").filter(pk=attempt_id).first()
    if attempt is None:
        raise NotFound(f"attempt {attempt_id} does not exist")
    phase = attempt.phase
    project_id = phase.run.project_id
    meta = {"run_id": phase.run_id, "phase_id": phase.phase_id, "attempt": attempt.number, "category": phase.category}
    written = []
    if attempt.failure_reason.strip():
        text = redact(f"{phase.category} phase {phase.phase_id}: {attempt.failure_reason.strip()}")
        written.append(memory_add(project_id=project_id, collection="ci_errors", text=text, metadata=meta).pk)
    if phase.builder_hint.strip():
        text = redact(f"{phase.category} phase {phase.phase_id}: {phase.builder_hint.strip()}")
        written.append(memory_add(project_id=project_id, collection="doctor_hints", text=text, metadata=meta).pk)
    return written


def memory_record_run(*, run_id: int) -> int:
    """Remember a finished run's summary (goal, outcome, phases) in the run_summaries collection."""
    from research.memory import memory_add

    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    entry = _run_entry(run)
    text = redact(f"{run.name} ({run.state}): {entry.summary}\n{entry.test_results}")
    return memory_add(project_id=run.project_id, collection="run_summaries", text=text, metadata={"run_id": run.pk}).pk
