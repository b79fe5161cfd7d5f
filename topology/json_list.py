"""An aggregate that gathers a JSON column of a group into the text of one JSON array.

The topology merges the latency histograms of every edge-minute in its window: decoding one array per
edge instead of one object per row is what keeps a mesh of thousands of edges under a few hundred
milliseconds.
"""

from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Aggregate, TextField
from django.db.models.sql.compiler import SQLCompiler

if TYPE_CHECKING:
    # The (sql, params) pair every as_sql returns: django-stubs names it, Django does not.
    from django.db.models.sql.compiler import _AsSqlType


class JSONList(Aggregate):
    name = "JSONList"
    function = "string_agg"
    template = "'[' || %(function)s((%(expressions)s)::text, ',') || ']'"
    output_field = TextField()

    def as_sqlite(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any) -> "_AsSqlType":
        return super().as_sql(
            compiler,
            connection,
            function="group_concat",
            template="'[' || %(function)s(%(expressions)s, ',') || ']'",
            **extra_context,
        )
