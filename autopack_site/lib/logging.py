"""Structured logging: a JSON line formatter and a filter that redacts secrets from every record.

``redact`` is also what the API's error handler applies to messages, and what anything that stores or
sends text it did not write itself (telemetry, prompts, events) should apply.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

REDACTED = "[REDACTED]"

# Secrets recognisable by their shape, replaced whole.
_SECRET_SHAPES = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),  # Anthropic keys
    re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}"),  # OpenAI-style keys
    re.compile(r"\bak_[A-Za-z0-9]{4,}_[A-Za-z0-9_\-]{8,}"),  # Autopack API keys
    re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"),  # JWTs (also unsigned)
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"),
]
# Secrets recognisable by what precedes them: the label is kept, the value replaced. A plain number
# (`max_token=4000`) is a setting, not a secret.
_LABELLED_SECRETS = [
    re.compile(r"(?i)(\b(?:bearer|api-key)\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)(\bauthorization[\"']?\s*[=:]\s*[\"']?)(?!\[REDACTED\])[^\s\"',}]{4,}(?:\s+[^\s\"',}]{8,})?"),
    re.compile(
        r"(?i)((?:api[_-]?key|x-api-key|password|passwd|secret|client_secret|token|refresh|access_token)"
        r"[\"']?\s*[=:]\s*[\"']?)(?!\[REDACTED\])(?![0-9.]+(?:[\s\"',}&]|$))[^\s\"',}&]{4,}"
    ),
]


def redact(text: str) -> str:
    """Replace anything that looks like a credential with a fixed marker."""
    for pattern in _SECRET_SHAPES:
        text = pattern.sub(REDACTED, text)
    for pattern in _LABELLED_SECRETS:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Redacts the formatted message and any traceback, whichever formatter later renders the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info or record.exc_text:
            payload["exception"] = redact(record.exc_text or self.formatException(record.exc_info))
        return json.dumps(payload, default=str)
