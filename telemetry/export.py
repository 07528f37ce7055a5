"""Optional OpenTelemetry export of LLM calls as spans named with the GenAI semantic conventions.

Off by default. It turns on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the standard OTLP variable; the
exporter also honours ``OTEL_EXPORTER_OTLP_HEADERS`` etc.) and the ``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http`` packages are installed, or when a test hands in its own tracer
provider with ``use_tracer_provider``. Exporting never fails a recording: errors are logged and dropped.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from telemetry.models import LlmUsageEvent

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
_state: dict[str, Any] = {"tracer": None, "provider": None, "configured": False}


def use_tracer_provider(provider: Any | None) -> None:
    """Export through ``provider`` (tests pass an SDK provider with an in-memory exporter); None turns off."""
    _state.update(provider=provider, configured=True)
    _state["tracer"] = provider.get_tracer("autopack.telemetry") if provider is not None else None


def reset() -> None:
    """Shut down and forget the configuration; the next export reads the environment again."""
    provider = _state["provider"]
    if provider is not None and hasattr(provider, "shutdown"):
        provider.shutdown()
    _state.update(tracer=None, provider=None, configured=False)


def flush(timeout_millis: int = 5_000) -> None:
    """Push buffered spans out now (the OTLP exporter batches them in a background thread)."""
    provider = _state["provider"]
    if provider is not None and hasattr(provider, "force_flush"):
        provider.force_flush(timeout_millis)


def _configure_from_environment() -> None:
    _state["configured"] = True
    if not os.environ.get(ENDPOINT_VARIABLE):
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "telemetry: %s is set but the OpenTelemetry SDK/OTLP exporter is not installed", ENDPOINT_VARIABLE
        )
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "autopack")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _state.update(provider=provider, tracer=provider.get_tracer("autopack.telemetry"))


def _tracer() -> Any | None:
    if not _state["configured"]:
        _configure_from_environment()
    return _state["tracer"]


def span_attributes(event: LlmUsageEvent) -> dict[str, Any]:
    """GenAI semantic-convention attributes (``gen_ai.*``) plus Autopack's own (``autopack.*``)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": event.provider,
        "gen_ai.system": event.provider,
        "gen_ai.request.model": event.model,
        "gen_ai.response.model": event.model,
        "gen_ai.response.id": event.request_id,
        "autopack.role": event.role,
    }
    optional = {
        "gen_ai.usage.input_tokens": event.input_tokens,
        "gen_ai.usage.output_tokens": event.output_tokens,
        "gen_ai.usage.cache_creation.input_tokens": event.cache_creation_tokens,
        "gen_ai.usage.cache_read.input_tokens": event.cache_read_tokens,
        "autopack.project_id": event.project_id,
        "autopack.run_id": event.run_id,
        "autopack.phase_id": event.phase_id,
        "autopack.attempt_id": event.attempt_id,
        "autopack.cost_usd": str(event.cost_usd) if event.cost_usd is not None else None,
    }
    # Unknown counts are left out rather than sent as 0: the same "never guessed" rule as the database.
    attributes.update({key: value for key, value in optional.items() if value is not None})
    if event.stop_reason:
        attributes["gen_ai.response.finish_reasons"] = [event.stop_reason]
    return attributes


def export_llm_call(event: LlmUsageEvent) -> None:
    tracer = _tracer()
    if tracer is None:
        return
    try:
        from opentelemetry.trace import SpanKind

        start = event.occurred_at - timedelta(milliseconds=event.latency_ms or 0)
        span = tracer.start_span(
            f"chat {event.model}",
            kind=SpanKind.CLIENT,
            start_time=int(start.timestamp() * 1e9),
            attributes=span_attributes(event),
        )
        span.end(end_time=int(event.occurred_at.timestamp() * 1e9))
    except Exception:  # noqa: BLE001 - exporting is best effort and must never lose the recorded row
        logger.exception("telemetry: exporting an LLM span failed")
