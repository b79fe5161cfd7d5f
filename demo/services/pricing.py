"""Pricing: the price of a product, asked by catalog. Weighted 1:1 in the registry; catalog's balancer
disagrees about pricing-2 (see ``demo.system``), which is the skew the balancer page shows."""

import zlib

from flask import jsonify

from demo.services.inventory import SKUS


def build(service):
    @service.app.get("/prices/<sku>")
    def price(sku):
        if sku not in SKUS:
            return jsonify(error="unknown product"), 404
        # A price that stays the same across instances and restarts.
        return {"sku": sku, "cents": 500 + zlib.crc32(sku.encode()) % 9500}
