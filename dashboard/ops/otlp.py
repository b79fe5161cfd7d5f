"""``POST /v1/traces``: an OTLP/HTTP receiver that appends what tracers send to the Kafka span topic.

It follows the OTLP/HTTP specification (https://opentelemetry.io/docs/specs/otlp/#otlphttp): binary
protobuf or JSON ``ExportTraceServiceRequest`` bodies, optionally gzip-compressed, answered with an
``ExportTraceServiceResponse`` in the request's encoding. The body is validated with the span
consumer's own decoders, then appended as it arrived (decompressed) to the first topic of
TRACE_TOPICS whose format reads that encoding (``otlp_proto`` or ``otlp_json``, else ``auto``),
keyed by the trace id of its first span so that a trace's requests share a partition. The answer comes
only once every in-sync replica has the message (acks=all): a 200 means the spans will be counted.

Off unless OTLP_TOKEN is set (404), and then only for that bearer token (401).
"""

import logging
import threading
import zlib
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collectors.formats import SpanRejected, decode
from dashboard.ops.metrics import bearer_token, token_matches, unauthorized

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ENCODINGS = {PROTOBUF: "otlp_proto", JSON: "otlp_json"}
# How long a request waits for the broker to acknowledge, and for a first connection to it. The
# OpenTelemetry SDK's exporter gives up after 10 s.
ACK_TIMEOUT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 5
# google.rpc.Code INVALID_ARGUMENT and UNAVAILABLE, as the OTLP/HTTP failure bodies carry them.
INVALID_ARGUMENT = 3
UNAVAILABLE = 14

_producers: dict[tuple[Any, ...], KafkaProducer] = {}
_producers_lock = threading.Lock()


class Refused(Exception):
    """A request answered with ``status`` and a google.rpc.Status saying ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def topic_for(message_format: str) -> str | None:
    """The first trace topic whose format reads ``message_format``; then the first ``auto`` one."""
    for wanted in (message_format, "auto"):
        for topic, topic_format in settings.TRACE_TOPICS.items():
            if topic_format == wanted:
                return topic
    return None


def producer() -> KafkaProducer:
    """One producer per process and configuration: connecting for each request would cost more than it."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "client_id": "meshscope-otlp",
        "acks": "all",
        "bootstrap_timeout_ms": int(ACK_TIMEOUT_SECONDS * 1000),
        "max_block_ms": int(ACK_TIMEOUT_SECONDS * 1000),
        # Room for the largest message the span consumer accepts, with Kafka's record overhead.
        "max_request_size": settings.SPAN_MAX_MESSAGE_BYTES + 64 * 1024,
        **settings.KAFKA_SECURITY,
    }
    key = tuple(sorted((name, tuple(value) if isinstance(value, list) else value) for name, value in config.items()))
    with _producers_lock:
        if key not in _producers:
            _producers[key] = KafkaProducer(**config)
        return _producers[key]


def close_producers() -> None:
    """Closes every producer this process made (a test whose broker goes away; a shutdown)."""
    with _producers_lock:
        for made in _producers.values():
            made.close(timeout=ACK_TIMEOUT_SECONDS)
        _producers.clear()


def read_body(request: HttpRequest) -> bytes:
    """The body, decompressed, refused beyond SPAN_MAX_MESSAGE_BYTES before it is all in memory."""
    limit = settings.SPAN_MAX_MESSAGE_BYTES
    too_large = Refused(413, f"The request is larger than SPAN_MAX_MESSAGE_BYTES ({limit} bytes).")
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    # Read the stream, not request.body: DATA_UPLOAD_MAX_MEMORY_SIZE would refuse below our own limit.
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise too_large
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise Refused(415, f"Content-Encoding {encoding!r} is not supported: send gzip or none.")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise Refused(400, f"The body is not valid gzip: {error}") from None
    if len(body) > limit:
        raise too_large
    if not inflater.eof:
        raise Refused(400, "The gzip body is truncated.")
    return body


def encoded(message: Message, content_type: str) -> bytes:
    return message.SerializeToString() if content_type == PROTOBUF else json_format.MessageToJson(message).encode()


def status_response(status: int, message: str, content_type: str) -> HttpResponse:
    code = UNAVAILABLE if status == 503 else INVALID_ARGUMENT
    return HttpResponse(
        encoded(Status(code=code, message=message), content_type), status=status, content_type=content_type
    )


def export(body: bytes, content_type: str) -> ExportTraceServiceResponse:
    message_format = ENCODINGS[content_type]
    topic = topic_for(message_format)
    if topic is None:
        raise Refused(415, f"No topic of TRACE_TOPICS takes {message_format} (or auto).")
    try:
        decoded = decode(body, message_format, settings.SPAN_MAX_MESSAGE_BYTES, settings.SPAN_RETENTION_HOURS * 3600)
    except SpanRejected as rejected:
        raise Refused(413 if rejected.reason == "too_large" else 400, str(rejected)) from None
    key = decoded.spans[0].trace_id.encode() if decoded.spans else None
    try:
        producer().send(topic, value=body, key=key).get(timeout=ACK_TIMEOUT_SECONDS)
    except MessageSizeTooLargeError as error:
        raise Refused(413, f"The broker refuses a message this large: {error}") from None
    except KafkaError as error:
        log.warning("OTLP/HTTP: the span topic %s did not acknowledge: %s", topic, error)
        raise Refused(503, "The span topic is not available; retry later.") from None
    response = ExportTraceServiceResponse()
    if decoded.rejected:
        # They are appended all the same: the span consumer dead-letters them with their reasons.
        response.partial_success.rejected_spans = len(decoded.rejected)
        response.partial_success.error_message = "; ".join(sorted({str(r) for r in decoded.rejected}))[:1000]
    return response


@csrf_exempt
@require_POST
def traces(request: HttpRequest) -> HttpResponse:
    if not settings.OTLP_TOKEN:
        raise Http404("The OTLP/HTTP receiver is off: set OTLP_TOKEN.")
    if not token_matches(bearer_token(request), settings.OTLP_TOKEN):
        return unauthorized("meshscope OTLP")
    content_type = request.content_type
    if content_type not in ENCODINGS:
        return HttpResponse(
            f"Send OTLP as {PROTOBUF} or {JSON}.\n", status=415, content_type="text/plain; charset=utf-8"
        )
    try:
        response = export(read_body(request), content_type)
    except Refused as refused:
        answer = status_response(refused.status, refused.message, content_type)
        if refused.status == 503:
            answer["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return answer
    return HttpResponse(encoded(response, content_type), content_type=content_type)
