"""Accounts API: JWT login/refresh/logout, ``me``, JWKS, API keys and invitations. Views stay thin."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services, tokens
from accounts.authentication import request_api_key
from accounts.models import ApiKey, Invitation, User
from accounts.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeySerializer,
    InvitationCreatedSerializer,
    InvitationCreateInputSerializer,
    InvitationSerializer,
    JwksSerializer,
    LoginInputSerializer,
    MeSerializer,
    RefreshInputSerializer,
    RegisterInputSerializer,
    TokenPairSerializer,
)
from accounts.throttling import LoginRateThrottle
from autopack_site.api_errors import ANY_SEGMENT, IdLookupMixin
from autopack_site.api_pagination import IdCursorPagination
from autopack_site.lib.errors import ValidationFailed
from autopack_site.lib.keys import jwks


class NotWithApiKey(BasePermission):
    """Credentials are managed by a person signed in, never by an API key (which could mint more keys)."""

    message = "This endpoint cannot be used with an API key."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request_api_key(request) is None


class _PublicCredentialView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginRateThrottle]


class LoginView(_PublicCredentialView):
    @extend_schema(request=LoginInputSerializer, responses={200: TokenPairSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        payload = LoginInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        user = services.login_authenticate(
            username=payload.validated_data["username"],
            password=payload.validated_data["password"],
            remote_addr=request.META.get("REMOTE_ADDR"),
            request=request._request,
        )
        return Response(tokens.tokens_issue(user=user))


class RefreshView(_PublicCredentialView):
    @extend_schema(request=RefreshInputSerializer, responses={200: TokenPairSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        payload = RefreshInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return Response(tokens.tokens_refresh(raw_refresh=payload.validated_data["refresh"]))


class LogoutView(_PublicCredentialView):
    @extend_schema(request=RefreshInputSerializer, responses={204: None}, tags=["auth"])
    def post(self, request: Request) -> Response:
        payload = RefreshInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tokens.tokens_revoke(raw_refresh=payload.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class RegisterView(_PublicCredentialView):
    @extend_schema(request=RegisterInputSerializer, responses={201: MeSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        payload = RegisterInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        user = services.invitation_accept(**payload.validated_data)
        return Response(MeSerializer(user).data, status=status.HTTP_201_CREATED)


class JwksView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(responses={200: JwksSerializer}, tags=["auth"])
    def get(self, request: Request) -> Response:
        return Response(jwks(settings.SIMPLE_JWT["VERIFYING_KEY"]))


class MeView(APIView):
    @extend_schema(responses={200: MeSerializer}, tags=["auth"])
    def get(self, request: Request) -> Response:
        user = User.objects.prefetch_related("memberships__project").get(pk=request.user.pk)
        return Response(MeSerializer(user).data)


class ApiKeyViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your API keys (staff see everyone's). The secret is shown once, in the create response."""

    serializer_class = ApiKeySerializer
    pagination_class = IdCursorPagination
    permission_classes = [IsAuthenticated, NotWithApiKey]

    queryset = ApiKey.objects.none()
    lookup_value_regex = ANY_SEGMENT

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        keys = ApiKey.objects.select_related("owner")
        return keys if self.request.user.is_staff else keys.filter(owner=self.request.user)

    @extend_schema(request=ApiKeyCreateInputSerializer, responses={201: ApiKeyCreatedSerializer}, tags=["auth"])
    def create(self, request: Request) -> Response:
        payload = ApiKeyCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        key, raw_key = services.api_key_create(owner=request.user, **payload.validated_data)
        key.key = raw_key
        return Response(ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApiKeySerializer}, tags=["auth"])
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        key = services.api_key_revoke(key=self.get_object())
        return Response(ApiKeySerializer(key).data)


class InvitationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Invitations you sent (staff see all). Registration is only by invitation or by an admin."""

    serializer_class = InvitationSerializer
    pagination_class = IdCursorPagination
    permission_classes = [IsAuthenticated, NotWithApiKey]

    queryset = Invitation.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        invitations = Invitation.objects.select_related("project", "created_by")
        return invitations if self.request.user.is_staff else invitations.filter(created_by=self.request.user)

    @extend_schema(request=InvitationCreateInputSerializer, responses={201: InvitationCreatedSerializer}, tags=["auth"])
    def create(self, request: Request) -> Response:
        payload = InvitationCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        project = None
        if data.get("project"):
            project = services.projects_visible_to(request.user).filter(slug=data["project"]).first()
            if project is None:
                raise ValidationFailed("No such project.", details={"project": ["not found"]})
        invitation, token = services.invitation_create(
            email=data["email"],
            created_by=request.user,
            project=project,
            role=data["role"],
            valid_for=timedelta(days=data["valid_days"]),
        )
        invitation.token = token
        return Response(InvitationCreatedSerializer(invitation).data, status=status.HTTP_201_CREATED)
