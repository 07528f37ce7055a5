"""Telemetry read API, mounted at /api/telemetry/ by autopack_site/urls.py."""

from django.urls import path

from telemetry import api

app_name = "telemetry-api"

urlpatterns = [
    path("usage/", api.UsageByPeriodView.as_view(), name="usage"),
    path("runs/<int:pk>/status/", api.RunStatusView.as_view(), name="run-status"),
    path("runs/<int:pk>/metrics/", api.RunMetricsView.as_view(), name="run-metrics"),
    path("estimator/accuracy/", api.EstimatorAccuracyView.as_view(), name="estimator-accuracy"),
    path("events/", api.UsageEventListView.as_view(), name="events"),
    path("ab-results/", api.AbResultListView.as_view(), name="ab-results"),
]
