"""OTLP JSON straight into protobuf, for the requests as OTLP exporters write them.

json_format.ParseDict reads any protobuf JSON, so it is generic Python: a descriptor lookup, a path
string and several calls for every field of every span. Profiled on benchmarks.decode's messages, it
took 75 % of the time to decode OTLP JSON, which went about 10 times slower than the same spans in
protobuf.

``request_from_json`` does the same for the fields of a trace export request only, in the forms
OTLP's JSON encoding gives them (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding):
camelCase names, 64-bit integers as decimal strings or numbers, enums as numbers or names, hex ids.
It sets every field it reads, so the message it makes is the one ParseDict makes of the same document
(with the ids turned from hex as ``otlp.parse_json`` turns them). Anything else in the document (a
field it does not know, such as a snake_case name or one newer than these, a null, a value of another
form, an enum number it does not define, array, map and bytes values, links, text with a surrogate)
makes it give up on the whole message, which then goes through ParseDict as before, with ParseDict's
rejections. So a request decodes to the same spans and the same rejections either way: this way, 4.5
times as many spans a second on benchmarks.decode's messages.
"""

import binascii
import math
from typing import Any, cast

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from collectors.formats.record import SURROGATES

REQUEST = frozenset(("resourceSpans",))
RESOURCE_SPANS = frozenset(("resource", "scopeSpans", "schemaUrl"))
RESOURCE = frozenset(("attributes", "droppedAttributesCount"))
SCOPE_SPANS = frozenset(("scope", "spans", "schemaUrl"))
SCOPE = frozenset(("name", "version", "attributes", "droppedAttributesCount"))
SPAN = frozenset(
    (
        "traceId",
        "spanId",
        "traceState",
        "parentSpanId",
        "flags",
        "name",
        "kind",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "attributes",
        "droppedAttributesCount",
        "events",
        "droppedEventsCount",
        "links",
        "droppedLinksCount",
        "status",
    )
)
EVENT = frozenset(("timeUnixNano", "name", "attributes", "droppedAttributesCount"))
STATUS = frozenset(("message", "code"))
UINT32 = 2**32 - 1
UINT64 = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_DIGITS = 20  # of a 64-bit integer; a longer string goes to ParseDict, which says why it is refused
# An enum by number, or by name as protobuf's own JSON writes it (json_format.MessageToDict, and so the
# tests' and the benchmark's payloads): OTLP asks for numbers, ParseDict reads both.
SPAN_KINDS = {value.name: value.number for value in Span.SpanKind.DESCRIPTOR.values}
STATUS_CODES = {value.name: value.number for value in Status.StatusCode.DESCRIPTOR.values}


class Indirect(Exception):
    """The document holds something that is left to json_format.ParseDict."""


def request_from_json(document: dict[str, Any]) -> ExportTraceServiceRequest | None:
    """The request the document holds, or None when it is to be read by ParseDict."""
    request = ExportTraceServiceRequest()
    try:
        _fields(document, REQUEST)
        for resource_spans in _array(document["resourceSpans"]):
            _resource_spans(resource_spans, request.resource_spans.add())
    except Indirect:
        return None
    return request


def _resource_spans(document: Any, message: ResourceSpans) -> None:
    get = _fields(document, RESOURCE_SPANS).get
    if (resource := get("resource")) is not None:
        get_resource = _fields(resource, RESOURCE).get
        message.resource.SetInParent()
        if (attributes := get_resource("attributes")) is not None:
            _attributes(attributes, message.resource.attributes)
        if (dropped := get_resource("droppedAttributesCount")) is not None:
            message.resource.dropped_attributes_count = _integer(dropped, 0, UINT32)
    if (schema_url := get("schemaUrl")) is not None:
        message.schema_url = _text(schema_url)
    for scope_spans_document in _array(get("scopeSpans", [])):
        get_scope_spans = _fields(scope_spans_document, SCOPE_SPANS).get
        scope_spans = message.scope_spans.add()
        if (scope := get_scope_spans("scope")) is not None:
            get_scope = _fields(scope, SCOPE).get
            scope_spans.scope.SetInParent()
            if (name := get_scope("name")) is not None:
                scope_spans.scope.name = _text(name)
            if (version := get_scope("version")) is not None:
                scope_spans.scope.version = _text(version)
            if (attributes := get_scope("attributes")) is not None:
                _attributes(attributes, scope_spans.scope.attributes)
            if (dropped := get_scope("droppedAttributesCount")) is not None:
                scope_spans.scope.dropped_attributes_count = _integer(dropped, 0, UINT32)
        if (schema_url := get_scope_spans("schemaUrl")) is not None:
            scope_spans.schema_url = _text(schema_url)
        for span in _array(get_scope_spans("spans", [])):
            _span(span, scope_spans.spans.add())


