"""The research API under ``/api/research/``."""

from django.urls import path

from research import api

urlpatterns = [
    path("entries/", api.EntryList.as_view(), name="research-entry-list"),
    path("entries/<int:pk>/", api.EntryDetail.as_view(), name="research-entry-detail"),
    path("sessions/", api.SessionCreate.as_view(), name="research-session-create"),
    path("sessions/<int:pk>/", api.SessionDetail.as_view(), name="research-session-detail"),
    path("embedder/", api.EmbedderStatus.as_view(), name="research-embedder"),
]
