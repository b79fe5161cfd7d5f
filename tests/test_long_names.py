"""Names longer than their 255-character columns: stored cut to 254 characters and "…"."""

import pytest
from django.db import transaction

from collectors.formats import decode
from collectors.formats.record import MAX_NAME_CHARS
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf, zipkin_json, zipkin_span
from topology.ingestion import resolve_unpaired, store_spans
from topology.models import EdgeRollup, Instance, Service, Span

pytestmark = pytest.mark.django_db

LONG = "checkout-" + "x" * 291  # 300 characters
CUT = LONG[:254] + "…"


def store(message, message_format):
    with transaction.atomic():
        return store_spans(decode(message, message_format, 10**7, 86400).spans)


def test_the_cut_keeps_a_name_to_its_column_and_says_it_was_cut():
    assert (len(LONG), len(CUT), MAX_NAME_CHARS) == (300, 255, 255)


def test_a_300_character_service_and_operation_from_zipkin_are_stored_cut_with_an_ellipsis():
    trace_id = "5af7183fb1d4cf5f"
    store(
        zipkin_json(
            [
                zipkin_span(LONG, "/" + "o" * 299, "server", trace_id, "6b221d5bc9e6496c"),
                zipkin_span(
                    LONG,
                    "get",
                    "client",
                    trace_id,
                    "352bff9a74ca9ad2",
                    parent_id="6b221d5bc9e6496c",
                    remote_service="p" * 300,
                ),
            ]
        ),
        "zipkin_json",
    )

    assert list(Service.objects.values_list("name", flat=True)) == [CUT]
    root = Span.objects.get(kind="server")
    assert root.name == "/" + "o" * 253 + "…"
    assert Span.objects.get(kind="client").peer == "p" * 254 + "…"
    # The uninstrumented callee the client names is that same cut name, whoever names it.
    with transaction.atomic():
        resolve_unpaired(grace_seconds=-1)
    assert EdgeRollup.objects.get().target.name == "p" * 254 + "…"


def test_a_300_character_service_and_instance_from_otlp_are_stored_cut_with_an_ellipsis():
    traces = OtelTraces()
    traces.span(LONG, "i" * 300, "GET /", "server", now_ns(), 5)

    store(otlp_protobuf(traces.finished()), "otlp_proto")

    instance = Instance.objects.get()
    assert (instance.service.name, instance.identity) == (CUT, "i" * 254 + "…")


def test_a_name_of_exactly_255_characters_is_stored_whole():
    traces = OtelTraces()
    traces.span("s" * 255, "s-1", "GET /", "server", now_ns(), 5)

    store(otlp_protobuf(traces.finished()), "otlp_proto")

    assert Service.objects.get().name == "s" * 255


def test_two_names_that_differ_only_after_their_254th_character_are_one_service():
    traces = OtelTraces()
    traces.span(LONG[:254] + "-a" * 10, "a-1", "GET /", "server", now_ns(), 5)
    traces.span(LONG[:254] + "-b" * 10, "b-1", "GET /", "server", now_ns(), 5)

    store(otlp_protobuf(traces.finished()), "otlp_proto")

    assert list(Service.objects.values_list("name", flat=True)) == [CUT]
    assert Instance.objects.filter(service__name=CUT).count() == 2
