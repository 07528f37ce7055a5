from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts import api

router = SimpleRouter()
router.register("api-keys", api.ApiKeyViewSet, basename="api-key")
router.register("invitations", api.InvitationViewSet, basename="invitation")

urlpatterns = [
    path("login", api.LoginView.as_view(), name="auth-login"),
    path("refresh", api.RefreshView.as_view(), name="auth-refresh"),
    path("logout", api.LogoutView.as_view(), name="auth-logout"),
    path("register", api.RegisterView.as_view(), name="auth-register"),
    path("me", api.MeView.as_view(), name="auth-me"),
    path(".well-known/jwks.json", api.JwksView.as_view(), name="auth-jwks"),
    *router.urls,
]
