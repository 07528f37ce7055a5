"""Admin for data fixes. Every state change goes through the same service functions as the API."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from autopack_site.lib.errors import DomainError
from runs import services
from runs.models import Attempt, AttemptEvent, Phase, PhaseTransition, Project, Run, RunTransition, Tier


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


def _apply_to_each(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, action: Callable, verb: str
) -> None:
    """Run one service per selected row; report successes and refusals without stopping at the first."""
    done, refused = 0, []
    for obj in queryset:
        try:
            action(obj)
            done += 1
        except DomainError as exc:
            refused.append(f"{obj}: {exc.message}")
    if done:
        modeladmin.message_user(request, f"{verb} {done} item(s).", messages.SUCCESS)
    for line in refused:
        modeladmin.message_user(request, line, messages.ERROR)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "repository_path", "base_branch", "created_at"]
    search_fields = ["slug", "name", "repository_path"]
    prepopulated_fields = {"slug": ["name"]}


class TierInline(ReadOnlyInline):
    model = Tier
    fields = ["index", "tier_id", "name"]


class PhaseInline(ReadOnlyInline):
    model = Phase
    fields = ["sequence", "phase_id", "name", "category", "complexity", "state", "attempt_count", "lease_owner"]
    ordering = ["sequence"]


class RunTransitionInline(ReadOnlyInline):
    model = RunTransition
    fields = ["created_at", "from_state", "to_state", "actor", "reason"]
    show_change_link = False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "project", "state", "phases_done", "phases_total", "tokens_used", "cost_usd"]
    list_filter = ["state", "project", "failure_reason"]
    search_fields = ["name", "goal", "branch", "plan_sha256"]
    list_select_related = ["project"]
    date_hierarchy = "created_at"
    inlines = [TierInline, PhaseInline, RunTransitionInline]
    actions = ["start_runs", "pause_runs", "resume_runs", "cancel_runs"]
    # State and counters change only through services (actions), never by editing the form.
    readonly_fields = [
        "state", "failure_reason", "failure_detail", "tokens_used", "cost_usd", "failures_count",
        "patch_failures_count", "doctor_calls", "phases_total", "phases_done", "plan_sha256", "started_at",
        "finished_at", "created_at", "updated_at", "cloned_from",
    ]  # fmt: skip

    @admin.action(description="Start selected runs")
    def start_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_to_each(
            self, request, queryset, lambda r: services.run_start(run_id=r.pk, actor=_actor(request)), "Started"
        )

    @admin.action(description="Pause selected runs")
    def pause_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_to_each(
            self, request, queryset, lambda r: services.run_pause(run_id=r.pk, actor=_actor(request)), "Paused"
        )

    @admin.action(description="Resume selected runs")
    def resume_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_to_each(
            self, request, queryset, lambda r: services.run_resume(run_id=r.pk, actor=_actor(request)), "Resumed"
        )

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_to_each(
            self, request, queryset, lambda r: services.run_cancel(run_id=r.pk, actor=_actor(request)), "Cancelled"
        )


class AttemptInline(ReadOnlyInline):
    model = Attempt
    fields = ["number", "claim_epoch", "status", "outcome", "model", "input_tokens", "output_tokens", "cost_usd"]


class PhaseTransitionInline(ReadOnlyInline):
    model = PhaseTransition
    fields = ["created_at", "from_state", "to_state", "actor", "reason", "claim_epoch"]
    show_change_link = False


@admin.register(Phase)
class PhaseAdmin(admin.ModelAdmin):
    list_display = ["phase_id", "name", "run", "state", "category", "complexity", "attempt_count", "lease_owner"]
    list_filter = ["state", "category", "complexity", "run__project"]
    search_fields = ["phase_id", "name", "description", "last_failure_reason"]
    list_select_related = ["run", "run__project"]
    inlines = [AttemptInline, PhaseTransitionInline]
    actions = ["requeue_phases", "skip_phases"]
    readonly_fields = [
        "run", "tier", "state", "attempt_count", "attempt_base", "revision_epoch", "escalation_level",
        "failure_fingerprints", "doctor_calls", "lease_owner", "lease_expires_at", "claim_epoch", "lost_leases",
        "commit_sha", "tokens_used", "cost_usd", "current_stage", "started_at", "finished_at",
    ]  # fmt: skip

    @admin.action(description="Requeue selected blocked or failed phases")
    def requeue_phases(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_to_each(
            self, request, queryset, lambda p: services.phase_requeue(phase_id=p.pk, actor=_actor(request)), "Requeued"
        )

    @admin.action(description="Skip selected queued phases")
    def skip_phases(self, request: HttpRequest, queryset: QuerySet) -> None:
        _apply_to_each(
            self, request, queryset, lambda p: services.phase_skip(phase_id=p.pk, actor=_actor(request)), "Skipped"
        )


class AttemptEventInline(ReadOnlyInline):
    model = AttemptEvent
    fields = ["seq", "stage", "kind", "data", "created_at"]
    show_change_link = False


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    list_display = ["phase", "number", "claim_epoch", "status", "outcome", "model", "cost_usd", "started_at"]
    list_filter = ["status", "outcome", "phase__run__project"]
    search_fields = ["phase__phase_id", "failure_reason", "worker"]
    list_select_related = ["phase"]
    inlines = [AttemptEventInline]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class TransitionAdmin(admin.ModelAdmin):
    """Transition history is an audit trail: readable, never edited or deleted by hand."""

    list_display = ["created_at", "from_state", "to_state", "actor", "reason"]
    list_filter = ["to_state", "from_state"]
    search_fields = ["actor", "reason"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


admin.site.register(RunTransition, TransitionAdmin)
admin.site.register(PhaseTransition, TransitionAdmin)
