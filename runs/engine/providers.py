"""LLM providers behind one interface, with typed errors, bounded retries and JSON-lines cassettes.

Public API:
    class LLMProvider(Protocol):
        name: str
        def complete(self, *, role, system, messages, model, max_tokens, cache_prefix=None,
                     temperature=None, retry_budget=None) -> LLMResponse
    LLMResponse(text, usage: Usage, stop_reason, model, request_id, latency_ms, attempts, streamed, provider)
    Usage(input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens)  # None = absent
    RetryPolicy(max_retries_per_call, base_delay, max_delay, max_retry_after, jitter)
    RetryBudget(max_retries)             # shared by every call of one phase: .take(), .remaining
    AnthropicProvider(api_key=None, base_url=None, retry_policy=..., stream_threshold=16_000, sleep=time.sleep)
    ReplayProvider(cassette_path, match="fingerprint"|"sequential")
    RecordingProvider(inner, cassette_path)
    ScriptedProvider(responses)          # in-memory answers, records .calls (tests, demos)
    request_fingerprint(**request) -> str; cassette_entry(request, text, ...) -> dict; write_cassette(path, entries)
    Errors: ProviderError > RateLimited, Overloaded, ServerError, ProviderTimeout, ConnectionDropped (retryable);
            ContextTooLong, Unauthorized, BadRequest (> ModelNotFound), RetryBudgetExhausted, CassetteMiss.

Messages are Messages-API dicts: ``[{"role": "user", "content": "..."}]``. ``system`` is the stable prompt
prefix and is marked ``cache_control: ephemeral``; ``cache_prefix`` (optional) is more stable text (e.g. the
repository context shared by every attempt of a phase) sent as the first, also cache-marked, block of the
first user message. ``role`` (builder/auditor/doctor) is not sent to the API: it is for telemetry and for
cassette fingerprints.

Retries: 429 (waiting at least ``retry-after``), 500/502/503/504, 529, timeouts and dropped connections are
retried with exponential backoff and full jitter, at most ``max_retries_per_call`` times per call and at most
``RetryBudget.max_retries`` times across all calls sharing the budget (then ``RetryBudgetExhausted``).
400/401/403/404/413 are never retried. The SDK's own retries are switched off so this policy is the only one.

Cassette line (JSON, one per call): ``{"fingerprint", "occurrence", "request": {...}, "response": {"text",
"usage", "stop_reason", "model", "request_id"}}`` or ``{..., "error": {"type", "message"}}``. The fingerprint
is the SHA-256 of canonical JSON (sorted keys, no spaces, UTF-8) of exactly these request fields: ``role``,
``model``, ``system``, ``messages``, ``max_tokens``, ``cache_prefix``. ``temperature`` and the retry budget
are deliberately left out. The same request made twice in a run (a retry after a failed attempt) is told apart
by ``occurrence`` (0, 1, 2, ... per fingerprint, in call order).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

Message = Mapping[str, Any]


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        data = data or {}
        return cls(**{name: _int_or_none(data.get(name)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class LLMResponse:
    text: str
    usage: Usage
    stop_reason: str | None
    model: str
    request_id: str | None
    latency_ms: int  # the successful attempt only
    attempts: int = 1  # HTTP attempts made for this call, retries included
    streamed: bool = False
    provider: str = "anthropic"

    @property
    def truncated(self) -> bool:
        return self.stop_reason == "max_tokens"

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "usage": self.usage.to_dict(),
            "stop_reason": self.stop_reason,
            "model": self.model,
            "request_id": self.request_id,
            "latency_ms": self.latency_ms,
        }


@runtime_checkable
class LLMProvider(Protocol):
    name: str

    def complete(
        self,
        *,
        role: str,
        system: str,
        messages: Sequence[Message],
        model: str,
        max_tokens: int,
        cache_prefix: str | None = None,
        temperature: float | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> LLMResponse: ...


# --------------------------------------------------------------------------------------------------------------
# Errors


class ProviderError(Exception):
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = 1


class RateLimited(ProviderError):
    retryable = True


class Overloaded(ProviderError):
    retryable = True


class ServerError(ProviderError):
    retryable = True


class ProviderTimeout(ProviderError):
    retryable = True


class ConnectionDropped(ProviderError):
    retryable = True


class ContextTooLong(ProviderError):
    pass


class Unauthorized(ProviderError):
    pass


class BadRequest(ProviderError):
    pass


class ModelNotFound(BadRequest):
    pass


class RetryBudgetExhausted(ProviderError):
    def __init__(self, message: str, *, last_error: ProviderError) -> None:
        super().__init__(message, status_code=last_error.status_code, request_id=last_error.request_id)
        self.last_error = last_error


class CassetteMiss(ProviderError):
    def __init__(self, fingerprint: str, occurrence: int, *, role: str, model: str, cassette: str) -> None:
        super().__init__(
            f"no recording for request fingerprint {fingerprint} (occurrence {occurrence}, role {role}, "
            f"model {model}) in cassette {cassette}"
        )
        self.fingerprint = fingerprint
        self.occurrence = occurrence


ERROR_TYPES: dict[str, type[ProviderError]] = {
    cls.__name__: cls
    for cls in (
        ProviderError,
        RateLimited,
        Overloaded,
        ServerError,
        ProviderTimeout,
        ConnectionDropped,
        ContextTooLong,
        Unauthorized,
        BadRequest,
        ModelNotFound,
    )
}


# --------------------------------------------------------------------------------------------------------------
# Retry policy and budget


@dataclass(frozen=True)
class RetryPolicy:
    max_retries_per_call: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # a longer retry-after is not waited for: the error goes up instead
    jitter: bool = True

    def delay(self, retry_number: int, retry_after: float | None, rng: random.Random) -> float:
        backoff = min(self.max_delay, self.base_delay * (2 ** (retry_number - 1)))
        if self.jitter:
            backoff = rng.uniform(backoff / 2, backoff)
        return max(backoff, retry_after or 0.0)


class RetryBudget:
    """Retries left for one phase, shared by all its LLM calls (and threads)."""

    def __init__(self, max_retries: int = 8) -> None:
        self.max_retries = max_retries
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.max_retries:
                return False
            self.used += 1
            return True

    @property
    def remaining(self) -> int:
        return max(0, self.max_retries - self.used)


def call_with_retries(
    attempt: Callable[[], LLMResponse],
    *,
    policy: RetryPolicy,
    budget: RetryBudget | None,
    sleep: Callable[[float], None],
    rng: random.Random,
) -> LLMResponse:
    """Run ``attempt`` until it succeeds or a non-retryable error, the per-call limit or the budget stops it."""
    attempts = 0
    while True:
        attempts += 1
        try:
            response = attempt()
        except ProviderError as error:
            error.attempts = attempts
            if not error.retryable or attempts > policy.max_retries_per_call:
                raise
            if error.retry_after is not None and error.retry_after > policy.max_retry_after:
                raise
            if budget is not None and not budget.take():
                exhausted = RetryBudgetExhausted(f"retry budget exhausted after: {error.message}", last_error=error)
                exhausted.attempts = attempts
                raise exhausted from error
            sleep(policy.delay(attempts, error.retry_after, rng))
            continue
        return _with_attempts(response, attempts)


def _with_attempts(response: LLMResponse, attempts: int) -> LLMResponse:
    return LLMResponse(**{**response.__dict__, "attempts": attempts})


# --------------------------------------------------------------------------------------------------------------
# Anthropic


CACHE_CONTROL = {"type": "ephemeral"}


def build_request(
    *,
    system: str,
    messages: Sequence[Message],
    model: str,
    max_tokens: int,
    cache_prefix: str | None,
    temperature: float | None,
) -> dict[str, Any]:
    """Messages-API parameters with the stable prefix (system, then ``cache_prefix``) marked for caching."""
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": _with_cache_prefix(messages, cache_prefix),
    }
    if system:
        params["system"] = [{"type": "text", "text": system, "cache_control": CACHE_CONTROL}]
    if temperature is not None:
        params["temperature"] = temperature
    return params


def _with_cache_prefix(messages: Sequence[Message], cache_prefix: str | None) -> list[dict[str, Any]]:
    result = [dict(message) for message in messages]
    if not cache_prefix:
        return result
    for message in result:
        if message.get("role") == "user":
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
            message["content"] = [{"type": "text", "text": cache_prefix, "cache_control": CACHE_CONTROL}, *blocks]
            return result
    return [
        {"role": "user", "content": [{"type": "text", "text": cache_prefix, "cache_control": CACHE_CONTROL}]},
        *result,
    ]


class AnthropicProvider:
    """The official ``anthropic`` SDK, with this module's retry policy and typed errors."""

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retry_policy: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        stream_threshold: int = 16_000,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        client: Any = None,
    ) -> None:
        import anthropic  # imported here so replay-only processes never need the SDK configured

        self._anthropic = anthropic
        self._client = client or anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=anthropic.Timeout(timeout, connect=connect_timeout),
        )
        self.retry_policy = retry_policy or RetryPolicy()
        self.retry_budget = retry_budget
        self.stream_threshold = stream_threshold
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    def complete(
        self,
        *,
        role: str,
        system: str,
        messages: Sequence[Message],
        model: str,
        max_tokens: int,
        cache_prefix: str | None = None,
        temperature: float | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> LLMResponse:
        params = build_request(
            system=system,
            messages=messages,
            model=model,
            max_tokens=max_tokens,
            cache_prefix=cache_prefix,
            temperature=temperature,
        )
        if client_has_no_credentials(self._client):
            # The SDK would raise a bare TypeError at request time, read as a Builder failure: name the cause.
            raise Unauthorized("no Anthropic credentials: set ANTHROPIC_API_KEY (or use the replay provider)")
        stream = max_tokens >= self.stream_threshold
        return call_with_retries(
            lambda: self._attempt(params, stream=stream),
            policy=self.retry_policy,
            budget=retry_budget or self.retry_budget,
            sleep=self._sleep,
            rng=self._rng,
        )

    def _attempt(self, params: dict[str, Any], *, stream: bool) -> LLMResponse:
        started = self._clock()
        try:
            if stream:
                with self._client.messages.stream(**params) as events:
                    message = events.get_final_message()
                    request_id = events.request_id
            else:
                message = self._client.messages.create(**params)
                request_id = getattr(message, "_request_id", None)
        except self._anthropic.AnthropicError as exc:
            raise translate_sdk_error(exc) from exc
        except Exception as exc:  # httpx2 transport errors escape the SDK while a stream is being read
            translated = _translate_transport_error(exc)
            if translated is None:
                raise
            raise translated from exc
        latency_ms = int((self._clock() - started) * 1000)
        return _response_from_message(message, request_id=request_id, latency_ms=latency_ms, streamed=stream)


def client_has_no_credentials(client: Any) -> bool:
    """True for an SDK client built with neither an API key nor an auth token (a test double is trusted)."""
    if not (hasattr(client, "api_key") and hasattr(client, "auth_token")):
        return False
    return not client.api_key and not client.auth_token


def _response_from_message(message: Any, *, request_id: str | None, latency_ms: int, streamed: bool) -> LLMResponse:
    text = "".join(getattr(block, "text", "") for block in message.content if getattr(block, "type", "") == "text")
    usage = getattr(message, "usage", None)
    return LLMResponse(
        text=text,
        usage=Usage(
            input_tokens=_int_or_none(getattr(usage, "input_tokens", None)),
            output_tokens=_int_or_none(getattr(usage, "output_tokens", None)),
            cache_creation_input_tokens=_int_or_none(getattr(usage, "cache_creation_input_tokens", None)),
            cache_read_input_tokens=_int_or_none(getattr(usage, "cache_read_input_tokens", None)),
        ),
        stop_reason=message.stop_reason,
        model=message.model,
        request_id=request_id,
        latency_ms=latency_ms,
        streamed=streamed,
    )


_BY_ERROR_TYPE: dict[str, type[ProviderError]] = {
    "overloaded_error": Overloaded,
    "rate_limit_error": RateLimited,
    "api_error": ServerError,
    "authentication_error": Unauthorized,
    "permission_error": Unauthorized,
    "not_found_error": ModelNotFound,
    "request_too_large": ContextTooLong,
    "invalid_request_error": BadRequest,
}


def translate_sdk_error(exc: Exception) -> ProviderError:
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeout(f"request timed out: {exc}")
    if isinstance(exc, anthropic.APIConnectionError):
        return ConnectionDropped(f"connection failed: {exc}")
    if not isinstance(exc, anthropic.APIStatusError):
        return _translate_transport_error(exc) or ProviderError(f"{type(exc).__name__}: {exc}")
    status = exc.status_code
    headers = exc.response.headers if exc.response is not None else {}
    kind = _status_error_class(status, _error_type(exc.body), str(exc))
    return kind(
        f"HTTP {status}: {exc.message}",
        status_code=status,
        request_id=exc.request_id,
        retry_after=_retry_after(headers),
    )


def _status_error_class(status: int, error_type: str | None, text: str) -> type[ProviderError]:
    if status == 413 or (status == 400 and "too long" in text.lower()):
        return ContextTooLong
    if status == 429:
        return RateLimited
    if status == 529:
        return Overloaded
    if status in (401, 403):
        return Unauthorized
    if status == 404:
        return ModelNotFound
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequest
    # A 200 stream that carried an error event: trust its type.
    return _BY_ERROR_TYPE.get(error_type or "", ServerError)


def _error_type(body: Any) -> str | None:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("type"), str):
            return error["type"]
    return None


