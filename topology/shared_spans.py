"""Zipkin's shared spans, where one RPC is reported as two spans with one id.

Tracers that "join" a B3 request (Brave, Finagle, py_zipkin) report a call as a CLIENT span from the
caller and a SERVER span, marked ``"shared": true``, from the callee, both with the client's span id.
B3 propagates the client's parent too, so both halves name the same parent (none when the client is a
root, or when the caller sent no parent, as B3's single header may). The spans the server then makes
name the shared id as their parent: the same id as the client half, in another service.

meshscope stores a span per (trace id, span id), so the server half needs an id of its own. The
decoder derives it from the client's (``shared_server_id``) and makes the server half the client's
child; ingestion does the same to a shared server that named no parent once its client half is known
(until then it keeps its id, as the first hop of a trace from outside). This module holds the derived
id, how to recognise a server half by it, and where its callees' spans belong in a tree.
"""

import hashlib
from collections.abc import Mapping
from typing import NamedTuple


def shared_server_id(trace_id: str, client_span_id: str) -> str:
    """The id of the SERVER half of a shared span: derived, so that a redelivered span gets the same one."""
    return hashlib.blake2b(f"{trace_id}/{client_span_id}/shared".encode(), digest_size=8).hexdigest()


def is_shared_server(trace_id: str, span_id: str, parent_id: str, kind: str) -> bool:
    """Whether a stored span is the SERVER half of a shared span, given its id the client's id derived."""
    return kind == "server" and bool(parent_id) and span_id == shared_server_id(trace_id, parent_id)


class Placement(NamedTuple):
    """What placing a span in its trace's tree reads of it."""

    parent_id: str
    kind: str
    service: str
    instance: str


def tree_parents(trace_id: str, spans: Mapping[str, Placement]) -> dict[str, str]:
    """Each span's parent in the trace's tree, by span id.

    A span names its parent, with one exception, which Zipkin's own tree builder (SpanNode.Builder)
    makes too: a span that names a shared id, and runs in the service of that id's SERVER half, was made
    by the server, so it goes under the server half rather than under the client half in the caller's
    service. When the client and the server are one service, the instance decides, as Zipkin's
    endpoint does.

    This is done when a tree is built, not when spans are stored: a child may arrive before or after
    its server half, in another message or batch, and nothing stored would need rewriting when the
    other comes. The rollups need none of it: a call edge is counted from a CLIENT span's own service
    to its SERVER child's, so a server's calls count from the server's service whatever the tree says.
    """
    halves: dict[str, tuple[str, Placement]] = {}  # a shared id -> its server half's id and placement
    for span_id, span in spans.items():
        if is_shared_server(trace_id, span_id, span.parent_id, span.kind):
            halves[span.parent_id] = (span_id, span)
    parents: dict[str, str] = {}
    for span_id, span in spans.items():
        parent_id = span.parent_id
        half = halves.get(parent_id)
        if half is not None and half[0] != span_id and _made_by(span, half[1], spans.get(parent_id)):
            parent_id = half[0]
        parents[span_id] = parent_id
    return parents


def _made_by(child: Placement, server: Placement, client: Placement | None) -> bool:
    """Whether ``child``, which names a shared id, was made by that id's server half rather than its client."""
    if child.service != server.service:
        return False
    if client is not None and client.service == server.service:
        return child.instance == server.instance
    return True
