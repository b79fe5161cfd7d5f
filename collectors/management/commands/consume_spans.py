import signal
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from collectors.kafka_spans import SpanConsumer


class Command(BaseCommand):
    help = "Consumes trace spans from Kafka in the foreground (what the Celery task does, without Celery)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--seconds", type=float, default=None, help="Stop after this long (default: never).")

    def handle(self, *args: Any, seconds: float | None = None, **options: Any) -> None:
        # docker stop, systemd and Kubernetes stop a process with SIGTERM: it stops as on Ctrl-C, leaving
        # the group, so that its partitions go to another member now rather than after the session
        # timeout. A batch being stored is rolled back, and counted by the partition's next owner.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        consumer = SpanConsumer()
        try:
            if seconds is None:
                while True:
                    consumer.run(60)
            else:
                consumer.run(seconds)
        except KeyboardInterrupt:
            self.stdout.write("Span consumer stopping: it leaves the group.")
        finally:
            consumer.close()
