"""Admin: price tables are editable data; telemetry events are read-only records.

The usage event list is built for tens of millions of rows: no full result count, no list filters (each would
run a DISTINCT over the table), and search by exact request id only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from telemetry import models


class ModelPriceInline(admin.TabularInline):
    model = models.ModelPrice
    extra = 0


@admin.register(models.PriceTable)
class PriceTableAdmin(admin.ModelAdmin):
    list_display = ["version", "provider", "effective_from", "created_at"]
    inlines = [ModelPriceInline]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Telemetry is history: rows are written by ``telemetry.services`` only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.LlmUsageEvent)
class LlmUsageEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "occurred_at", "role", "model", "run_id", "input_tokens", "output_tokens", "cost_usd"]
    search_fields = ["=request_id"]
    show_full_result_count = False
    list_select_related = False


@admin.register(models.TokenEstimationEvent)
class TokenEstimationEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "occurred_at", "category", "complexity", "predicted", "actual", "smape", "truncated"]
    list_filter = ["truncated", "category"]


@admin.register(models.FailureHardeningEvent)
class FailureHardeningEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "occurred_at", "pattern", "doctor_tokens_avoided_estimate", "estimate_source", "run_id"]


@admin.register(models.AbTestResult)
class AbTestResultAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "label", "valid", "valid_pair_count", "pair_count"]


@admin.register(models.EstimatorCalibration)
class EstimatorCalibrationAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "applied", "damping", "sample_size", "smape_before", "smape_after"]
