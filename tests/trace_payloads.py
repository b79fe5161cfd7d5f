"""Span payloads made by the real libraries: the OpenTelemetry SDK with its OTLP encoder, and
py_zipkin's Zipkin JSON v2 encoder. Tests describe traces; these helpers turn them into messages."""

import base64
import json
import time

from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from py_zipkin.encoding import Encoding, create_endpoint, get_encoder
from py_zipkin.encoding._helpers import Span as ZipkinSpan
from py_zipkin.encoding._types import Kind

KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}


class OtelTraces:
    """Records spans through real SDK tracer providers, one per service instance."""

    def __init__(self):
        self.exporter = InMemorySpanExporter()
        self._providers = {}

    def tracer(self, service, instance):
        key = (service, instance)
        if key not in self._providers:
            if instance:
                resource = Resource.create({"service.name": service, "service.instance.id": instance})
            else:
                # Resource.create would add the SDK's random service.instance.id: this is a tracer without one.
                resource = Resource({"service.name": service})
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self._providers[key] = provider
        return self._providers[key].get_tracer("meshscope-tests")

    def span(self, service, instance, name, kind, start_ns, duration_ms, parent=None, attributes=None, error=False):
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer(service, instance).start_span(
            name, context=context, kind=KINDS[kind], attributes=attributes or {}, start_time=start_ns
        )
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start_ns + int(duration_ms * 1_000_000))
        return span

    def finished(self):
        spans = self.exporter.get_finished_spans()
        self.exporter.clear()
        return list(spans)


def otlp_protobuf(spans):
    return encode_spans(spans).SerializeToString()


def otlp_json(spans):
    """OTLP's JSON encoding: protobuf JSON, but with hex trace and span ids."""
    return request_as_otlp_json(encode_spans(spans))


def request_as_otlp_json(request):
    """An ExportTraceServiceRequest in OTLP's JSON encoding."""
    document = json_format.MessageToDict(request)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def zipkin_json(spans):
    """Zipkin JSON v2, from py_zipkin's encoder. ``spans`` are dicts of py_zipkin Span arguments."""
    encoder = get_encoder(Encoding.V2_JSON)
    return encoder.encode_queue([encoder.encode_span(ZipkinSpan(**span)) for span in spans]).encode()


def zipkin_span(
    service,
    name,
    kind,
    trace_id,
    span_id,
    parent_id=None,
    start_s=None,
    duration_s=0.01,
    port=8080,
    remote_service=None,
    tags=None,
    shared=False,
    host="10.0.0.1",
):
    return {
        "trace_id": trace_id,
        "name": name,
        "parent_id": parent_id,
        "span_id": span_id,
        "kind": {
            "server": Kind.SERVER,
            "client": Kind.CLIENT,
            "producer": Kind.PRODUCER,
            "consumer": Kind.CONSUMER,
            "internal": Kind.LOCAL,
        }[kind],
        "timestamp": start_s if start_s is not None else time.time(),
        "duration": duration_s,
        "local_endpoint": create_endpoint(port=port, service_name=service, host=host),
        "remote_endpoint": create_endpoint(service_name=remote_service, host="10.0.0.2", port=80, use_defaults=False)
        if remote_service
        else None,
        "tags": tags or {},
        "shared": shared,
    }


def now_ns():
    return time.time_ns()
