"""``GET /health``: is the service usable? 200 when the database and the queue answer, else 503."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def _queue_ok() -> bool:
    """The django-q2 broker answers: Redis ping, or the ORM broker's table is readable.

    The ORM broker's own ``ping()`` always says yes, so for it we read its queue table instead.
    """
    try:
        from django_q.brokers import get_broker
        from django_q.conf import Conf

        if Conf.ORM:
            from django_q.models import OrmQ

            OrmQ.objects.using(Conf.ORM).only("pk").first()
            return True
        return bool(get_broker().ping())
    except Exception:
        return False


def _embedder() -> str | None:
    try:
        from research.memory import active_embedder_name  # the Research app adds this
    except ImportError:
        return None
    try:
        return active_embedder_name()
    except Exception:
        return "error"


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    database = "ok" if _database_ok() else "error"
    queue = "ok" if _queue_ok() else "error"
    body = {
        "status": "ok" if database == queue == "ok" else "error",
        "service": "autopack",
        "version": settings.VERSION,
        "database": database,
        "queue": queue,
    }
    embedder = _embedder()
    if embedder is not None:
        body["embedder"] = embedder
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)
