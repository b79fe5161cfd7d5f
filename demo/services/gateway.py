"""The API gateway: the entry point, whose SERVER spans are the roots of every trace.

Each route forwards to one instance of a backend, chosen by that backend's balancing policy.
"""

from flask import jsonify, request

from demo.web import UpstreamError


def build(service):
    def forward(backend, path, route):
        try:
            response = service.call(backend, request.method, path, route=route, json=request.get_json(silent=True))
        except UpstreamError as error:
            return jsonify(error=str(error)), 502
        return response.content, response.status_code, {"Content-Type": "application/json"}

    @service.app.get("/api/users/<int:user_id>")
    def user(user_id):
        return forward("users", f"/users/{user_id}", "/users/{user_id}")

    @service.app.get("/api/products/<sku>")
    def product(sku):
        return forward("catalog", f"/products/{sku}", "/products/{sku}")

    @service.app.route("/api/orders", methods=["GET", "POST"])
    def orders():
        return forward("orders", "/orders", "/orders")
