"""Decoding of trace messages from Kafka: one message in, spans and rejected spans out."""

from collections.abc import Iterator
from dataclasses import dataclass, field

from collectors.formats import otlp, zipkin
from collectors.formats.record import SpanRejected
from topology.span_record import WIRE_FORMATS, SpanRecord

FORMATS = (*WIRE_FORMATS, "auto")

__all__ = ["FORMATS", "Decoded", "SpanRejected", "decode", "detect_format"]


@dataclass
class Decoded:
    spans: list[SpanRecord] = field(default_factory=list)
    rejected: list[SpanRejected] = field(default_factory=list)  # one per span that failed its checks


def detect_format(payload: bytes) -> str:
    head = payload[:64].lstrip()
    if head.startswith(b"["):
        return "zipkin_json"
    if head.startswith(b"{"):
        return "otlp_json"
    return "otlp_proto"


def decode(payload: bytes | None, message_format: str, max_bytes: int, max_age_seconds: float) -> Decoded:
    """Raises SpanRejected when the message as a whole is unusable."""
    if payload is None or not payload.strip():
        raise SpanRejected("wrong_shape", "an empty message")
    if len(payload) > max_bytes:
        raise SpanRejected("too_large", f"{len(payload)} bytes (at most {max_bytes})")
    if message_format == "auto":
        message_format = detect_format(payload)
    items: Iterator[SpanRecord | SpanRejected]
    if message_format == "zipkin_json":
        items = zipkin.records(zipkin.parse(payload), max_age_seconds)
    elif message_format == "otlp_json":
        items = otlp.records(otlp.parse_json(payload), max_age_seconds)
    elif message_format == "otlp_proto":
        items = otlp.records(otlp.parse_protobuf(payload), max_age_seconds)
    else:
        raise SpanRejected("unknown_format", f"no decoder for format {message_format!r}")
    decoded = Decoded()
    for item in items:
        if isinstance(item, SpanRejected):
            decoded.rejected.append(item)
        else:
            item.wire_format = message_format
            decoded.spans.append(item)
    return decoded
