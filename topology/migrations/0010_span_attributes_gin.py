"""Indexes for searching traces: a GIN index over the spans' attributes, which answers a tag as
``attributes @> {key: value}``, and a partial index of the failed spans by trace, which tells which
listed traces failed.

Both are built concurrently on PostgreSQL: spans take writes all the time, and a plain CREATE INDEX
would hold them while it reads the whole table. The GIN index is PostgreSQL's alone, so it is made
here rather than declared on the model, which SQLite must migrate too.
"""

from django.db import migrations, models

GIN = "span_attributes_gin"
FAILED = models.Index(fields=["trace_id"], condition=models.Q(error=True), name="span_failed_trace_idx")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.add_index(apps.get_model("topology", "Span"), FAILED)
        return
    # jsonb_path_ops: answers @> only (all a search asks), with an index a fraction of jsonb_ops' size.
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {GIN} ON topology_span USING gin (attributes jsonb_path_ops)"
    )
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {FAILED.name} ON topology_span (trace_id) WHERE error"
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.remove_index(apps.get_model("topology", "Span"), FAILED)
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {GIN}")
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {FAILED.name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("topology", "0009_instance_merged_into_and_operator_records"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop, elidable=False)],
            state_operations=[migrations.AddIndex(model_name="span", index=FAILED)],
        )
    ]
