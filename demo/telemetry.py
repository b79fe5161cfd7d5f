"""OpenTelemetry for the sample services: spans go to Kafka, as the Collector's Kafka exporter sends them.

Most services send OTLP protobuf (an ExportTraceServiceRequest per message) to ``otlp_spans``; one
sends Zipkin JSON v2 (a JSON list of spans per message) to ``zipkin``. Messages are keyed by trace
id, so a trace's spans stay in one partition, in order.
"""

import logging
from collections import defaultdict

from kafka import KafkaProducer
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import format_trace_id

log = logging.getLogger(__name__)


def by_trace(spans):
    groups = defaultdict(list)
    for span in spans:
        groups[span.context.trace_id].append(span)
    return groups


class KafkaSpanExporter(SpanExporter):
    """Sends one message per trace in the batch; subclasses say how a group of spans is encoded."""

    topic: str | None = None

    def __init__(self, producer):
        self.producer = producer

    def encode(self, spans):
        raise NotImplementedError

    def export(self, spans):
        try:
            for trace_id, group in by_trace(spans).items():
                self.producer.send(self.topic, key=format_trace_id(trace_id).encode(), value=self.encode(group))
            self.producer.flush(timeout=10)
        except Exception:  # a broker hiccup must not take the service down; the batch is lost
            log.exception("could not export %d spans to Kafka", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.producer.flush(timeout=5)


class KafkaOtlpExporter(KafkaSpanExporter):
    topic = "otlp_spans"

    def encode(self, spans):
        return encode_spans(spans).SerializeToString()


class KafkaZipkinExporter(KafkaSpanExporter):
    topic = "zipkin"

    def __init__(self, producer, port):
        super().__init__(producer)
        self.encoder = JsonV2Encoder()
        # Built after the tracer provider is set: NodeEndpoint reads service.name from it.
        self.endpoint = NodeEndpoint(ipv4="127.0.0.1", port=port)

    def encode(self, spans):
        return self.encoder.serialize(spans, self.endpoint).encode()


def producer(bootstrap_servers):
    # One leader ack and no idempotence: a span or event lost to a broker failure is acceptable in a demo,
    # a producer that waits on every replica is not worth its latency here.
    return KafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=20, acks=1, retries=3, enable_idempotence=False)


def setup(instance, kafka_producer):
    """Installs the global tracer provider for this instance and returns its tracer."""
    resource = Resource.create(
        {
            "service.name": instance.service.name,
            "service.instance.id": instance.id,
            "service.namespace": "meshscope-demo",
            "deployment.environment.name": "demo",
        }
    )
    provider = TracerProvider(resource=resource)
    trace.set_tracer_provider(provider)
    exporter: KafkaSpanExporter
    if instance.service.span_format == "zipkin":
        exporter = KafkaZipkinExporter(kafka_producer, instance.port)
    else:
        exporter = KafkaOtlpExporter(kafka_producer)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    return trace.get_tracer("meshscope.demo")
