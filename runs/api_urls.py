"""The runs API under ``/api/``: projects, runs, phases, attempts."""

from rest_framework.routers import SimpleRouter

from runs import api

router = SimpleRouter()
router.register("projects", api.ProjectViewSet, basename="project")
router.register("runs", api.RunViewSet, basename="run")
router.register("phases", api.PhaseViewSet, basename="phase")
router.register("attempts", api.AttemptViewSet, basename="attempt")

urlpatterns = router.urls
