from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.schemas import IngestSerializer, answers
from topology.consumer_lag import latest_for_group
from topology.models import DeadLetter, IngestRollup, SourceStatus

THROUGHPUT_MINUTES = 15


class IngestView(APIView):
    @extend_schema(
        responses=answers(IngestSerializer, bad_request=False), description="How our own span consumer is doing."
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        minutes = list(
            IngestRollup.objects.filter(minute__gte=now - timedelta(minutes=THROUGHPUT_MINUTES)).order_by("minute")
        )
        # The last complete minute: the current one is still filling up.
        complete = [row for row in minutes if row.minute <= now - timedelta(minutes=1)]
        last = complete[-1] if complete else None
        return Response(
            {
                "consumer_group": settings.KAFKA_CONSUMER_GROUP,
                "topics": settings.TRACE_TOPICS,
                "lag": latest_for_group(settings.KAFKA_CONSUMER_GROUP),
                "throughput": {
                    "minute": last.minute if last else None,
                    "spans_per_second": round(last.spans / 60, 2) if last else 0.0,
                    "messages_per_second": round(last.messages / 60, 2) if last else 0.0,
                },
                "minutes": [
                    {
                        "minute": row.minute,
                        "messages": row.messages,
                        "spans": row.spans,
                        "duplicate_spans": row.duplicate_spans,
                        "rejected": row.rejected,
                        "spans_by_format": row.spans_by_format,
                    }
                    for row in minutes
                ],
                "dead_letters": dict(DeadLetter.objects.values_list("reason").annotate(n=Count("id")).order_by()),
                "sources": [status.as_dict() for status in SourceStatus.objects.all()],
            }
        )
