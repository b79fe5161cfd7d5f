"""An aggregate that gathers a JSON column of a group into the text of one JSON array.

The topology merges the latency histograms of every edge-minute in its window: decoding one array per
edge instead of one object per row is what keeps a mesh of thousands of edges under a few hundred
milliseconds.
"""

from django.db.models import Aggregate, TextField


class JSONList(Aggregate):
    name = "JSONList"
    function = "string_agg"
    template = "'[' || %(function)s((%(expressions)s)::text, ',') || ']'"
    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            function="group_concat",
            template="'[' || %(function)s(%(expressions)s, ',') || ']'",
            **extra_context,
        )
