"""Executor endpoints, mounted by the site at ``/api/executor/``."""

from django.urls import path

from runs import executor_api

app_name = "executor"

urlpatterns = [
    path("claim", executor_api.ClaimView.as_view(), name="claim"),
    path("phases/<int:phase_id>/heartbeat", executor_api.HeartbeatView.as_view(), name="heartbeat"),
    path("phases/<int:phase_id>/events", executor_api.EventView.as_view(), name="events"),
    path("phases/<int:phase_id>/finish", executor_api.FinishView.as_view(), name="finish"),
    path("phases/<int:phase_id>/release", executor_api.ReleaseView.as_view(), name="release"),
]
