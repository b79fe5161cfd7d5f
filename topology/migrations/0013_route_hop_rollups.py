"""Per-route hop rollups, and what the span table needs to count them (``topology.route_hops``).

The two span columns are added with a constant default, which PostgreSQL 11+ records in the catalogue
without rewriting a row, on a partitioned table as on a plain one; the partial indexes on the parent
are built on each partition (small: the pending rows only). The spans stored before have their trace's hops counted only for the roots
of the last hour, which this migration marks pending: a route's tree for a window before then shows
what settled since (README, "Raw spans kept by ratio"). Marking every stored root would put the whole
table's roots into the partial indexes and the first settle runs.
"""

from datetime import timedelta

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

BACKFILL = timedelta(hours=1)


def mark_recent_roots(apps, schema_editor):
    Span = apps.get_model("topology", "Span")
    Span.objects.filter(parent_id="", started_at__gte=timezone.now() - BACKFILL).update(hops_pending=True)


class Migration(migrations.Migration):
    dependencies = [
        ("topology", "0012_rollup_exemplars"),
    ]

    operations = [
        migrations.CreateModel(
            name="RouteHopRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("minute", models.DateTimeField()),
                ("count", models.PositiveBigIntegerField(default=0)),
                ("errors", models.PositiveBigIntegerField(default=0)),
                ("latency_sum_ms", models.FloatField(default=0)),
                ("latency_buckets", models.JSONField(default=dict, help_text="LatencyHistogram buckets.")),
                ("operation", models.CharField(max_length=255)),
                ("path", models.TextField()),
                ("path_key", models.CharField(max_length=64)),
                (
                    "service",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="topology.service"
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["minute"], name="route_hop_rollup_minute_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("service", "operation", "minute", "path_key"), name="route_hop_rollup_unique"
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="span",
            name="exemplar",
            field=models.BooleanField(default=False, db_default=False),
        ),
        # False for the rows stored before; new rows are pending (ingestion sets it on each).
        migrations.AddField(
            model_name="span",
            name="hops_pending",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(mark_recent_roots, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="span",
            name="hops_pending",
            field=models.BooleanField(default=True, db_default=True),
        ),
        migrations.AddIndex(
            model_name="span",
            index=models.Index(
                condition=models.Q(("hops_pending", True)), fields=["started_at"], name="span_hops_pending_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="span",
            index=models.Index(
                condition=models.Q(("hops_pending", True), ("parent_id", "")),
                fields=["service", "name", "started_at"],
                name="span_pending_root_idx",
            ),
        ),
    ]
