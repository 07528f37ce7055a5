"""OpenTelemetry export: spans through an in-memory exporter, and real OTLP/HTTP to a local collector."""

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from telemetry import export

pytestmark = pytest.mark.django_db
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
span_export = pytest.importorskip("opentelemetry.sdk.trace.export")


@pytest.fixture(autouse=True)
def _fresh_export_state():
    export.reset()
    yield
    export.reset()


@pytest.fixture
def spans():
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(span_export.SimpleSpanProcessor(exporter))
    export.use_tracer_provider(provider)
    return exporter


def test_export_is_off_without_an_otlp_endpoint(monkeypatch, record_call):
    monkeypatch.delenv(export.ENDPOINT_VARIABLE, raising=False)
    record_call()
    assert export._state["configured"] is True
    assert export._state["tracer"] is None


def test_an_llm_call_becomes_a_span_with_genai_attributes(spans, record_call):
    event = record_call(
        request_id="msg_abc",
        model="claude-haiku-4-5",
        input_tokens=1_200,
        output_tokens=300,
        cache_read_tokens=800,
        latency_ms=1_500,
        stop_reason="max_tokens",
        role="doctor",
    )

    [span] = spans.get_finished_spans()
    assert span.name == "chat claude-haiku-4-5"
    assert span.kind.name == "CLIENT"
    assert (span.end_time - span.start_time) == 1_500 * 1_000_000
    attributes = dict(span.attributes)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.request.model"] == "claude-haiku-4-5"
    assert attributes["gen_ai.response.id"] == "msg_abc"
    assert attributes["gen_ai.usage.input_tokens"] == 1_200
    assert attributes["gen_ai.usage.output_tokens"] == 300
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 800
    assert "gen_ai.usage.cache_creation.input_tokens" not in attributes  # unknown, so not sent as 0
    assert attributes["gen_ai.response.finish_reasons"] == ("max_tokens",)
    assert attributes["autopack.role"] == "doctor"
    assert attributes["autopack.cost_usd"] == str(event.cost_usd)


def test_a_duplicate_request_id_exports_no_second_span(spans, record_call):
    record_call(request_id="msg_once")
    record_call(request_id="msg_once")
    assert len(spans.get_finished_spans()) == 1


def test_spans_reach_an_otlp_http_collector_named_by_the_environment(monkeypatch, record_call):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    received = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(export.ENDPOINT_VARIABLE, f"http://127.0.0.1:{server.server_port}")
        record_call(request_id="msg_otlp", input_tokens=4_321)
        export.flush()
    finally:
        server.shutdown()
        server.server_close()

    [(path, body)] = received
    assert path == "/v1/traces"
    assert b"gen_ai.usage.input_tokens" in body and b"msg_otlp" in body
