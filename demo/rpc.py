"""gRPC for the one edge that speaks it, orders → payments.

Messages are JSON bytes and the handlers are registered by name, which stands in for generated stubs:
no protobuf compiler is needed. Trace context travels in the call's metadata, as gRPC
instrumentations carry it.
"""

import functools
import json
from concurrent.futures import ThreadPoolExecutor

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from demo.web import UpstreamError

RPC_SERVICE = "demo.Payments"


def dumps(value):
    return json.dumps(value).encode()


def loads(data):
    return json.loads(data)


def attributes(method, address, port):
    return {
        "rpc.system": "grpc",
        "rpc.service": RPC_SERVICE,
        "rpc.method": method,
        "server.address": address,
        "server.port": port,
    }


def serve(service, methods):
    """Serves ``methods`` (name → function of the request dict) on the instance's port; returns the stop."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(traced(service, name, function), loads, dumps)
        for name, function in methods.items()
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RPC_SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{service.instance.port}")
    server.start()
    return lambda: server.stop(grace=2).wait()


def traced(service, method, function):
    """Wraps a handler in a SERVER span, child of the caller's CLIENT span, with injected faults."""

    def handle(request, rpc_context):
        with service.tracer.start_as_current_span(
            f"{RPC_SERVICE}/{method}",
            context=propagate.extract(dict(rpc_context.invocation_metadata())),
            kind=SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
            attributes=attributes(method, "127.0.0.1", service.instance.port),
        ) as span:
            if service.inject_fault(span):
                span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.UNAVAILABLE.value[0])
                span.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
                rpc_context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
            response = function(request)
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
            return response

    return handle


@functools.cache
def channel(address, port):
    return grpc.insecure_channel(f"{address}:{port}")


def call(service, target, method, request):
    """Calls ``method`` on one instance of ``target`` in a CLIENT span; raises UpstreamError."""
    endpoint = service.pick(target)
    stub = channel(endpoint.address, endpoint.port).unary_unary(f"/{RPC_SERVICE}/{method}", dumps, loads)
    with service.tracer.start_as_current_span(
        f"{RPC_SERVICE}/{method}",
        kind=SpanKind.CLIENT,
        record_exception=False,
        set_status_on_exception=False,
        attributes={"peer.service": target, **attributes(method, endpoint.address, endpoint.port)},
    ) as span:
        metadata: dict[str, str] = {}
        propagate.inject(metadata)
        try:
            response = stub(request, metadata=tuple(metadata.items()), timeout=5)
        except grpc.RpcError as error:
            span.set_attribute("rpc.grpc.status_code", error.code().value[0])
            span.set_status(Status(StatusCode.ERROR, error.code().name))
            raise UpstreamError(f"{target} answered {error.code().name}") from error
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
        return response
