"""A GIN index over the spans' attributes, for trace search by tag (``attributes @> {key: value}``).

PostgreSQL only, so it is created here rather than declared on the model, which SQLite must migrate
too. Concurrently: spans take writes all the time, and a plain CREATE INDEX would hold them while it
reads the whole table.
"""

from django.db import migrations

INDEX = "span_attributes_gin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # jsonb_path_ops: answers @> only (all a search asks), with an index a fraction of jsonb_ops' size.
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON topology_span USING gin (attributes jsonb_path_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("topology", "0007_ingest_spans_by_wire_format"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
