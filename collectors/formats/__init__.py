"""Decoding of trace messages from Kafka: one message in, spans and rejected spans out."""

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
    decoded = Decoded()
    if message_format == "zipkin_json":
        zipkin.records(zipkin.parse(payload), max_age_seconds, decoded.spans, decoded.rejected)
    elif message_format == "otlp_json":
        otlp.records(otlp.parse_json(payload), message_format, max_age_seconds, decoded.spans, decoded.rejected)
    elif message_format == "otlp_proto":
        otlp.records(otlp.parse_protobuf(payload), message_format, max_age_seconds, decoded.spans, decoded.rejected)
    else:
        raise SpanRejected("unknown_format", f"no decoder for format {message_format!r}")
    return decoded
