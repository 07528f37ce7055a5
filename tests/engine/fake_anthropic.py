"""A local fake of the Anthropic Messages API on 127.0.0.1, for running the real SDK in tests.

Usage (the ``fake_anthropic`` fixture in ``tests/engine/conftest.py`` starts and stops one per test):

    fake.enqueue(Reply("hello"))                    # next POST /v1/messages answers "hello"
    fake.enqueue(Status(429, retry_after="0"))      # then a 429 with a retry-after header
    fake.responder = lambda body: Reply(...)        # answers when the queue is empty (default: echo)
    provider = AnthropicProvider(api_key="test", base_url=fake.base_url, ...)
    fake.requests                                    # [RecordedRequest(body=dict, headers=dict)], in order

Behaviours: ``Reply`` (JSON, or server-sent events when the request has ``"stream": true``; cut at
``max_tokens`` "tokens" (whitespace-separated words) with ``stop_reason: max_tokens`` unless a stop reason is
given), ``Status`` (an error status with an Anthropic-shaped error body), ``Drop`` (close the connection: before
answering, or after ``after_events`` stream events), ``StreamError`` (an ``error`` event mid-stream) and
``Hang`` (sleep, to provoke client timeouts).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = "ok"
    stop_reason: str | None = None
    usage: dict[str, Any] | None = None  # overrides the computed usage fields; include a key with None to omit it
    model: str | None = None
    chunk_words: int = 3


@dataclass
class Status:
    code: int
    message: str = "error"
    error_type: str | None = None
    retry_after: str | None = None


@dataclass
class Drop:
    after_events: int = 0  # stream events sent before the connection is cut (0: cut before any answer)


@dataclass
class StreamError:
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    after_events: int = 2


@dataclass
class Hang:
    seconds: float


Behaviour = Reply | Status | Drop | StreamError | Hang


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _default_responder(body: dict[str, Any]) -> Behaviour:
    last = body.get("messages", [{}])[-1].get("content", "")
    if isinstance(last, list):
        last = " ".join(block.get("text", "") for block in last if isinstance(block, dict))
    return Reply(text=f"echo: {last}")


@dataclass
class FakeAnthropic:
    host: str = "127.0.0.1"
    queue: list[Behaviour] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    responder: Callable[[dict[str, Any]], Behaviour] = _default_responder
    input_tokens: int = 11

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = 0
        self._server = ThreadingHTTPServer((self.host, 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-anthropic", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def enqueue(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self.queue.extend(behaviours)

    def next_behaviour(self, body: dict[str, Any]) -> tuple[Behaviour, str]:
        with self._lock:
            self._counter += 1
            request_id = f"req_fake_{self._counter:04d}"
            behaviour = self.queue.pop(0) if self.queue else None
        return (behaviour if behaviour is not None else self.responder(body)), request_id

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _make_handler(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            fake.requests.append(RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            behaviour, request_id = fake.next_behaviour(body)
            if isinstance(behaviour, Hang):
                time.sleep(behaviour.seconds)
                behaviour = Reply("late")
            if isinstance(behaviour, Status):
                return self._status(behaviour, request_id)
            if isinstance(behaviour, Drop) and (behaviour.after_events == 0 or not body.get("stream")):
                return self._cut()
            reply, events = _events_for(fake, body, behaviour)
            if body.get("stream"):
                return self._stream(events, behaviour, request_id)
            return self._json(200, _final_message(reply), request_id)

        def _json(self, code: int, payload: dict[str, Any], request_id: str, extra: dict[str, str] | None = None):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", request_id)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _status(self, status: Status, request_id: str) -> None:
            error_type = status.error_type or _ERROR_TYPES.get(status.code, "api_error")
            payload = {"type": "error", "error": {"type": error_type, "message": status.message}}
            extra = {"retry-after": status.retry_after} if status.retry_after is not None else {}
            extra["x-should-retry"] = "false"  # our provider decides; the SDK's own retries are off anyway
            self._json(status.code, payload, request_id, extra)

        def _stream(self, events: list[tuple[str, dict[str, Any]]], behaviour: Behaviour, request_id: str) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("request-id", request_id)
            self.end_headers()
            for index, (name, data) in enumerate(events):
                if isinstance(behaviour, Drop) and index == behaviour.after_events:
                    self.wfile.write(b'40\r\nevent: content_block_delta\ndata: {"type"')  # a chunk cut short
                    self.wfile.flush()
                    return self._cut()
                if isinstance(behaviour, StreamError) and index == behaviour.after_events:
                    name = "error"
                    data = {"type": "error", "error": {"type": behaviour.error_type, "message": behaviour.message}}
                    self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    break
                self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _cut(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    return Handler


def _events_for(fake: FakeAnthropic, body: dict[str, Any], behaviour: Behaviour) -> tuple[dict[str, Any], list]:
    reply = behaviour if isinstance(behaviour, Reply) else Reply("partial answer that never finishes " * 5)
    words = reply.text.split(" ")
    max_tokens = int(body.get("max_tokens", 1024))
    stop_reason = reply.stop_reason
    if stop_reason is None:
        stop_reason = "max_tokens" if len(words) > max_tokens else "end_turn"
        if stop_reason == "max_tokens":
            words = words[:max_tokens]
    text = " ".join(words)
    usage = {
        "input_tokens": fake.input_tokens,
        "output_tokens": len(words),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    usage.update(reply.usage or {})
    usage = {key: value for key, value in usage.items() if value is not None}
    message = {
        "id": f"msg_fake_{len(fake.requests):04d}",
        "type": "message",
        "role": "assistant",
        "model": reply.model or body.get("model", "claude-fake"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    start_usage = {key: value for key, value in usage.items() if key != "output_tokens"} | {"output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "usage": start_usage}},
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for start in range(0, len(words), reply.chunk_words):
        piece = " ".join(words[start : start + reply.chunk_words]) + (
            " " if start + reply.chunk_words < len(words) else ""
        )
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        events.append(("content_block_delta", delta))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": len(words)},
    }
    events.append(("message_delta", final_delta))
    events.append(("message_stop", {"type": "message_stop"}))
    return message, events


def _final_message(message: dict[str, Any]) -> dict[str, Any]:
    return message
