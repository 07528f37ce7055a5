"""The redaction filter (``autopack_site.lib.logging``): no credential reaches a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from autopack_site.lib.logging import REDACTED, JsonFormatter, RedactSecretsFilter, redact

ANTHROPIC = "sk-ant-api03-" + "A1b2C3d4" * 6
OPENAI = "sk-proj-" + "Z9y8X7w6" * 4
API_KEY = "ak_1a2b3c4d_" + "Qw3rTy-uI_oP" * 3
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJ1c2VyX2lkIjoxLCJleHAiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLXBhcnQtaGVyZQ"


@pytest.mark.parametrize(
    "text",
    [
        f"calling anthropic with {ANTHROPIC}",
        f"openai key {OPENAI} rejected",
        f"Authorization: Api-Key {API_KEY}",
        f"executor using {API_KEY} failed",
        f"Authorization: Bearer {JWT}",
        f"token={JWT}&next=/",
        '{"password": "hunter2hunter2", "username": "alice"}',
        "ANTHROPIC_API_KEY=plainsecretvalue",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    ],
)
def test_credentials_are_redacted(text):
    cleaned = redact(text)
    assert REDACTED in cleaned
    for secret in (ANTHROPIC, OPENAI, API_KEY, JWT, "hunter2hunter2", "plainsecretvalue", "MIIEvQIBADAN"):
        assert secret not in cleaned


def test_ordinary_text_is_left_alone():
    text = "phase P3 of run 12 completed in 41.2 s; 3 tests fixed, tokens used 12345"
    assert redact(text) == text


def test_an_unsigned_jwt_is_redacted_too():
    unsigned = "eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoxfQ."
    assert "eyJ1c2VyX2lkIjoxfQ" not in redact(f"got {unsigned}")


def _logger_with_stream() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.redaction.{id(stream)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_the_filter_redacts_arguments_interpolated_into_a_message():
    logger, stream = _logger_with_stream()
    logger.info("executor %s authenticated with %s", "host-1", API_KEY)
    assert API_KEY not in stream.getvalue()
    assert "host-1" in stream.getvalue()


def test_the_filter_redacts_tracebacks():
    logger, stream = _logger_with_stream()
    try:
        raise RuntimeError(f"provider refused key {ANTHROPIC}")
    except RuntimeError:
        logger.exception("call failed")
    assert "provider refused key" in stream.getvalue()
    assert ANTHROPIC not in stream.getvalue()


def test_the_json_formatter_emits_one_redacted_object_per_line():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "key %s", (API_KEY,), None)
    line = JsonFormatter().format(record)
    payload = json.loads(line)
    assert payload["message"] == f"key {REDACTED}"
    assert payload["level"] == "WARNING"


@pytest.mark.django_db
def test_api_error_bodies_do_not_echo_a_credential_sent_in_a_field():
    from tests.accounts.conftest import jwt_client
    from tests.factories import make_user

    response = jwt_client(make_user("alice")).post(
        "/api/auth/api-keys/", {"name": "x", "scopes": [API_KEY]}, format="json"
    )
    assert response.status_code == 400
    assert "is not a valid choice" in response.content.decode()
    assert API_KEY not in response.content.decode()


def test_a_plain_number_after_a_secret_label_is_a_setting_and_kept() -> None:
    from autopack_site.lib.logging import redact

    assert redact("max_token=4000, timeout: 2.5") == "max_token=4000, timeout: 2.5"
    assert redact("token=4000abcdef") == "token=[REDACTED]"
