"""Decoding alone: ``collectors.formats.decode`` on the same messages in each wire format, no Kafka, no database.

The messages are ``benchmarks.ingest``'s: ten five-span traces (50 spans) recorded by the OpenTelemetry
SDK and serialised by its OTLP encoder, each copy with fresh trace ids. The same messages are given in
OTLP JSON (the encoder's message as protobuf JSON, with hex ids, as ``tests/trace_payloads.otlp_json``
writes it) and in Zipkin JSON v2 (the same spans through py_zipkin's encoder, attributes as tags).
Prints (never asserts) the median and best spans per second of each format over ``--rounds`` rounds,
per second of CPU time of this process (time.process_time), not of the clock: on this shared 2-core
machine the wall clock also counts the time other processes had the core, which varied a run's rate
2-fold between runs a few milliseconds apart.

``--compare-with REF`` also decodes with the decoders as they were at a git ref: collectors/formats at
REF is copied into a package of its own in a temporary directory, its imports of itself renamed, and
each round runs the two one after the other, in turns (old first in one round, new first in the next),
so that a noisy machine slows both alike. It prints each format's ratio new/old: the median of the
rounds' ratios, each of two runs a few milliseconds apart, which a burst of load on a shared machine
skews less than it skews either median. The old decoders fill today's ``topology.span_record.SpanRecord``.
``--profile`` prints cProfile's busiest functions of today's decoders for each format.

    SECRET_KEY=x .venv/bin/python -m benchmarks.decode --compare-with 0bc85d2
"""

import argparse
import cProfile
import gc
import importlib
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")

import django

django.setup()

from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

import collectors.formats  # noqa: E402
from benchmarks.ingest import SPANS_PER_MESSAGE, messages  # noqa: E402
from collectors.formats.otlp import KINDS  # noqa: E402
from tests.trace_payloads import request_as_otlp_json, zipkin_json, zipkin_span  # noqa: E402

MAX_BYTES = 10 * 1024 * 1024
MAX_AGE_SECONDS = 24 * 3600
FORMATS = ("otlp_proto", "otlp_json", "zipkin_json")
ROOT = Path(__file__).resolve().parent.parent


def otlp_json(payload):
    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    return request_as_otlp_json(request)


def zipkin(payload):
    """The message's spans as py_zipkin would send them: one local endpoint per instance, tags as text."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {item.key: item.value.string_value for item in resource_spans.resource.attributes}
        instance = int(resource["service.instance.id"].rsplit("-", 1)[1])
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                tags = {item.key: str(json_format.MessageToDict(item.value).popitem()[1]) for item in span.attributes}
                spans.append(
                    zipkin_span(
                        resource["service.name"],
                        span.name,
                        KINDS[span.kind],
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        start_s=span.start_time_unix_nano / 1e9,
                        duration_s=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e9,
                        remote_service=tags.get("peer.service"),
                        tags=tags,
                        host=f"10.0.0.{instance + 1}",
                    )
                )
    return zipkin_json(spans)


def payloads(count):
    proto = list(messages(count))
    return {"otlp_proto": proto, "otlp_json": [otlp_json(p) for p in proto], "zipkin_json": [zipkin(p) for p in proto]}


def decoders_at(ref, directory):
    """``collectors.formats`` as it was at ``ref``, imported as a package of its own from ``directory``."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    name = f"formats_at_{sha}"
    package = Path(directory) / name
    package.mkdir()
    files = subprocess.run(
        ["git", "ls-tree", "--name-only", sha, "collectors/formats/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in files:
        if path.endswith(".py"):
            source = subprocess.run(
                ["git", "show", f"{sha}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout
            (package / Path(path).name).write_text(source.replace("collectors.formats", name))
    sys.path.insert(0, str(directory))
    return importlib.import_module(name)


def spans_per_second(decoders, message_format, batch):
    decode = decoders.decode
    spans = 0
    gc.collect()  # not the garbage of the run before: each run pays for the collections its own objects cause
    started = time.process_time()
    for payload in batch:
        spans += len(decode(payload, message_format, MAX_BYTES, MAX_AGE_SECONDS).spans)
    elapsed = time.process_time() - started
    if spans != len(batch) * SPANS_PER_MESSAGE:
        raise RuntimeError(f"{message_format}: {spans} spans decoded of {len(batch) * SPANS_PER_MESSAGE}")
    return spans / elapsed


def profile(message_format, batch):
    profiler = cProfile.Profile()
    profiler.enable()
    for payload in batch:
        collectors.formats.decode(payload, message_format, MAX_BYTES, MAX_AGE_SECONDS)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    lines = out.getvalue().strip().splitlines()
    return "\n".join(line.replace(str(ROOT) + "/", "") for line in lines if line.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100, help="messages of 50 spans a round decodes, per format")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--compare-with", metavar="REF", help="a git ref whose decoders to run beside today's")
    parser.add_argument("--profile", action="store_true", help="print cProfile's busiest functions per format")
    args = parser.parse_args()
    batches = payloads(args.messages)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as directory:
        contenders = {"new": collectors.formats}
        if args.compare_with:
            contenders["old"] = decoders_at(args.compare_with, directory)
        rates = {(name, f): [] for name in contenders for f in FORMATS}
        for round_ in range(args.rounds):
            order = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
            for message_format in FORMATS:
                for name in order:
                    rates[name, message_format].append(
                        spans_per_second(contenders[name], message_format, batches[message_format])
                    )
    load_after = os.getloadavg()
    spans = args.messages * SPANS_PER_MESSAGE
    print(f"spans         {spans:,} per round and format, in {args.messages} messages of {SPANS_PER_MESSAGE}")
    print(f"rounds        {args.rounds}; median and best spans per CPU second of one process")
    print(f"load average  {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end ({os.cpu_count()} cores)")
    if args.compare_with:
        print(f"old           collectors/formats at {args.compare_with} ({contenders['old'].__name__})")
    for message_format in FORMATS:
        medians = {name: statistics.median(rates[name, message_format]) for name in contenders}
        figures = "; ".join(
            f"{name} {medians[name]:>8,.0f} (best {max(rates[name, message_format]):,.0f})" for name in contenders
        )
        ratio = ""
        if "old" in medians:
            ratios = [new / old for new, old in zip(rates["new", message_format], rates["old", message_format])]
            ratio = f"; new/old {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{message_format:<13} {figures}{ratio}")
    if args.profile:
        for message_format in FORMATS:
            print(f"\ncProfile, today's decoders, {message_format}:")
            print(profile(message_format, batches[message_format]))


if __name__ == "__main__":
    main()
