"""Operator dashboard pages for runs: the list, one run, one phase with its attempts, and run control.

Thin views: scope by project membership (``ProjectAccess``), read with a fixed number of queries (pages are
paginated and per-row facts come from subqueries, never a query per row), call ``runs.services.control`` for
actions. Live parts are htmx partials of the same view (``request.htmx``), polled while something can change.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from autopack_site.dashboard_auth import ProjectAccess, actor_for, login_required_page
from autopack_site.lib.errors import DomainError, IllegalTransition
from runs.models import (
    PHASE_DONE,
    RUN_ACTIVE,
    Attempt,
    AttemptEvent,
    Phase,
    PhaseTransition,
    Project,
    Run,
    RunState,
    RunTransition,
)
from runs.services import control

RUNS_PER_PAGE = 50
IDLE_POLL_SECONDS = 15
GIT_TIMEOUT_SECONDS = 5
MAX_COMMITS = 50


# --- Runs list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilters:
    state: str
    project: str
    query: str
    page: str

    @classmethod
    def from_request(cls, request: HttpRequest) -> RunFilters:
        state = request.GET.get("state", "")
        return cls(
            state=state if state in RunState.values or state == "active" else "",
            project=request.GET.get("project", ""),
            query=request.GET.get("q", "").strip()[:200],
            page=request.GET.get("page", "1"),
        )

    def apply(self, runs: QuerySet[Run]) -> QuerySet[Run]:
        if self.state == "active":
            runs = runs.filter(state__in=RUN_ACTIVE)
        elif self.state:
            runs = runs.filter(state=self.state)
        if self.project:
            runs = runs.filter(project__slug=self.project)
        if self.query:
            condition = Q(name__icontains=self.query) | Q(goal__icontains=self.query)
            condition |= Q(project__slug__icontains=self.query) | Q(branch__icontains=self.query)
            if self.query.lstrip("#").isascii() and self.query.lstrip("#").isdigit():
                condition |= Q(pk=int(self.query.lstrip("#")))
            runs = runs.filter(condition)
        return runs

    @property
    def is_filtered(self) -> bool:
        return bool(self.state or self.project or self.query)


def poll_trigger(*, active: bool) -> str:
    """htmx trigger: poll often while something runs, rarely otherwise (a new run may still appear)."""
    seconds = getattr(settings, "DASHBOARD_POLL_SECONDS", 2) if active else IDLE_POLL_SECONDS
    return f"every {seconds}s"


def _with_current_phase(runs: QuerySet[Run]) -> QuerySet[Run]:
    """The first phase not yet done is the one executing or next in line (phases run in sequence order)."""
    current = Phase.objects.filter(run=OuterRef("pk")).exclude(state__in=PHASE_DONE).order_by("sequence")
    return runs.annotate(
        current_phase_id=Subquery(current.values("phase_id")[:1]),
        current_phase_name=Subquery(current.values("name")[:1]),
        current_phase_state=Subquery(current.values("state")[:1]),
        current_stage=Subquery(current.values("current_stage")[:1]),
    )


def _visible_runs(access: ProjectAccess) -> QuerySet[Run]:
    # The plan document can be large and the list never shows it (nor the goal, which search still reads).
    runs = Run.objects.select_related("project").defer("plan", "model_mapping", "goal", "failure_detail")
    project_ids = access.project_ids()
    return runs if project_ids is None else runs.filter(project_id__in=project_ids)


@login_required_page
def run_list(request: HttpRequest) -> HttpResponse:
    access = ProjectAccess(request)
    filters = RunFilters.from_request(request)
    runs = _with_current_phase(filters.apply(_visible_runs(access)))
    page = Paginator(runs, RUNS_PER_PAGE).get_page(filters.page)
    any_active = any(run.state in RUN_ACTIVE for run in page.object_list)
    context = {
        "page": page,
        "filters": filters,
        "states": RunState.choices,
        "poll": poll_trigger(active=any_active),
        "query_string": request.GET.urlencode(),
    }
    if request.htmx:
        return render(request, "runs/_run_table.html", context)
    project_ids = access.project_ids()
    projects = Project.objects.only("slug", "name")
    context["projects"] = projects if project_ids is None else projects.filter(pk__in=project_ids)
    return render(request, "runs/run_list.html", context)


# --- Run detail -----------------------------------------------------------------------------------


def _run_for(access: ProjectAccess, run_id: int) -> Run:
    run = get_object_or_404(Run.objects.select_related("project"), pk=run_id)
    access.require_view(run.project_id)
    return run


def _timeline(run: Run) -> list[dict[str, Any]]:
    """Tiers in order, each with its phases in order, from one query over phases joined to tiers."""
    tiers: dict[int, dict[str, Any]] = {}
    for phase in run.phases.select_related("tier").order_by("tier__index", "index"):
        entry = tiers.setdefault(phase.tier_id, {"tier": phase.tier, "phases": []})
        entry["phases"].append(phase)
    return list(tiers.values())


def _gauge(label: str, used: float, cap: float, unit: str = "", *, is_budget: bool = True) -> dict[str, Any]:
    percent = min(100.0, 100.0 * float(used) / float(cap)) if cap else 0.0
    level = "danger" if percent >= 90 else "warn" if percent >= 70 else "ok"
    if not is_budget:  # progress, not consumption: full is good news
        level = "progress-bar"
    return {"label": label, "used": used, "cap": cap, "percent": round(percent, 1), "level": level, "unit": unit}


def _budget_gauges(run: Run) -> list[dict[str, Any]]:
    minutes = 0.0
    if run.started_at:
        minutes = ((run.finished_at or timezone.now()) - run.started_at).total_seconds() / 60
    return [
        _gauge("Tokens", run.tokens_used, run.token_cap),
        _gauge("Cost", run.cost_usd, run.usd_cap, "$"),
        _gauge("Minutes", round(minutes, 1), run.max_minutes),
        _gauge("Phases done", run.phases_done, run.phases_total, is_budget=False),
        _gauge("Failures", run.failures_count, run.max_failures),
        _gauge("Patch failures", run.patch_failures_count, run.max_patch_failures),
    ]


@dataclass(frozen=True)
class BranchCommits:
    commits: list[dict[str, str]]
    problem: str = ""


def _git(repository: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(repository), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS
    )


def branch_commits(run: Run) -> BranchCommits:
    """The run branch's own commits (newest first), read from the project repository; never raises."""
    if not run.branch:
        return BranchCommits([], "The run has no branch yet: it gets one when it starts.")
    repository = Path(run.project.repository_path)
    if not (repository / ".git").exists() and not (repository / "HEAD").exists():
        return BranchCommits([], f"The project repository {repository} is not there (or is not a git repository).")
    base = run.base_commit or run.project.base_branch
    fmt = "--format=%H%x1f%h%x1f%an%x1f%aI%x1f%s"
    try:
        result = _git(repository, "log", fmt, f"-n{MAX_COMMITS}", f"{base}..{run.branch}", "--")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return BranchCommits([], f"git could not be read: {exc}")
    if result.returncode != 0:
        return BranchCommits([], f"The branch {run.branch} is not in the repository yet.")
    commits = []
    for line in result.stdout.splitlines():
        sha, short, author, when, subject = (line.split("\x1f") + [""] * 5)[:5]
        commits.append({"sha": sha, "short": short, "author": author, "date": when, "subject": subject})
    return BranchCommits(commits)


