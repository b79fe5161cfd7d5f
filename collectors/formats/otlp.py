"""OTLP trace export requests (``ExportTraceServiceRequest``), in protobuf or in OTLP's JSON encoding.

OTLP JSON differs from protobuf's canonical JSON in one way that matters: trace and span ids are hex,
not base64 (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding). They are turned into
bytes first, so both encodings go through the same protobuf walk.
"""

import base64
import binascii
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collectors.formats.otlp_json import request_from_json
from collectors.formats.record import (
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_ATTRIBUTES,
    MAX_DURATION_US,
    MAX_NAME_CHARS,
    SpanRejected,
    bounded_attributes,
    check_attribute_count,
    check_times,
    id_from_bytes,
    peer_of,
    protocol_of,
    status_code_of,
    text,
    time_bounds,
    topic_of,
)
from topology.span_record import SpanRecord

KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_ERROR = 2
NO_TRACE_ID = "0" * 32
NO_SPAN_ID = "0" * 16
SCALAR_VALUES = frozenset(("string_value", "bool_value", "int_value", "double_value"))


def parse_protobuf(payload: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(payload)
    except DecodeError as error:
        raise SpanRejected("not_decodable", f"not an OTLP protobuf ExportTraceServiceRequest: {error}") from None
    if not request.resource_spans and payload:
        raise SpanRejected("wrong_shape", "an OTLP request without resourceSpans")
    return request


def parse_json(payload: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as error:
        # ValueError: invalid JSON or UTF-8, and an integer longer than Python converts (4,300 digits).
        # RecursionError: arrays or objects nested deeper than the parser recurses.
        raise SpanRejected("not_decodable", f"not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
        raise SpanRejected("wrong_shape", "OTLP JSON needs an object with a resourceSpans list")
    request = request_from_json(document)
    if request is not None:
        return request  # see otlp_json: the request in the form OTLP exporters write it, without ParseDict
    for resource_spans in document["resourceSpans"]:
        for scope_spans in _list(resource_spans, "scopeSpans"):
            for span in _list(scope_spans, "spans"):
                if not isinstance(span, dict):
                    continue  # ParseDict below rejects it with the message's reason
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = _hex_to_base64(span[key])
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, OverflowError, SystemError) as error:
        # OverflowError: json_format converts an enum given as a number with int(), and int(Infinity) raises it.
        # SystemError: protobuf's upb runtime raises it when it looks up a field name holding a lone
        # surrogate (a JSON "\ud800" escape in an object key); protobuf strings are UTF-8, so it is no OTLP.
        raise SpanRejected("wrong_shape", f"not an OTLP JSON ExportTraceServiceRequest: {error}") from None
    return request


def _list(container: Any, key: str) -> list[Any]:
    value = container.get(key, []) if isinstance(container, dict) else []
    if not isinstance(value, list):
        raise SpanRejected("wrong_shape", f"{key} is not a list")
    return value


def _hex_to_base64(value: Any) -> str:
    # An id that is not hex becomes empty bytes, which the per-span id check rejects with its reason.
    try:
        return base64.b64encode(binascii.unhexlify(value)).decode()
    except (binascii.Error, TypeError, ValueError):
        return ""


def any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value  # most attributes: tested first, and read without getattr
    if which in SCALAR_VALUES:
        return getattr(value, which)
    if which is None:
        return None
    if which == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {item.key: any_value(item.value) for item in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def records(
    request: ExportTraceServiceRequest,
    wire_format: str,
    max_age_seconds: float,
    spans: list[SpanRecord],
    rejected: list[SpanRejected],
) -> None:
    """Appends a SpanRecord to ``spans``, or a SpanRejected to ``rejected``, for every span of the request.

    Every span of the main production format goes through this loop, so the work that does not depend
    on the span is done once per message (the time bounds, the text of each span name) or per resource
    (its service and instance), a span's fields are read from protobuf once each (a read makes a Python
    object), and the checks that pass for almost every span are tested inline, calling the function
    that says why only when one fails. The checks run in the order they always have, so that a span with
    several faults is rejected for the same one.
    """
    oldest_us, newest_us = bounds = time_bounds(max_age_seconds)
    names: dict[str, str] = {}
    for resource_spans in request.resource_spans:
        resource = {item.key: any_value(item.value) for item in resource_spans.resource.attributes}
        # Checked for each span after its ids: a span with a bad id is rejected for its id first.
        service = text(resource.get("service.name"), "resource attribute service.name")
        instance_id = resource.get("service.instance.id")
        host = resource.get("host.name") or ""
        # The instance of every span when the resource names it; else of every span but a SERVER span.
        instance = text(instance_id, "service.instance.id") if instance_id else text(host, "instance")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    # Counted before conversion so that a hostile span costs little to refuse.
                    span_attributes = span.attributes
                    check_attribute_count(len(span_attributes))
                    attributes, kept = _attributes(span_attributes)
                    start_ns = span.start_time_unix_nano
                    end_ns = span.end_time_unix_nano
                    start_us = start_ns // 1000
                    duration_us = (end_ns - start_ns) // 1000 if end_ns > start_ns else 0
                    # What check_times and id_from_bytes test, inline; they are called to raise the rejection.
                    if not (start_us > 0 and oldest_us <= start_us <= newest_us and duration_us <= MAX_DURATION_US):
                        check_times(start_us, duration_us, bounds)
                    trace_id = span.trace_id.hex()
                    if len(trace_id) != 32 or trace_id == NO_TRACE_ID:
                        id_from_bytes(span.trace_id, 16, "traceId")
                    span_id = span.span_id.hex()
                    if len(span_id) != 16 or span_id == NO_SPAN_ID:
                        id_from_bytes(span.span_id, 8, "spanId")
                    parent_id = span.parent_span_id.hex()  # "" when it has none
                    if parent_id and (len(parent_id) != 16 or parent_id == NO_SPAN_ID):
                        id_from_bytes(span.parent_span_id, 8, "parentSpanId")
                    if not service:
                        raise SpanRejected("missing_field", "resource attribute service.name is missing")
                    kind = KINDS.get(span.kind, "internal")
                    raw_name = span.name
                    name = names.get(raw_name)
                    if name is None:
                        name = names[raw_name] = text(raw_name, "span name") or "(unnamed)"
                    topic = topic_of(attributes)
                    spans.append(
                        SpanRecord(  # positional: see record.SPAN_RECORD_FIELDS
                            trace_id,
                            span_id,
                            parent_id,
                            service,
                            _server_instance(host, attributes) if kind == "server" and not instance_id else instance,
                            kind,
                            name,
                            protocol_of(attributes),
                            start_us,
                            duration_us,
                            status_code_of(attributes),
                            span.status.code == STATUS_ERROR,
                            text(peer_of(attributes), "peer") if kind in ("client", "producer") else "",
                            text(topic, "topic") if topic else "",
                            kept,
                            wire_format,
                        )
                    )
                except SpanRejected as span_rejected:
                    rejected.append(span_rejected)


def _attributes(items: RepeatedCompositeFieldContainer[KeyValue]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A span's attributes as it sent them, which its protocol, peer and topic are read from, and as they
    are stored (record.bounded_attributes): most often the same dict.

    Converted and tested in one loop: the attributes of almost every span are text, integers and
    booleans, as short as they are plain, and are kept as they are. The test is the one of
    bounded_attributes, narrowed by the type protobuf gives each value: when it passes, bounded_attributes
    would return the dict unchanged, and when it does not, bounded_attributes decides.
    """
    attributes = {}
    as_they_are = len(items) <= MAX_ATTRIBUTES
    for item in items:
        key = item.key
        value = item.value
        which = value.WhichOneof("value")
        if which == "string_value":
            value = value.string_value
            if len(value) > MAX_ATTRIBUTE_VALUE_CHARS or "\x00" in value or not value.isascii():
                as_they_are = False
        elif which == "int_value":
            value = value.int_value
        elif which == "bool_value":
            value = value.bool_value
        else:
            value = any_value(value)
            as_they_are = False
        if len(key) > MAX_NAME_CHARS or "\x00" in key or not key.isascii():
            as_they_are = False
        attributes[key] = value
    return attributes, attributes if as_they_are else bounded_attributes(attributes)


def _server_instance(host: Any, attributes: dict[str, Any]) -> str:
    """A SERVER span's instance when its resource has no service.instance.id.

    The SDK sets no host.name by default, but HTTP and gRPC server instrumentations name the address
    they serve on, which is what tells two instances of a service apart.
    """
    host = host or attributes.get("server.address") or attributes.get("net.host.name") or ""
    port = attributes.get("server.port") or attributes.get("net.host.port")
    if host and port:
        return text(f"{host}:{port}", "instance")
    return text(host, "instance")
