"""How calls are counted from CLIENT/SERVER pairs, whatever the batching, duplication and lateness."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from collectors.formats import decode
from collectors.tasks import resolve_unpaired_spans
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf
from topology.ingestion import resolve_unpaired, store_spans
from topology.models import EdgeRollup, InstanceRollup, Service, Span

pytestmark = pytest.mark.django_db


def stored(spans):
    with transaction.atomic():
        return store_spans(decode(otlp_protobuf(spans), "otlp_proto", 10**7, 86400).spans)


def calls(source, target):
    return EdgeRollup.objects.filter(source__name=source, target__name=target).aggregate(n=Sum("count"))["n"] or 0


def one_call():
    traces = OtelTraces()
    root = traces.span("web", "web-1", "GET /", "server", now_ns(), 30)
    client = traces.span("web", "web-1", "GET", "client", now_ns(), 20, parent=root, attributes={"peer.service": "api"})
    traces.span("api", "api-1", "GET /items", "server", now_ns(), 10, parent=client)
    return traces.finished()


def test_a_span_repeated_in_a_differently_batched_message_counts_its_call_once():
    root, client, server = one_call()

    stored([root, client])
    result = stored([client, server])

    assert (result.new_spans, result.duplicate_spans) == (1, 1)
    assert calls("web", "api") == 1
    assert Span.objects.filter(paired=False).count() == 0


def test_a_callee_that_sends_no_spans_is_named_by_peer_service_after_the_grace_period():
    root, client, _ = one_call()
    stored([root, client])
    assert calls("web", "api") == 0

    with transaction.atomic():
        assert resolve_unpaired(grace_seconds=3600) == 0  # still within the grace period
    with transaction.atomic():
        resolve_unpaired(grace_seconds=-1)

    assert calls("web", "api") == 1


def test_a_child_later_than_the_grace_period_is_stored_but_not_counted_again():
    root, client, server = one_call()
    stored([root, client])
    with transaction.atomic():
        resolve_unpaired(grace_seconds=-1)

    stored([server])
    with transaction.atomic():
        resolve_unpaired(grace_seconds=-1)

    assert calls("web", "api") == 1
    assert Span.objects.count() == 3
    # The late SERVER span still counts as a request served by its instance, from an unknown caller.
    assert InstanceRollup.objects.get(instance__identity="api-1").caller is None


def test_the_periodic_task_settles_more_overdue_calls_than_one_batch_holds(settings):
    settings.SPAN_PAIRING_GRACE_SECONDS = 60
    web = Service.objects.create(name="web")
    started = timezone.now() - timedelta(minutes=5)
    overdue = 5000 + 250  # one batch of resolve_unpaired is 5,000 traces
    Span.objects.bulk_create(
        [
            Span(
                trace_id=f"{i + 1:032x}",
                span_id=f"{i + 1:016x}",
                parent_id="00000000000000aa",
                service=web,
                kind="client",
                name="SELECT",
                protocol="other",
                started_at=started,
                duration_us=1000,
                peer="postgres",
                paired=False,
            )
            for i in range(overdue)
        ]
    )

    assert resolve_unpaired_spans() == overdue

    assert calls("web", "postgres") == overdue
    assert not Span.objects.filter(paired=False).exists()


def test_the_periodic_task_waits_the_configured_grace_period(settings):
    settings.SPAN_PAIRING_GRACE_SECONDS = 300
    web = Service.objects.create(name="web")

    def waiting_call(index, age_seconds):
        return Span(
            trace_id=f"{index:032x}",
            span_id=f"{index:016x}",
            parent_id="00000000000000aa",
            service=web,
            kind="client",
            name="SELECT",
            protocol="other",
            started_at=timezone.now() - timedelta(seconds=age_seconds),
            duration_us=1000,
            peer="postgres",
            paired=False,
        )

    # Past the default 60 s but within the 300 s configured: still waiting for its child.
    Span.objects.bulk_create([waiting_call(1, 240), waiting_call(2, 360)])

    assert resolve_unpaired_spans() == 1

    assert calls("web", "postgres") == 1
    assert list(Span.objects.filter(paired=False).values_list("trace_id", flat=True)) == [f"{1:032x}"]


@pytest.mark.parametrize("failed", ["client", "server"])
def test_a_call_is_an_error_when_either_side_is(failed):
    traces = OtelTraces()
    root = traces.span("web", "web-1", "GET /", "server", now_ns(), 30)
    client = traces.span("web", "web-1", "GET", "client", now_ns(), 20, parent=root, error=failed == "client")
    traces.span("api", "api-1", "GET /items", "server", now_ns(), 10, parent=client, error=failed == "server")

    stored(traces.finished())

    assert EdgeRollup.objects.get(source__name="web", target__name="api").errors == 1
