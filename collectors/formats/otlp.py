"""OTLP trace export requests (``ExportTraceServiceRequest``), in protobuf or in OTLP's JSON encoding.

OTLP JSON differs from protobuf's canonical JSON in one way that matters: trace and span ids are hex,
not base64 (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding). They are turned into
bytes first, so both encodings go through the same protobuf walk.
"""

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collectors.formats.record import (
    SpanRejected,
    bounded_attributes,
    check_attribute_count,
    check_times,
    id_from_bytes,
    peer_of,
    protocol_of,
    status_code_of,
    text,
    topic_of,
)
from topology.span_record import SpanRecord

KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_ERROR = 2
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


def records(request: ExportTraceServiceRequest, max_age_seconds: float) -> Iterator[SpanRecord | SpanRejected]:
    """Yields a SpanRecord, or a SpanRejected for a span that fails its checks, for every span."""
    for resource_spans in request.resource_spans:
        resource = {item.key: any_value(item.value) for item in resource_spans.resource.attributes}
        service = resource.get("service.name")
        # Worked out once for all the resource's spans when the resource names its instance.
        instance = _resource_instance(resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    yield _record(span, resource, service, instance, max_age_seconds)
                except SpanRejected as rejected:
                    yield rejected


def _record(
    span: Span, resource: dict[str, Any], service: Any, instance: str | None, max_age_seconds: float
) -> SpanRecord:
    # Counted before conversion so that a hostile span costs little to refuse.
    check_attribute_count(len(span.attributes))
    attributes = {item.key: any_value(item.value) for item in span.attributes}
    start_us = span.start_time_unix_nano // 1000
    duration_us = max(span.end_time_unix_nano - span.start_time_unix_nano, 0) // 1000
    check_times(start_us, duration_us, max_age_seconds)
    kind = KINDS.get(span.kind, "internal")
    parent_span_id = span.parent_span_id
    return SpanRecord(
        trace_id=id_from_bytes(span.trace_id, 16, "traceId"),
        span_id=id_from_bytes(span.span_id, 8, "spanId"),
        parent_id=id_from_bytes(parent_span_id, 8, "parentSpanId") if parent_span_id else "",
        service=text(service, "resource attribute service.name", required=True),
        instance=instance if instance is not None else _instance(resource, attributes, kind),
        kind=kind,
        name=text(span.name, "span name") or "(unnamed)",
        protocol=protocol_of(attributes),
        start_us=start_us,
        duration_us=duration_us,
        status_code=status_code_of(attributes),
        error=span.status.code == STATUS_ERROR,
        peer=text(peer_of(attributes), "peer") if kind in ("client", "producer") else "",
        topic=text(topic_of(attributes), "topic"),
        attributes=bounded_attributes(attributes),
    )


def _resource_instance(resource: dict[str, Any]) -> str | None:
    """The instance every span of the resource belongs to, or None when it depends on the span."""
    instance_id = resource.get("service.instance.id")
    return text(instance_id, "service.instance.id") if instance_id else None


def _instance(resource: dict[str, Any], attributes: dict[str, Any], kind: str) -> str:
    host = resource.get("host.name") or ""
    port = None
    if kind == "server":
        # The SDK sets no host.name by default, but HTTP and gRPC server instrumentations name the
        # address they serve on, which is what tells two instances of a service apart.
        host = host or attributes.get("server.address") or attributes.get("net.host.name") or ""
        port = attributes.get("server.port") or attributes.get("net.host.port")
    if host and port:
        return text(f"{host}:{port}", "instance")
    return text(host, "instance")
