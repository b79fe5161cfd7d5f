"""What every sample service shares: a Flask app whose requests are SERVER spans, calls to other
services as CLIENT spans through discovery and balancing, injected faults, and a clean shutdown.

Spans are made by hand with the OTel SDK rather than by auto-instrumentation packages, so the demo
needs few dependencies and every attribute the dashboard reads is visible here.
"""

import dataclasses
import logging
import os
import random
import re
import signal
import threading
import time
from typing import cast

import requests
from flask import Flask, g, jsonify, request
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from werkzeug.serving import make_server

from demo import discovery, system, telemetry
from demo.balancer import Balancer

log = logging.getLogger(__name__)
# Werkzeug's "<int:order_id>" becomes the "{order_id}" of http.route.
ROUTE_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class UpstreamError(Exception):
    """A call to another service failed: it answered 5xx, or did not answer."""


class Service:
    def __init__(self, instance_id):
        self.instance = system.instance(instance_id)
        self.spec = self.instance.service
        self.producer = telemetry.producer(os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        self.tracer = telemetry.setup(self.instance, self.producer)
        self.discovery = discovery.discovery(self.spec.stale_lists)
        self.weight_overrides = dict(self.spec.weight_overrides)
        self.balancer = Balancer()
        self.http = requests.Session()
        self.stopping = threading.Event()
        # Threads that run beside the web server (a Kafka consumer): they watch ``stopping`` and are
        # joined before spans are flushed, so their last spans are not lost.
        self.workers = []
        self.app = Flask(self.spec.name)
        self.app.before_request(self._start_server_span)
        self.app.after_request(self._finish_server_span)
        self.app.teardown_request(self._end_server_span)
        self.app.add_url_rule("/health", "health", lambda: {"status": "passing", "instance": self.instance.id})

    # --- SERVER spans ---------------------------------------------------------------------------

    def _start_server_span(self):
        if request.path == "/health":  # health checks are not traffic
            return None
        route = ROUTE_PARAMETER.sub(r"{\1}", request.url_rule.rule) if request.url_rule else request.path
        span = self.tracer.start_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.path,
                "server.address": "127.0.0.1",
                "server.port": self.instance.port,
                "network.protocol.name": "http",
            },
        )
        g.span = span
        g.context_token = context.attach(trace.set_span_in_context(span))
        if self.inject_fault(span):
            return jsonify(error="injected failure"), 500
        return None

    def inject_fault(self, span):
        """Some requests are slow and some fail, on purpose, so the dashboard has something to find.
        True when this one must fail."""
        if random.random() < self.spec.slow_rate:
            span.set_attribute("demo.injected", "slow")
            time.sleep(self.spec.slow_ms / 1000)
        if random.random() < self.spec.error_rate:
            span.set_attribute("demo.injected", "error")
            return True
        return False

    def _finish_server_span(self, response):
        span = g.get("span")
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
        return response

    def _end_server_span(self, error):
        span = g.pop("span", None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()
        context.detach(g.pop("context_token"))

    # --- CLIENT spans ---------------------------------------------------------------------------

    def pick(self, service):
        """One instance of ``service``, chosen by its balancing policy, with this caller's own weights."""
        endpoints = [
            dataclasses.replace(endpoint, weight=self.weight_overrides[endpoint.id])
            if endpoint.id in self.weight_overrides
            else endpoint
            for endpoint in self.discovery.endpoints(service)
        ]
        if not endpoints:
            raise UpstreamError(f"no instance of {service} is available")
        return self.balancer.choose(service, endpoints[0].policy, endpoints)

    def call(self, service, method, path, route=None, json=None):
        """Calls one instance of ``service`` over HTTP; raises UpstreamError."""
        endpoint = self.pick(service)
        with self.tracer.start_as_current_span(
            f"{method} {route or path}",
            kind=SpanKind.CLIENT,
            record_exception=False,
            set_status_on_exception=False,
            attributes={
                "peer.service": service,
                "server.address": endpoint.address,
                "server.port": endpoint.port,
                "http.request.method": method,
                "url.full": endpoint.url + path,
            },
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)  # W3C traceparent: the callee's SERVER span is our child
            try:
                response = self.http.request(method, endpoint.url + path, json=json, headers=headers, timeout=5)
            except requests.RequestException as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.set_attribute("error.type", type(error).__name__)
                raise UpstreamError(f"{service} did not answer: {error}") from error
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
                raise UpstreamError(f"{service} answered {response.status_code}")
            return response

    # --- lifecycle ------------------------------------------------------------------------------

    def start_server(self):
        """Serves the Flask app on the instance's port; returns what stops it. A gRPC service replaces it."""
        server = make_server("127.0.0.1", self.instance.port, self.app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.shutdown

    def run(self):
        """Serves until SIGTERM or SIGINT, registered in Consul (if any) while it serves."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stopping.set())
        stop_server = self.start_server()
        for worker in self.workers:
            worker.start()
        discovery.register(self.instance)
        log.info("%s serving on port %d", self.instance.id, self.instance.port)
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            discovery.deregister(self.instance)
            stop_server()
            for worker in self.workers:
                worker.join(timeout=10)
            # telemetry.setup installed the SDK's provider, which flushes the last spans on shutdown.
            cast(TracerProvider, trace.get_tracer_provider()).shutdown()
            self.producer.close(timeout=5)
