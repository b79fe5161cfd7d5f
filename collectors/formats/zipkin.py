"""Zipkin's JSON v2: a message holds a JSON list of spans, as Zipkin's Kafka sender writes them.

Model: https://zipkin.io/zipkin-api/#/default/post_spans (Span: traceId, id, parentId, name, kind,
timestamp and duration in microseconds, localEndpoint, remoteEndpoint, tags, shared).
"""

import json
from typing import Any

from collectors.formats.record import (
    SpanRejected,
    bounded_attributes,
    check_attribute_count,
    check_times,
    normalise_id,
    peer_of,
    protocol_of,
    status_code_of,
    text,
    time_bounds,
    topic_of,
)
from topology.shared_spans import shared_server_id
from topology.span_record import SpanRecord

# Looked up with whatever the message holds; an unhashable kind raises TypeError, which is wrong_shape.
KINDS: dict[Any, str] = {"CLIENT": "client", "SERVER": "server", "PRODUCER": "producer", "CONSUMER": "consumer"}


def parse(payload: bytes) -> list[Any]:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as error:
        # ValueError: invalid JSON or UTF-8, and an integer longer than Python converts (4,300 digits).
        # RecursionError: arrays or objects nested deeper than the parser recurses.
        raise SpanRejected("not_decodable", f"not JSON: {error}") from None
    if not isinstance(document, list):
        raise SpanRejected("wrong_shape", "Zipkin JSON v2 needs a list of spans")
    return document


def records(spans: list[Any], max_age_seconds: float, records: list[SpanRecord], rejected: list[SpanRejected]) -> None:
    """Appends a SpanRecord to ``records``, or a SpanRejected to ``rejected``, for every span of the list."""
    bounds = time_bounds(max_age_seconds)
    for span in spans:
        try:
            records.append(_record(span, bounds))
        except SpanRejected as span_rejected:
            rejected.append(span_rejected)
        except (TypeError, AttributeError, ValueError) as error:
            # A field of the wrong type (a number for an id, a list for a kind): this span only.
            rejected.append(SpanRejected("wrong_shape", f"a field has the wrong type: {error}"))


def _endpoint(span: dict[str, Any], key: str) -> dict[str, Any]:
    endpoint = span.get(key) or {}
    if not isinstance(endpoint, dict):
        raise SpanRejected("wrong_shape", f"{key} is not an object")
    return endpoint


def _address(endpoint: dict[str, Any]) -> str:
    host = endpoint.get("ipv4") or endpoint.get("ipv6") or ""
    port = endpoint.get("port")
    return f"{host}:{port}" if host and port else str(host)


def _record(span: Any, bounds: tuple[float, float]) -> SpanRecord:
    if not isinstance(span, dict):
        raise SpanRejected("wrong_shape", "a span is not an object")
    tags = span.get("tags") or {}
    if not isinstance(tags, dict):
        raise SpanRejected("wrong_shape", "tags is not an object")
    # Whatever the message holds, until check_times lets only an int through.
    timestamp: Any = span.get("timestamp")
    duration: Any = span.get("duration", 0)
    check_times(timestamp, duration, bounds)
    local, remote = _endpoint(span, "localEndpoint"), _endpoint(span, "remoteEndpoint")
    kind = KINDS.get(span.get("kind"), "internal")
    trace_id = normalise_id(span.get("traceId"), 32, "traceId")
    span_id = normalise_id(span.get("id"), 16, "id")
    parent_id = span.get("parentId")
    parent_id = normalise_id(parent_id, 16, "parentId") if parent_id else ""
    shares_client_id = kind == "server" and bool(span.get("shared"))
    if shares_client_id and parent_id:
        # The server half of a shared span (see topology.shared_spans): it has the client's id and the
        # client's parent. Give it an id of its own, derived so that a redelivery gets the same one,
        # and make it the client's child.
        parent_id = span_id
        span_id = shared_server_id(trace_id, span_id)
        shares_client_id = False
    # With no parent it may be the trace's first hop, called from outside by a client that reports no
    # span: it keeps its id, so that its own children (which name that id) hang under it and it counts
    # as an entry route. Ingestion gives it its own id if its client half turns out to exist.
    #
    # The tags are the attributes as they are: JSON object keys are always text, so the copy with
    # str() of every key that was made here changed nothing and was thrown away.
    attributes = tags
    peer = ""
    if kind in ("client", "producer"):
        peer = remote.get("serviceName") or peer_of(attributes) or _address(remote)
    service = text(local.get("serviceName"), "localEndpoint.serviceName", required=True)
    # Counted after the other checks, where it has always been: a span with several faults is rejected
    # for the same one. (What is left to work out below raises nothing.)
    check_attribute_count(len(attributes))
    topic = topic_of(attributes)
    return SpanRecord(  # positional: see record.SPAN_RECORD_FIELDS
        trace_id,
        span_id,
        parent_id,
        service,
        text(_address(local), "localEndpoint"),
        kind,
        text(span.get("name"), "name") or "(unnamed)",
        protocol_of(attributes),
        timestamp,
        duration,
        status_code_of(attributes),
        "error" in tags or tags.get("otel.status_code") == "ERROR",
        text(peer, "peer") if peer else "",
        text(topic, "topic") if topic else "",
        bounded_attributes(attributes),
        "zipkin_json",
        shares_client_id,
    )
