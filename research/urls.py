"""Dashboard build-history browser."""

from django.urls import path

from research import views

app_name = "research"

urlpatterns = [
    path("history/", views.history_list, name="history"),
    path("history/<int:entry_id>/", views.history_detail, name="history-entry"),
]
