"""Payments: charges an order. The demo's gRPC service, called by orders."""

import uuid

from demo import rpc


def build(service):
    def charge(request):
        return {"payment_id": uuid.uuid4().hex[:12], "order_id": request["order_id"], "status": "captured"}

    service.start_server = lambda: rpc.serve(service, {"Charge": charge})
