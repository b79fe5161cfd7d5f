"""Runs one instance of a sample service: ``python -m demo.services orders-2``."""

import importlib
import logging
import sys

from demo.web import Service


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    service = Service(sys.argv[1])
    importlib.import_module(f"demo.services.{service.spec.name}").build(service)
    service.run()


if __name__ == "__main__":
    main()
