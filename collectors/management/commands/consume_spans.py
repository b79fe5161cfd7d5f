from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from collectors.kafka_spans import SpanConsumer


class Command(BaseCommand):
    help = "Consumes trace spans from Kafka in the foreground (what the Celery task does, without Celery)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--seconds", type=float, default=None, help="Stop after this long (default: never).")

    def handle(self, *args: Any, seconds: float | None = None, **options: Any) -> None:
        consumer = SpanConsumer()
        try:
            if seconds is None:
                while True:
                    consumer.run(60)
            else:
                consumer.run(seconds)
        finally:
            consumer.close()