def _run_usage(run: Run) -> list[Any]:
    try:
        from telemetry.models import RunUsageRollup
    except ImportError:  # telemetry not installed: the page still renders
        return []
    return list(RunUsageRollup.objects.filter(run_id=run.pk).order_by("role", "model"))


@login_required_page
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    access = ProjectAccess(request)
    run = _run_for(access, run_id)
    # The live part is the whole page body, so the commits, spend and history that the last poll brings when
    # the run finishes are as fresh as the timeline (polling stops once the run is finished).
    context = {
        "run": run,
        "timeline": _timeline(run),
        "gauges": _budget_gauges(run),
        "can_act": access.can_act(run.project_id),
        "poll": poll_trigger(active=True) if run.state in RUN_ACTIVE else "",
        "transitions": list(RunTransition.objects.filter(run=run).order_by("-created_at", "-id")[:20]),
        "branch": branch_commits(run),
        "usage": _run_usage(run),
    }
    template = "runs/_run_live.html" if request.htmx else "runs/run_detail.html"
    return render(request, template, context)


# --- Actions --------------------------------------------------------------------------------------

# action -> (row rule that allows it, service, message). The row rule is checked first because the services
# accept any legal transition (resume would also start a queued run), while a button means one thing.
RUN_ACTIONS = {
    "start": (Run.can_start, control.run_start, "Run started."),
    "pause": (Run.can_pause, control.run_pause, "Run paused: the phase in progress finishes its attempt."),
    "resume": (Run.can_resume, control.run_resume, "Run resumed."),
    "cancel": (Run.can_cancel, control.run_cancel, "Run cancelled: queued phases were skipped."),
}