def _translate_transport_error(exc: Exception) -> ProviderError | None:
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        if isinstance(exc, module.TimeoutException):
            return ProviderTimeout(f"request timed out: {exc}")
        if isinstance(exc, module.TransportError):
            return ConnectionDropped(f"connection dropped: {type(exc).__name__}: {exc}")
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff rather than parse clocks we cannot trust
        if seconds >= 0:
            return seconds
    return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------------------------------------------
# Cassettes


FINGERPRINT_FIELDS = ("role", "model", "system", "messages", "max_tokens", "cache_prefix")


def request_fingerprint(
    *,
    role: str,
    model: str,
    system: str,
    messages: Sequence[Message],
    max_tokens: int,
    cache_prefix: str | None = None,
    **_ignored: Any,
) -> str:
    canonical = json.dumps(
        {
            "role": role,
            "model": model,
            "system": system,
            "messages": [dict(message) for message in messages],
            "max_tokens": max_tokens,
            "cache_prefix": cache_prefix,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _request_record(request: Mapping[str, Any]) -> dict[str, Any]:
    record = {name: request.get(name) for name in FINGERPRINT_FIELDS}
    record["messages"] = [dict(message) for message in request.get("messages", [])]
    return record


def cassette_entry(
    request: Mapping[str, Any],
    text: str = "",
    usage: Usage | Mapping[str, Any] | None = None,
    stop_reason: str | None = "end_turn",
    *,
    model: str | None = None,
    request_id: str | None = None,
    occurrence: int = 0,
    latency_ms: int = 0,
    error: ProviderError | None = None,
) -> dict[str, Any]:
    """One cassette line for ``request`` (the keyword arguments of ``complete``), built by hand or by a script."""
    entry: dict[str, Any] = {
        "fingerprint": request_fingerprint(**request),
        "occurrence": occurrence,
        "request": _request_record(request),
    }
    if error is not None:
        entry["error"] = {"type": type(error).__name__, "message": error.message, "status_code": error.status_code}
        return entry
    usage_dict = usage.to_dict() if isinstance(usage, Usage) else Usage.from_dict(usage).to_dict()
    entry["response"] = {
        "text": text,
        "usage": usage_dict,
        "stop_reason": stop_reason,
        "model": model or request.get("model"),
        "request_id": request_id,
        "latency_ms": latency_ms,
    }
    return entry


def write_cassette(path: Path | str, entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``entries`` as a cassette, numbering ``occurrence`` per fingerprint in list order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = defaultdict(int)
    with path.open("w", encoding="utf-8") as handle:
        for entry in entries:
            line = dict(entry)
            line["occurrence"] = seen[line["fingerprint"]]
            seen[line["fingerprint"]] += 1
            handle.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def read_cassette(path: Path | str) -> list[dict[str, Any]]:
    entries = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from exc
    return entries


def _response_from_entry(entry: Mapping[str, Any], provider: str) -> LLMResponse:
    if "error" in entry:
        error = entry["error"]
        cls = ERROR_TYPES.get(error.get("type", ""), ProviderError)
        raise cls(error.get("message", "recorded error"), status_code=error.get("status_code"))
    response = entry["response"]
    return LLMResponse(
        text=response.get("text", ""),
        usage=Usage.from_dict(response.get("usage")),
        stop_reason=response.get("stop_reason"),
        model=response.get("model") or entry.get("request", {}).get("model", ""),
        request_id=response.get("request_id"),
        latency_ms=int(response.get("latency_ms") or 0),
        provider=provider,
    )


class ReplayProvider:
    """Answers from a cassette; a request with no recording raises ``CassetteMiss`` naming its fingerprint.

    ``match="fingerprint"`` (default): the n-th identical request gets the n-th recording of that fingerprint.
    ``match="sequential"``: recordings are handed out in file order, and each must still match the fingerprint
    of the request it answers (a mismatch is a ``CassetteMiss``), so a reordered run fails loudly.
    ``fresh_request_ids=True`` suffixes each recorded request id with a random tag (for telemetry whose request
    ids must be unique across repeated replays); by default the recorded id comes back unchanged.
    """

    name = "replay"

    def __init__(
        self,
        cassette_path: Path | str,
        *,
        match: Literal["fingerprint", "sequential"] = "fingerprint",
        fresh_request_ids: bool = False,
    ) -> None:
        self.cassette_path = Path(cassette_path)
        self.match = match
        self.fresh_request_ids = fresh_request_ids
        self._entries = read_cassette(self.cassette_path)
        self._by_key = {(entry["fingerprint"], int(entry.get("occurrence", 0))): entry for entry in self._entries}
        self._seen: dict[str, int] = defaultdict(int)
        self._position = 0
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []

    def complete(
        self,
        *,
        role: str,
        system: str,
        messages: Sequence[Message],
        model: str,
        max_tokens: int,
        cache_prefix: str | None = None,
        temperature: float | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> LLMResponse:
        request = {"role": role, "system": system, "messages": messages, "model": model, "max_tokens": max_tokens}
        fingerprint = request_fingerprint(**request, cache_prefix=cache_prefix)
        with self._lock:
            occurrence = self._seen[fingerprint]
            self._seen[fingerprint] += 1
            entry = self._pick(fingerprint, occurrence)
            self.calls.append({"fingerprint": fingerprint, "occurrence": occurrence, "role": role, "model": model})
        if entry is None:
            raise CassetteMiss(fingerprint, occurrence, role=role, model=model, cassette=str(self.cassette_path))
        response = _response_from_entry(entry, self.name)
        if self.fresh_request_ids:
            # Replaying one cassette twice into one database would otherwise repeat "unique" request ids.
            response = replace(response, request_id=f"{response.request_id or 'replay'}-{uuid.uuid4().hex[:12]}")
        return response

    def _pick(self, fingerprint: str, occurrence: int) -> dict[str, Any] | None:
        if self.match == "fingerprint":
            return self._by_key.get((fingerprint, occurrence))
        if self._position >= len(self._entries) or self._entries[self._position]["fingerprint"] != fingerprint:
            return None
        self._position += 1
        return self._entries[self._position - 1]


class RecordingProvider:
    """Wraps any provider and appends one cassette line per call (answers and typed errors alike)."""

    def __init__(self, inner: LLMProvider, cassette_path: Path | str) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "recording")
        self.cassette_path = Path(cassette_path)
        self.cassette_path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        if self.cassette_path.exists():
            for entry in read_cassette(self.cassette_path):
                self._seen[entry["fingerprint"]] = max(self._seen[entry["fingerprint"]], entry.get("occurrence", 0) + 1)

    def complete(self, **request: Any) -> LLMResponse:
        record = {name: request.get(name) for name in FINGERPRINT_FIELDS}
        try:
            response = self.inner.complete(**request)
        except ProviderError as error:
            self._append(record, error=error)
            raise
        self._append(
            record,
            text=response.text,
            usage=response.usage,
            stop_reason=response.stop_reason,
            model=response.model,
            request_id=response.request_id,
            latency_ms=response.latency_ms,
        )
        return response

    def _append(self, record: dict[str, Any], **fields: Any) -> None:
        with self._lock:
            fingerprint = request_fingerprint(**record)
            entry = cassette_entry(record, occurrence=self._seen[fingerprint], **fields)
            self._seen[fingerprint] += 1
            with self.cassette_path.open("a", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # several processes may record into one cassette
                handle.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
                handle.flush()


@dataclass
class ScriptedProvider:
    """Hands out scripted answers in order (str, LLMResponse, or a ProviderError to raise); records calls."""

    responses: list[str | LLMResponse | ProviderError]
    name: str = "scripted"
    default_stop_reason: str = "end_turn"
    calls: list[dict[str, Any]] = field(default_factory=list)

    def complete(self, **request: Any) -> LLMResponse:
        self.calls.append(request)
        if not self.responses:
            raise CassetteMiss(
                request_fingerprint(**request),
                len(self.calls) - 1,
                role=request.get("role", ""),
                model=request.get("model", ""),
                cassette="<scripted>",
            )
        answer = self.responses.pop(0)
        if isinstance(answer, ProviderError):
            raise answer
        if isinstance(answer, LLMResponse):
            return answer
        return LLMResponse(
            text=answer,
            usage=Usage(input_tokens=None, output_tokens=None),
            stop_reason=self.default_stop_reason,
            model=request.get("model", ""),
            request_id=None,
            latency_ms=0,
            provider=self.name,
        )
