"""The research API under ``/api/research/``: build history search, research sessions, the active embedder.

Ownership is decided once: entries and sessions of projects the user cannot see do not exist for them
(404; a session asked for such a project is a 400, as for any unknown project). Starting a session writes
rows, so it needs the operator role in the project. Errors leave as ``{"error": {code, message, details}}``.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Role
from accounts.permissions import ReadWriteScope
from accounts.services import projects_visible_to, user_has_project_role
from autopack_site.api_errors import error_response
from autopack_site.lib.errors import DomainError
from research.embedders import EmbedderUnavailable
from research.memory import active_embedder_name
from research.models import BuildHistoryEntry, Citation, EntryStatus, Evidence, ResearchSession
from research.queries import search_entries
from research.sessions import research_session_run


class EntryFilter(serializers.Serializer):
    project = serializers.SlugField(required=False)
    q = serializers.CharField(required=False, allow_blank=True, max_length=200)
    status = serializers.ChoiceField(choices=EntryStatus.choices, required=False)
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)


class EntrySerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = BuildHistoryEntry
        fields = [
            "id",
            "project",
            "build_id",
            "title",
            "date",
            "status",
            "status_text",
            "category",
            "commits",
            "summary",
            "files_modified",
            "source_file",
            "line_number",
            "run",
        ]


class EntryDetailSerializer(EntrySerializer):
    class Meta(EntrySerializer.Meta):
        fields = [*EntrySerializer.Meta.fields, "changes", "test_results", "impact", "sections", "raw_markdown"]


class CitationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Citation
        fields = ["url", "title", "published_on"]


class EvidenceSerializer(serializers.ModelSerializer):
    citations = CitationSerializer(many=True, read_only=True)

    class Meta:
        model = Evidence
        fields = ["rank", "source_type", "title", "content", "relevance", "quality", "location", "citations"]


class SessionSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    evidence = EvidenceSerializer(many=True, read_only=True)

    class Meta:
        model = ResearchSession
        fields = [
            "id",
            "project",
            "question",
            "status",
            "intent",
            "quality_score",
            "validation",
            "embedder",
            "report",
            "run",
            "phase",
            "created_at",
            "finished_at",
            "evidence",
        ]


class SessionInput(serializers.Serializer):
    project = serializers.SlugField()
    question = serializers.CharField(max_length=2000)
    limit = serializers.IntegerField(min_value=1, max_value=30, default=8)


class EntryPagination(PageNumberPagination):
    """Numbered pages (search results are ordered by rank, which a cursor cannot follow).

    A page that is not a positive number, or lies past the last page, is a client error (400), not a 404.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):  # noqa: ANN001, ANN201 - DRF's signature
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound as exc:
            raise ValidationError({self.page_query_param: [str(exc.detail)]}) from None

    def get_schema_operation_parameters(self, view):  # noqa: ANN001, ANN201 - DRF's signature
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.page_query_param: {"minimum": 1},
            self.page_size_query_param: {"minimum": 1, "maximum": self.max_page_size},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters


class EmbedderDown(DomainError):
    """The configured embedder cannot be loaded; retrying later (or fixing the setting) helps."""

    code = "embedder_unavailable"
    http_status = 503


class EntryList(generics.ListAPIView):
    """Ledger entries matching the filters; with ``q``, best matches first (full text on PostgreSQL)."""

    serializer_class = EntrySerializer
    permission_classes = [IsAuthenticated, ReadWriteScope]
    pagination_class = EntryPagination

    @extend_schema(parameters=[EntryFilter])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[BuildHistoryEntry]:
        filters = EntryFilter(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        entries = search_entries(
            query=data.get("q", ""),
            status=data.get("status"),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
        ).filter(project__in=projects_visible_to(self.request.user))
        if "project" in data:
            entries = entries.filter(project__slug=data["project"])
        return entries


class EntryDetail(generics.RetrieveAPIView):
    serializer_class = EntryDetailSerializer
    permission_classes = [IsAuthenticated, ReadWriteScope]

    def get_queryset(self) -> QuerySet[BuildHistoryEntry]:
        return BuildHistoryEntry.objects.filter(project__in=projects_visible_to(self.request.user))


class SessionDetail(generics.RetrieveAPIView):
    serializer_class = SessionSerializer
    permission_classes = [IsAuthenticated, ReadWriteScope]

    def get_queryset(self) -> QuerySet[ResearchSession]:
        return ResearchSession.objects.filter(project__in=projects_visible_to(self.request.user)).prefetch_related(
            "evidence__citations"
        )


class SessionCreate(APIView):
    """Research a question over the project's ledger, docs and memory; answers with the stored session."""

    permission_classes = [IsAuthenticated, ReadWriteScope]

    @extend_schema(
        request=SessionInput,
        responses={
            201: SessionSerializer,
            400: error_response("Invalid input, or no such project among those you may see: `details` says which."),
            503: error_response("The configured embedder cannot be loaded."),
        },
    )
    def post(self, request: Request) -> Response:
        given = SessionInput(data=request.data)
        given.is_valid(raise_exception=True)
        project = projects_visible_to(request.user).filter(slug=given.validated_data["project"]).first()
        if project is None:
            # The project is part of the request body, not of the URL: an unknown one is invalid input.
            raise ValidationError({"project": ["No such project."]})
        if not user_has_project_role(request.user, project, Role.OPERATOR):
            raise PermissionDenied("Starting research needs the operator role in the project.")
        try:
            session = research_session_run(
                project=project, question=given.validated_data["question"], limit=given.validated_data["limit"]
            )
        except EmbedderUnavailable as exc:
            raise EmbedderDown(str(exc)) from exc
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class EmbedderStatus(APIView):
    """The embedder retrieval uses now (``unavailable: …`` when the configured one cannot load)."""

    permission_classes = [IsAuthenticated, ReadWriteScope]

    @extend_schema(responses={200: {"type": "object", "properties": {"embedder": {"type": "string"}}}})
    def get(self, request: Request) -> Response:
        return Response({"embedder": active_embedder_name()})