def _span(document: Any, span: Span) -> None:
    get = _fields(document, SPAN).get
    if (trace_id := get("traceId")) is not None:
        span.trace_id = _id(trace_id)
    if (span_id := get("spanId")) is not None:
        span.span_id = _id(span_id)
    if (parent_span_id := get("parentSpanId")) is not None:
        span.parent_span_id = _id(parent_span_id)
    if (trace_state := get("traceState")) is not None:
        span.trace_state = _text(trace_state)
    if (flags := get("flags")) is not None:
        span.flags = _integer(flags, 0, UINT32)
    if (name := get("name")) is not None:
        span.name = _text(name)
    if (kind := get("kind")) is not None:
        span.kind = cast("Span.SpanKind.ValueType", _enum(kind, SPAN_KINDS))
    if (start := get("startTimeUnixNano")) is not None:
        span.start_time_unix_nano = _integer(start, 0, UINT64)
    if (end := get("endTimeUnixNano")) is not None:
        span.end_time_unix_nano = _integer(end, 0, UINT64)
    if (attributes := get("attributes")) is not None:
        _attributes(attributes, span.attributes)
    if (dropped := get("droppedAttributesCount")) is not None:
        span.dropped_attributes_count = _integer(dropped, 0, UINT32)
    if (events := get("events")) is not None:
        for event_document in _array(events):
            get_event = _fields(event_document, EVENT).get
            event = span.events.add()
            if (time := get_event("timeUnixNano")) is not None:
                event.time_unix_nano = _integer(time, 0, UINT64)
            if (name := get_event("name")) is not None:
                event.name = _text(name)
            if (attributes := get_event("attributes")) is not None:
                _attributes(attributes, event.attributes)
            if (dropped := get_event("droppedAttributesCount")) is not None:
                event.dropped_attributes_count = _integer(dropped, 0, UINT32)
    if (dropped := get("droppedEventsCount")) is not None:
        span.dropped_events_count = _integer(dropped, 0, UINT32)
    if (links := get("links")) is not None and _array(links):
        raise Indirect  # their ids are base64 to ParseDict, not hex: rare enough to leave to it
    if (dropped := get("droppedLinksCount")) is not None:
        span.dropped_links_count = _integer(dropped, 0, UINT32)
    if (status := get("status")) is not None:
        get_status = _fields(status, STATUS).get
        span.status.SetInParent()
        if (message := get_status("message")) is not None:
            span.status.message = _text(message)
        if (code := get_status("code")) is not None:
            span.status.code = cast("Status.StatusCode.ValueType", _enum(code, STATUS_CODES))


def _attributes(document: Any, attributes: RepeatedCompositeFieldContainer[KeyValue]) -> None:
    for item in _array(document):
        # What _fields tests, for the two fields of a KeyValue: as many fields as were found, none null.
        if item.__class__ is not dict:
            raise Indirect
        key = item.get("key")
        value = item.get("value")
        if len(item) != (key is not None) + (value is not None):
            raise Indirect
        key_value = attributes.add()
        if key is not None:
            key_value.key = _text(key)
        if value is not None:
            _any_value(value, key_value.value)


def _any_value(document: Any, value: AnyValue) -> None:
    if document.__class__ is not dict or len(document) > 1:
        raise Indirect  # two members of the oneof, which ParseDict refuses, or another field beside one
    if (text := document.get("stringValue")) is not None:
        value.string_value = _text(text)
    elif (number := document.get("intValue")) is not None:
        value.int_value = _integer(number, INT64_MIN, INT64_MAX)
    elif (boolean := document.get("boolValue")) is not None:
        if boolean.__class__ is not bool:
            raise Indirect
        value.bool_value = boolean
    elif (double := document.get("doubleValue")) is not None:
        value.double_value = _double(double)
    elif document:
        raise Indirect  # an array, map or bytes value, or a null
    else:
        value.SetInParent()  # {}: a value that holds nothing, as ParseDict leaves it


def _fields(document: Any, names: frozenset[str]) -> dict[str, Any]:
    """The document, when it is an object of these fields and holds no null (ParseDict clears a field
    for a null, but is left to do so)."""
    if document.__class__ is not dict or not names.issuperset(document) or None in document.values():
        raise Indirect
    return document


def _array(document: Any) -> list[Any]:
    if document.__class__ is not list:
        raise Indirect
    return document


def _text(document: Any) -> str:
    # ParseDict refuses an unpaired surrogate, and protobuf any surrogate: none is taken here.
    if document.__class__ is not str or (not document.isascii() and SURROGATES.search(document)):
        raise Indirect
    return document


def _integer(document: Any, lowest: int, highest: int) -> int:
    """A number, or a string of decimal digits (OTLP writes 64-bit integers as strings), in range."""
    if document.__class__ is str:
        digits = document[1:] if document.startswith("-") else document
        if not (len(digits) <= MAX_DIGITS and digits.isdigit() and digits.isascii()):
            raise Indirect
        document = int(document)
    elif document.__class__ is not int:  # a bool is not an int here, nor is 5.0
        raise Indirect
    if not lowest <= document <= highest:
        raise Indirect
    return document


def _enum(document: Any, values: dict[str, int]) -> int:
    """One of the enum's values, by name or by number (other numbers are left to ParseDict)."""
    if document.__class__ is str and document in values:
        return values[document]
    if document.__class__ is not int or document not in values.values():
        raise Indirect
    return document


def _double(document: Any) -> float:
    if document.__class__ is float and math.isfinite(document):
        return document
    if document.__class__ is int:
        try:
            return float(document)
        except OverflowError:
            raise Indirect from None
    raise Indirect


def _id(document: Any) -> bytes:
    """As otlp.parse_json turns an id for ParseDict: hex to bytes, and anything else to none."""
    try:
        return binascii.unhexlify(document)
    except (binascii.Error, TypeError, ValueError):
        return b""
