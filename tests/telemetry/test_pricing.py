from datetime import UTC, datetime
from decimal import Decimal

import pytest

from telemetry.models import ModelPrice, PriceTable
from telemetry.pricing import cost_usd, model_matches, price_call

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # 1M input + 1M output + 1M cache write + 1M cache read, at the seeded list prices.
        ("claude-haiku-4-5", Decimal("1") + Decimal("5") + Decimal("1.25") + Decimal("0.10")),
        ("claude-haiku-4-5-20251001", Decimal("7.35")),
        ("claude-sonnet-4-5", Decimal("3") + Decimal("15") + Decimal("3.75") + Decimal("0.30")),
        ("claude-sonnet-4-20250514", Decimal("22.05")),
        ("claude-opus-4-1", Decimal("15") + Decimal("75") + Decimal("18.75") + Decimal("1.50")),
        ("claude-opus-4-5", Decimal("5") + Decimal("25") + Decimal("6.25") + Decimal("0.50")),
        ("claude-3-5-haiku-latest", Decimal("0.80") + Decimal("4") + Decimal("1") + Decimal("0.08")),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", Decimal("22.05")),
    ],
)
def test_cost_of_a_million_of_each_kind_of_token_matches_the_list_price(model, expected):
    assert cost_usd(model, 1_000_000, 1_000_000, 1_000_000, 1_000_000, at=NOW) == expected


def test_cost_of_a_typical_builder_call_is_exact_to_the_micro_dollar():
    # 12,345 in, 2,345 out, 1,000 written to cache, 40,000 read from cache on Sonnet.
    expected = (12_345 * 3 + 2_345 * 15 + 1_000 * Decimal("3.75") + 40_000 * Decimal("0.30")) / 1_000_000
    assert cost_usd("claude-sonnet-4-5", 12_345, 2_345, 1_000, 40_000, at=NOW) == expected.quantize(Decimal("0.000001"))


def test_missing_cache_figures_cost_nothing_but_missing_split_costs_unknown():
    assert cost_usd("claude-haiku-4-5", 1_000_000, 0, None, None, at=NOW) == Decimal("1.000000")
    assert cost_usd("claude-haiku-4-5", None, 500, at=NOW) is None
    assert cost_usd("claude-haiku-4-5", 500, None, at=NOW) is None


def test_unknown_model_has_no_cost_and_logs_a_warning(caplog):
    with caplog.at_level("WARNING", logger="telemetry.pricing"):
        assert cost_usd("gpt-4o", 1_000, 1_000, at=NOW) is None
    assert "no price for model 'gpt-4o'" in caplog.text


def test_a_newer_model_of_a_priced_family_is_not_guessed():
    assert not model_matches("claude-opus-4", "claude-opus-4-7")
    assert model_matches("claude-opus-4", "claude-opus-4-20250514")
    assert cost_usd("claude-opus-4-7", 1_000, 1_000, at=NOW) is None


def test_calls_are_priced_by_the_table_in_force_when_they_happened():
    new_table = PriceTable.objects.create(
        version="anthropic-test-2027", effective_from=datetime(2027, 1, 1, tzinfo=UTC), source="test"
    )
    ModelPrice.objects.create(
        table=new_table,
        model="claude-sonnet-4-5",
        input_per_mtok=Decimal("2"),
        output_per_mtok=Decimal("10"),
        cache_write_per_mtok=Decimal("2.5"),
        cache_read_per_mtok=Decimal("0.2"),
    )
    before = price_call("claude-sonnet-4-5", 1_000_000, 1_000_000, at=datetime(2026, 12, 31, tzinfo=UTC))
    after = price_call("claude-sonnet-4-5", 1_000_000, 1_000_000, at=datetime(2027, 1, 2, tzinfo=UTC))
    assert (before.cost_usd, before.price_table.version) == (Decimal("18"), "anthropic-2026-11-25")
    assert (after.cost_usd, after.price_table.version) == (Decimal("12"), "anthropic-test-2027")
    # A model the new table does not list is unknown from then on, not priced by the old table.
    assert cost_usd("claude-haiku-4-5", 1_000, 1_000, at=datetime(2027, 1, 2, tzinfo=UTC)) is None


def test_calls_before_any_price_table_have_no_cost():
    assert cost_usd("claude-sonnet-4-5", 1_000, 1_000, at=datetime(2020, 1, 1, tzinfo=UTC)) is None


def test_the_seeded_table_says_where_its_prices_come_from():
    table = PriceTable.objects.get(version="anthropic-2026-11-25")
    assert "platform.claude.com" in table.source
    assert table.prices.count() >= 10
