"""Dashboard telemetry page."""

from django.urls import path

from telemetry import views

app_name = "telemetry"

urlpatterns = [
    path("telemetry/", views.telemetry_overview, name="overview"),
]
