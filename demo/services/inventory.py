"""Inventory: stock per product. Its spans go out as Zipkin JSON v2, the others' as OTLP."""

import threading

from flask import jsonify, request

SKUS = [f"sku-{n}" for n in range(1, 21)]
RESTOCK_TO = 1000


def build(service):
    stock = dict.fromkeys(SKUS, RESTOCK_TO)
    lock = threading.Lock()

    @service.app.get("/stock/<sku>")
    def level(sku):
        if sku not in stock:
            return jsonify(error="unknown product"), 404
        return {"sku": sku, "available": stock[sku]}

    @service.app.post("/reservations")
    def reserve():
        sku, quantity = request.json["sku"], int(request.json["quantity"])
        if sku not in stock:
            return jsonify(error="unknown product"), 404
        with lock:
            # The demo runs for hours: a product that runs out is restocked rather than sold out.
            if stock[sku] < quantity:
                stock[sku] = RESTOCK_TO
            stock[sku] -= quantity
        return {"sku": sku, "reserved": quantity}, 201
