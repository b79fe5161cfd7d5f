"""The span as ingestion takes it: what every wire format decodes to (``collectors.formats``), and what
``topology.ingestion.store_spans`` stores and counts. The domain owns the type; the decoders fill it."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    instance: str
    kind: str
    name: str
    protocol: str
    start_us: int
    duration_us: int
    status_code: str = ""
    error: bool = False
    peer: str = ""
    topic: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    # The wire format it arrived in (one of WIRE_FORMATS): what ingestion counts new spans by.
    wire_format: str = ""
    # A Zipkin shared SERVER span that named no parent and so kept the id it shares with its CLIENT half
    # (topology.shared_spans): storage gives it an id of its own once that client half is known.
    shares_client_id: bool = False


WIRE_FORMATS = ("zipkin_json", "otlp_proto", "otlp_json")
