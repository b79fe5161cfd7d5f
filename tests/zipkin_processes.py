"""Traces recorded by py_zipkin itself, as services that join B3 calls report them: one py_zipkin tracer
per service process, each process sending one message per request it served, as a Zipkin reporter does,
and a process's clock set off from the others' when a test wants clock skew."""

import json
import time
from contextlib import contextmanager

from py_zipkin.encoding import Encoding
from py_zipkin.request_helpers import create_http_headers, extract_zipkin_attrs_from_headers
from py_zipkin.storage import Tracer, get_default_tracer, set_default_tracer
from py_zipkin.zipkin import zipkin_client_span, zipkin_server_span, zipkin_span

OUTSIDE_TRACE_ID = "5af7183fb1d4cf5f"
OUTSIDE_SPAN_ID = "6b221d5bc9e6496c"


class Process:
    """One service's process: py_zipkin's tracer of its own, a reporter that sends one message per
    request it served, and a clock that is ``clock_offset_ms`` off the others."""

    def __init__(self, service, port, clock_offset_ms=0):
        self.service = service
        self.port = port
        self.offset_us = int(clock_offset_ms * 1000)
        self.tracer = Tracer()
        self.messages = []

    def report(self, message):
        spans = json.loads(message)
        for span in spans:
            span["timestamp"] += self.offset_us
        self.messages.append(json.dumps(spans).encode())

    @contextmanager
    def running(self):
        previous = get_default_tracer()
        set_default_tracer(self.tracer)
        try:
            yield
        finally:
            set_default_tracer(previous)

    def _options(self):
        return {"transport_handler": self.report, "encoding": Encoding.V2_JSON, "port": self.port}

    @contextmanager
    def serve(self, name, headers):
        """A request from a caller whose B3 headers py_zipkin joins: the span shares the caller's id."""
        with (
            self.running(),
            zipkin_server_span(
                service_name=self.service,
                span_name=name,
                zipkin_attrs=extract_zipkin_attrs_from_headers(headers),
                **self._options(),
            ),
        ):
            yield

    @contextmanager
    def root(self, name, kind="server"):
        """A trace that starts here: a SERVER span for a request from no traced caller, or a CLIENT span
        (a job calling out)."""
        span = zipkin_client_span if kind == "client" else zipkin_server_span
        with self.running(), span(service_name=self.service, span_name=name, sample_rate=100.0, **self._options()):
            yield create_http_headers() if kind == "client" else None

    @contextmanager
    def call(self, name):
        """A CLIENT span; the headers it sends carry its own id, for the callee to join."""
        with self.running(), zipkin_client_span(service_name=self.service, span_name=name):
            yield create_http_headers()

    @contextmanager
    def calls(self, callee, name):
        """This process calls ``callee``'s ``name``, which joins the call: a CLIENT span here, a SERVER
        span there, with one id."""
        with self.call(name) as headers, callee.serve(name, headers):
            yield

    @contextmanager
    def local(self, name):
        with self.running(), zipkin_span(service_name=self.service, span_name=name):
            yield


def pause(ms=2):
    time.sleep(ms / 1000)


def outside_headers():
    """B3 headers from an edge proxy that makes ids but reports no span: a trace id and a span id, no parent."""
    return {"X-B3-TraceId": OUTSIDE_TRACE_ID, "X-B3-SpanId": OUTSIDE_SPAN_ID, "X-B3-Sampled": "1"}


def checkout(skewed=None):
    """The issue's 16-span trace: gateway joins the outside caller's id (a shared root), and every call
    below it is joined too. ``skewed`` maps a service to its clock offset in ms."""
    clocks = skewed or {}
    ports = {"gateway": 8080, "orders": 8081, "payments": 8082, "bank": 8083, "inventory": 8084, "users": 8085}
    p = {name: Process(name, port, clocks.get(name, 0)) for name, port in {**ports, "recommendations": 8086}.items()}
    with p["gateway"].serve("get /api/checkout", outside_headers()):
        with p["gateway"].local("authenticate"):
            pause()
        with p["gateway"].calls(p["orders"], "get /orders"):
            with p["orders"].local("load cart"):
                pause()
            with p["orders"].calls(p["payments"], "post /charge"):
                pause()
                with p["payments"].calls(p["bank"], "post /authorize"):
                    pause(3)
            with p["orders"].calls(p["inventory"], "post /reserve"):
                pause()
        with p["gateway"].calls(p["users"], "get /users/me"):
            pause()
            with p["users"].local("lookup"):
                pause()
        with p["gateway"].calls(p["recommendations"], "get /recs"):
            pause()
    return p


def messages_of(processes):
    return [message for process in processes for message in process.messages]
