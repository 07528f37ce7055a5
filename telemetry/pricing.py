"""Cost of an LLM call from the versioned price table kept in the database.

The price table is data, not code: a new price list is a new ``PriceTable`` row with its ``effective_from``,
so calls are priced by the list in force when they happened and old costs never move. The first table is
seeded by migration ``0002_seed_anthropic_prices`` (its ``source`` field says where the prices came from).

An unknown model, or a call without an input/output split, has no cost (``None``) and logs a warning: a
guessed price would be worse than a visible gap.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.utils import timezone

from telemetry.models import ModelPrice, PriceTable

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.000001")

# What may follow a priced model id and still be the same model: a dated snapshot, an alias, a Bedrock version.
_SNAPSHOT_SUFFIX = re.compile(r"(?:-\d{8}|@\d{8}|-latest)?(?:-v\d+(?::\d+)?)?")
# Cloud-provider spellings: "anthropic.claude-…" (Bedrock), "us.anthropic.claude-…" (cross-region profiles).
_VENDOR_PREFIX = re.compile(r"^(?:[a-z]{2,4}\.)?anthropic\.")


@dataclass(frozen=True)
class PricedCall:
    cost_usd: Decimal | None
    price_table: PriceTable | None


def normalise_model_name(model: str) -> str:
    return _VENDOR_PREFIX.sub("", model.strip().lower())


def model_matches(priced_model: str, model: str) -> bool:
    """True when ``model`` is ``priced_model`` itself or one of its snapshots (never a newer sibling)."""
    name = normalise_model_name(model)
    if not name.startswith(priced_model):
        return False
    return _SNAPSHOT_SUFFIX.fullmatch(name[len(priced_model) :]) is not None


def price_table_at(at: datetime, *, provider: str = "anthropic") -> PriceTable | None:
    return PriceTable.objects.filter(provider=provider, effective_from__lte=at).order_by("-effective_from").first()


def model_price(model: str, *, at: datetime | None = None, provider: str = "anthropic") -> ModelPrice | None:
    table = price_table_at(at or timezone.now(), provider=provider)
    if table is None:
        return None
    # The longest matching id wins, so "claude-opus-4-1" beats "claude-opus-4" for "claude-opus-4-1-20250805".
    candidates = sorted(table.prices.all(), key=lambda price: len(price.model), reverse=True)
    return next((price for price in candidates if model_matches(price.model, model)), None)


def cost_from_price(
    price: ModelPrice,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_tokens: int | None,
    cache_read_tokens: int | None,
) -> Decimal:
    # A missing cache figure is billed as no cache use: the provider reports cache tokens whenever it bills them.
    micro_dollars = (
        input_tokens * price.input_per_mtok
        + output_tokens * price.output_per_mtok
        + (cache_creation_tokens or 0) * price.cache_write_per_mtok
        + (cache_read_tokens or 0) * price.cache_read_per_mtok
    )
    return (micro_dollars / MILLION).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def price_call(
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_creation_tokens: int | None = None,
    cache_read_tokens: int | None = None,
    *,
    at: datetime | None = None,
    provider: str = "anthropic",
) -> PricedCall:
    """Price one call; ``cost_usd`` is None (with a warning) when the model or the token split is unknown."""
    if input_tokens is None or output_tokens is None:
        logger.warning("telemetry: no input/output split for a %s call, cost left unknown", model)
        return PricedCall(None, None)
    price = model_price(model, at=at, provider=provider)
    if price is None:
        logger.warning("telemetry: no price for model %r (provider %s), cost left unknown", model, provider)
        return PricedCall(None, None)
    cost = cost_from_price(
        price,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_creation_tokens=cache_creation_tokens,
        cache_read_tokens=cache_read_tokens,
    )
    return PricedCall(cost, price.table)


def cost_usd(
    model: str,
    input: int | None,  # noqa: A002 - the name the callers were promised
    output: int | None,
    cache_creation: int | None = None,
    cache_read: int | None = None,
    *,
    at: datetime | None = None,
    provider: str = "anthropic",
) -> Decimal | None:
    """USD cost of one call under the price table in force at ``at`` (default now); None when unknown."""
    return price_call(model, input, output, cache_creation, cache_read, at=at, provider=provider).cost_usd
