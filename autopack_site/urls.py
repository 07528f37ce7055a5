from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from autopack_site.health import health

urlpatterns = [
    path("health", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/auth/", include("accounts.urls")),
    path("api/executor/", include("runs.executor_urls")),
    path("api/", include("runs.api_urls")),
    path("api/telemetry/", include("telemetry.api_urls")),
    path("api/research/", include("research.api_urls")),
    path("", include("runs.urls")),
    path("", include("telemetry.urls")),
    path("", include("research.urls")),
]

# JSON errors under /api/, the normal pages elsewhere.
handler404 = "autopack_site.api_errors.not_found"
handler500 = "autopack_site.api_errors.server_error"
