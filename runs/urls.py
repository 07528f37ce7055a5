"""Dashboard pages for runs, plus sign-in and sign-out (the dashboard's entry points)."""

from django.urls import path

from autopack_site.dashboard_auth import DashboardLoginView, DashboardLogoutView
from runs import views

app_name = "runs"

urlpatterns = [
    path("login/", DashboardLoginView.as_view(), name="login"),
    path("logout/", DashboardLogoutView.as_view(), name="logout"),
    path("", views.run_list, name="home"),
    path("runs/", views.run_list, name="list"),
    path("runs/<int:run_id>/", views.run_detail, name="detail"),
    path("runs/<int:run_id>/<str:action>/", views.run_action, name="action"),
    path("runs/<int:run_id>/phases/<int:phase_pk>/", views.phase_detail, name="phase"),
    path("runs/<int:run_id>/phases/<int:phase_pk>/attempts/<int:number>/", views.phase_detail, name="attempt"),
    path("runs/<int:run_id>/phases/<int:phase_pk>/requeue/", views.phase_requeue, name="phase-requeue"),
]
