"""One LLM call of an attempt: caps checked first, prompt and answer kept in the trajectory, usage recorded.

Every Builder, Auditor and Doctor call goes through ``LlmCaller.call``, so no call can skip the budget check
(a typed ``BudgetExhausted`` instead of an overrun) or go unrecorded.
"""

from __future__ import annotations

import time
from typing import Any

from runs.engine import budget as budgeting
from runs.engine.circuit import CircuitBreaker
from runs.engine.prompts import Prompt
from runs.engine.providers import LLMProvider, LLMResponse, RetryBudget
from runs.engine.recorder import LlmCall, Recorder, fingerprint_text
from runs.engine.spec import PhaseSpec


class BudgetExhausted(Exception):
    def __init__(self, cap: str, detail: str) -> None:
        super().__init__(detail)
        self.cap = cap


class LlmCaller:
    def __init__(
        self, spec: PhaseSpec, provider: LLMProvider, recorder: Recorder, circuit: CircuitBreaker | None
    ) -> None:
        self.spec = spec
        self.provider = provider
        self.recorder = recorder
        self.circuit = circuit
        self.ledger = budgeting.BudgetLedger(spec)
        # Transient-error retries shared by every call of the attempt (the provider applies them).
        self.retry_budget = RetryBudget(8)
        self.llm_ms = 0

    def _event(self, stage: str, kind: str, data: dict[str, Any], blob: str | None = None) -> None:
        self.recorder.event(stage, kind, data, blob.encode("utf-8") if blob is not None else None)

    def call(self, role: str, prompt: Prompt, model: str, max_tokens: int) -> LLMResponse:
        """One LLM call: caps checked first, prompt and answer stored compressed, usage recorded."""
        prompt_tokens = budgeting.approx_tokens(prompt.system + prompt.cache_prefix + prompt.user)
        broken = self.ledger.check(model=model, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        if broken:
            raise BudgetExhausted(
                broken,
                f"{broken} cap would be exceeded by a {role} call "
                f"(~{prompt_tokens} prompt + {max_tokens} output tokens)",
            )
        self._event(
            role,
            "prompt",
            {
                "version": prompt.version,
                "model": model,
                "max_tokens": max_tokens,
                "system": fingerprint_text(prompt.system),
                "cache_prefix": fingerprint_text(prompt.cache_prefix),
                "user": fingerprint_text(prompt.user),
            },
            blob=prompt.full_text(),
        )
        started = time.monotonic()
        response = self.provider.complete(
            role=role,
            system=prompt.system,
            messages=prompt.messages,
            model=model,
            max_tokens=max_tokens,
            cache_prefix=prompt.cache_prefix or None,
            retry_budget=self.retry_budget,
        )
        self.llm_ms += int((time.monotonic() - started) * 1000)
        if self.circuit is not None:
            self.circuit.record_success(getattr(self.provider, "name", self.spec.provider))
        self._account(role, response, max_tokens)
        return response

    def _account(self, role: str, response: LLMResponse, max_tokens: int) -> None:
        usage = response.usage
        usage_dict = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_tokens": usage.cache_creation_input_tokens,
            "cache_read_tokens": usage.cache_read_input_tokens,
        }
        cost = budgeting.call_cost(self.spec.prices, response.model, usage_dict)
        billed_input = (
            (usage.input_tokens or 0) + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        )
        self.ledger.add(input_tokens=billed_input, output_tokens=usage.output_tokens or 0, cost=cost)
        self.recorder.llm_call(
            LlmCall(
                role=role,
                provider=response.provider,
                model=response.model,
                request_id=response.request_id or "",
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_tokens=usage.cache_creation_input_tokens,
                cache_read_tokens=usage.cache_read_input_tokens,
                latency_ms=response.latency_ms,
                stop_reason=response.stop_reason or "",
                max_tokens=max_tokens,
                cost_usd=cost,
            )
        )
        self._event(
            role,
            "response",
            {
                "model": response.model,
                "stop_reason": response.stop_reason,
                "usage": usage_dict,
                "latency_ms": response.latency_ms,
                "cost_usd": cost,
                "request_id": response.request_id,
                "text": fingerprint_text(response.text),
            },
            blob=response.text,
        )
