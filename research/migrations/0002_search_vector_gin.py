"""GIN index on the ledger's search vector: PostgreSQL only (SQLite has no tsvector and uses icontains)."""

from django.db import migrations

INDEX = "research_ledger_search_gin"


def create_index(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("research", "BuildHistoryEntry")._meta.db_table
    schema_editor.execute(f'CREATE INDEX IF NOT EXISTS {INDEX} ON "{table}" USING gin (search_vector)')


def drop_index(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("research", "0001_ledger_research_memory")]

    operations = [migrations.RunPython(create_index, drop_index)]
