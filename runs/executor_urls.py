"""Executor endpoints, mounted by the site at ``/api/executor/``."""

from django.urls import path, register_converter

from runs import executor_api


class PhaseIdConverter:
    """A positive database id (bigint): a longer or larger number does not match, so it is a JSON 404, not a
    database error. Registered under its own name so other apps' ``int`` routes are left as they are."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > executor_api.MAX_ID:
            raise ValueError("beyond bigint")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(PhaseIdConverter, "executor_phase_id")

app_name = "executor"

urlpatterns = [
    path("claim", executor_api.ClaimView.as_view(), name="claim"),
    path("phases/<executor_phase_id:phase_id>/heartbeat", executor_api.HeartbeatView.as_view(), name="heartbeat"),
    path("phases/<executor_phase_id:phase_id>/events", executor_api.EventView.as_view(), name="events"),
    path("phases/<executor_phase_id:phase_id>/finish", executor_api.FinishView.as_view(), name="finish"),
    path("phases/<executor_phase_id:phase_id>/release", executor_api.ReleaseView.as_view(), name="release"),
]
