"""orders: a Flask service written as a Flask team writes it, with the
OpenTelemetry API. Nothing in it is polytrace's: the host supplies the SDK,
the SERVER span (named after the Flask route) and the export.

    POST /api/orders             {"items": [...]} → 201 {"id": ...}; no items → 400
    GET  /api/orders/<order_id>  → 200
    GET  /api/orders/<order_id>/fail → an exception in the view: Flask's 500
    GET  /api/trace              → the W3C headers propagate.inject writes
"""

import hashlib
import logging

from flask import Flask, jsonify, request
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Status, StatusCode

app = Flask(__name__)
tracer = trace.get_tracer(__name__)
meter = metrics.get_meter(__name__)
orders_created = meter.create_counter("orders.created", unit="{order}", description="Orders accepted")
order_size = meter.create_histogram("order.items", unit="{item}", description="Items per order")
log = logging.getLogger(__name__)


@app.post("/api/orders")
def create_order():
    order = request.get_json(silent=True) or {}
    items = order.get("items") or []
    with tracer.start_as_current_span("validate_order") as span:
        span.set_attribute("order.items", len(items))
        if not items:
            span.set_status(Status(StatusCode.ERROR, "an order needs items"))
            return jsonify(error="an order needs items"), 400
    order_id = "o-" + hashlib.sha256(",".join(map(str, items)).encode()).hexdigest()[:8]
    trace.get_current_span().set_attribute("order.id", order_id)
    orders_created.add(1, {"order.status": "accepted"})
    order_size.record(len(items))
    log.info("order %s created with %d items", order_id, len(items))
    return jsonify(id=order_id, items=len(items)), 201


@app.get("/api/orders/<order_id>")
def get_order(order_id):
    with tracer.start_as_current_span("load_order", attributes={"order.id": order_id}):
        with tracer.start_as_current_span("load_order.items") as inner:
            inner.add_event("cache.miss", {"cache.key": order_id})
    return jsonify(id=order_id, status="accepted")


@app.get("/api/orders/<order_id>/fail")
def fail_order(order_id):
    raise RuntimeError(f"order {order_id} cannot be charged")


@app.get("/api/trace")
def inject():
    with tracer.start_as_current_span("inject") as span:
        carrier = {}
        propagate.inject(carrier)
    # A span's context outlives the span.
    return jsonify(headers=carrier, span_id=format(span.get_span_context().span_id, "016x"))