@login_required_page
@require_POST
def run_action(request: HttpRequest, run_id: int, action: str) -> HttpResponse:
    access = ProjectAccess(request)
    run = _run_for(access, run_id)
    access.require_act(run.project_id)
    if action not in RUN_ACTIONS:
        messages.error(request, f"Unknown action {action!r}.")
        return HttpResponseRedirect(reverse("runs:detail", args=[run.pk]))
    allowed, service, done = RUN_ACTIONS[action]
    try:
        if not allowed(run):
            raise IllegalTransition(f"the run is {run.state}")
        service(run_id=run.pk, actor=actor_for(request))
    except DomainError as exc:
        messages.error(request, f"Could not {action} the run: {exc.message}")
    else:
        messages.success(request, done)
    return HttpResponseRedirect(reverse("runs:detail", args=[run.pk]))


@login_required_page
@require_POST
def phase_requeue(request: HttpRequest, run_id: int, phase_pk: int) -> HttpResponse:
    access = ProjectAccess(request)
    phase = get_object_or_404(Phase.objects.select_related("run"), pk=phase_pk, run_id=run_id)
    access.require_act(phase.run.project_id)
    try:
        control.phase_requeue(phase_id=phase.pk, actor=actor_for(request))
    except DomainError as exc:
        messages.error(request, f"Could not requeue {phase.phase_id}: {exc.message}")
    else:
        messages.success(request, f"Phase {phase.phase_id} requeued with a fresh set of attempts.")
    return HttpResponseRedirect(reverse("runs:phase", args=[run_id, phase.pk]))


# --- Phase and attempt detail ---------------------------------------------------------------------


def _attempt_usage(attempt: Attempt) -> list[Any]:
    try:
        from telemetry.models import LlmUsageEvent
    except ImportError:
        return []
    # Filtering by run first uses the (run, role, id) index; usage rows have no index on attempt alone.
    rows = LlmUsageEvent.objects.filter(run_id=attempt.phase.run_id, attempt_id=attempt.pk)
    return list(rows.order_by("occurred_at", "id"))


def _attempt_doctor(attempt: Attempt) -> list[Any]:
    try:
        from telemetry.models import DoctorOutcomeEvent
    except ImportError:
        return []
    rows = DoctorOutcomeEvent.objects.filter(run_id=attempt.phase.run_id, attempt_id=attempt.pk)
    return list(rows.order_by("id"))


@login_required_page
def phase_detail(request: HttpRequest, run_id: int, phase_pk: int, number: int | None = None) -> HttpResponse:
    access = ProjectAccess(request)
    phase = get_object_or_404(Phase.objects.select_related("run__project", "tier"), pk=phase_pk, run_id=run_id)
    access.require_view(phase.run.project_id)
    attempts = list(Attempt.objects.filter(phase=phase).order_by("number"))
    attempt = _selected_attempt(attempts, number)
    context: dict[str, Any] = {
        "run": phase.run,
        "phase": phase,
        "attempts": attempts,
        "attempt": attempt,
        "can_act": access.can_act(phase.run.project_id),
        "transitions": list(PhaseTransition.objects.filter(phase=phase).order_by("created_at", "id")),
    }
    if attempt is not None:
        attempt.phase = phase  # already loaded: saves a query in the helpers below
        context["events"] = list(AttemptEvent.objects.filter(attempt=attempt).order_by("seq"))
        context["usage"] = _attempt_usage(attempt)
        context["doctor_outcomes"] = _attempt_doctor(attempt)
    return render(request, "runs/phase_detail.html", context)


def _selected_attempt(attempts: list[Attempt], number: int | None) -> Attempt | None:
    """The attempt asked for, or the latest one; ``None`` only for a phase that has never run."""
    if number is None:
        return attempts[-1] if attempts else None
    for attempt in attempts:
        if attempt.number == number:
            return attempt
    raise Http404(f"This phase has no attempt {number}.")
