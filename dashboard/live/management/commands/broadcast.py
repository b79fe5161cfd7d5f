"""``manage.py broadcast``: the live layer's process, which computes the live views and pushes their deltas.

Run one beside the web process (several are safe: they share the work through Redis). Without it the
pages still load their snapshots, but nothing changes on them until a reload.
"""

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from dashboard.live.broadcast import Broadcaster


class Command(BaseCommand):
    help = "Computes the live views that writers marked changed and sends their deltas to open pages."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write("Broadcasting live views; Ctrl-C stops.")
        Broadcaster().run(stop)
