"""Seed the first Anthropic price table (USD per million tokens).

Source: Anthropic's pricing page, https://platform.claude.com/docs/en/docs/about-claude/pricing ("Model
pricing" table: base input, 5-minute cache writes, cache hits, output), read 2026-11-25. Cache writes are
priced at the 5-minute rate (1.25 × input; the usage report does not split 5-minute from 1-hour writes), cache
reads at 0.1 × input. List prices of these models have not changed since their release, so one version
covers their whole history; a new price list must be added as a new PriceTable row, never by editing this one.
Sonnet's long-context (> 200k input) surcharge is not modelled.

The rows are written here rather than imported from application code so the migration never changes meaning.
"""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

VERSION = "anthropic-2026-11-25"
SOURCE = (
    "https://platform.claude.com/docs/en/docs/about-claude/pricing (Model pricing table), read 2026-11-25; "
    "cache write = 5-minute rate (1.25x input), cache read = 0.1x input."
)
# model id -> (input, output, cache write 5m, cache read), USD per million tokens
PRICES = {
    "claude-opus-4-6": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-5": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-1": ("15", "75", "18.75", "1.50"),
    "claude-opus-4-0": ("15", "75", "18.75", "1.50"),
    "claude-opus-4": ("15", "75", "18.75", "1.50"),
    "claude-3-opus": ("15", "75", "18.75", "1.50"),
    "claude-sonnet-4-6": ("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-5": ("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-0": ("3", "15", "3.75", "0.30"),
    "claude-sonnet-4": ("3", "15", "3.75", "0.30"),
    "claude-3-7-sonnet": ("3", "15", "3.75", "0.30"),
    "claude-haiku-4-5": ("1", "5", "1.25", "0.10"),
    "claude-3-5-haiku": ("0.80", "4", "1", "0.08"),
    "claude-3-haiku": ("0.25", "1.25", "0.30", "0.03"),
}


def seed(apps, schema_editor):
    PriceTable = apps.get_model("telemetry", "PriceTable")
    ModelPrice = apps.get_model("telemetry", "ModelPrice")
    table, created = PriceTable.objects.get_or_create(
        version=VERSION,
        defaults={
            "provider": "anthropic",
            "effective_from": datetime(2024, 3, 1, tzinfo=UTC),
            "source": SOURCE,
        },
    )
    if not created:
        return
    ModelPrice.objects.bulk_create(
        ModelPrice(
            table=table,
            model=model,
            input_per_mtok=Decimal(prices[0]),
            output_per_mtok=Decimal(prices[1]),
            cache_write_per_mtok=Decimal(prices[2]),
            cache_read_per_mtok=Decimal(prices[3]),
        )
        for model, prices in PRICES.items()
    )


def unseed(apps, schema_editor):
    apps.get_model("telemetry", "PriceTable").objects.filter(version=VERSION).delete()


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
