"""GET /health reports the database and the queue broker, with 200 only when both answer."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django_q.conf import Conf

pytestmark = pytest.mark.django_db


def test_health_is_ok_with_the_embedded_defaults(client, settings) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    body.pop("embedder", None)
    assert body == {
        "status": "ok",
        "service": "autopack",
        "version": settings.VERSION,
        "database": "ok",
        "queue": "ok",
    }


def test_health_uses_a_real_redis_broker_when_configured(client, monkeypatch) -> None:
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:6379/14")

    assert client.get("/health").json()["queue"] == "ok"


def test_health_is_503_when_the_broker_does_not_answer(client, monkeypatch) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:1/0")

    response = client.get("/health")

    assert response.status_code == 503
    assert (response.json()["status"], response.json()["queue"]) == ("error", "error")


def test_health_is_503_when_the_database_fails(client, monkeypatch) -> None:
    from django.db import connection

    def refuse(*args, **kwargs):
        raise OperationalError("database is down")

    monkeypatch.setattr(connection, "cursor", refuse)

    response = client.get("/health")

    assert response.status_code == 503
    assert response.json()["database"] == "error"


def test_health_refuses_other_methods(client) -> None:
    assert client.post("/health").status_code == 405
