"""Catalog: product pages, with the stock level asked of inventory and the price of pricing. Balanced at random."""

from flask import jsonify

from demo.services.inventory import SKUS
from demo.web import UpstreamError


def build(service):
    @service.app.get("/products/<sku>")
    def product(sku):
        if sku not in SKUS:
            return jsonify(error="unknown product"), 404
        try:
            stock = service.call("inventory", "GET", f"/stock/{sku}", route="/stock/{sku}").json()
            price = service.call("pricing", "GET", f"/prices/{sku}", route="/prices/{sku}").json()
        except UpstreamError as error:
            return jsonify(error=str(error)), 502
        return {"sku": sku, "title": f"Product {sku}", "available": stock["available"], "cents": price["cents"]}
