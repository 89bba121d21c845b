"""api-gateway (Python): the entry point of the checkout flow.

POST /checkout with a JSON order → span ``checkout_flow`` (``user.id``) →
span ``validate_order`` (``order.items``) → fraud-service ``/verify`` → if
approved, session-service ``/sessions/{id}`` → billing ``/charge`` → the
order saved in the ``orders`` SQL database the manifest grants (an SQLite
file by default, PostgreSQL when CHECKOUT_ORDERS_DB names one).
Other components are called by their id; the host makes the CLIENT spans,
and a CLIENT span for every statement.
"""

import json
import logging
import uuid

import polytrace
from polytrace import dbapi, metrics
from polytrace.http import HttpError, Request, respond, send
from wit_world import exports


log = logging.getLogger(__name__)
db = dbapi.connect("orders")  # opens at the first statement
db.autocommit = True  # an order is one INSERT: no transaction around it

# `orders.created`'s status attribute, by the checkout's HTTP status.
OUTCOMES = {200: "approved", 400: "invalid", 402: "declined", 403: "rejected", 404: "rejected"}


class InvalidOrder(Exception):
    pass


def validate(order):
    """The order contract; raises InvalidOrder with what is wrong."""
    if not isinstance(order, dict):
        raise InvalidOrder("the order must be a JSON object")
    for key, kind in (("user_id", str), ("session_id", str), ("payment_method", str), ("items", list)):
        if not isinstance(order.get(key), kind):
            raise InvalidOrder(f"`{key}` must be a {kind.__name__}")
    amount = order.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
        raise InvalidOrder("`amount` must be a positive number")
    for item in order["items"]:
        if not isinstance(item, dict) or not isinstance(item.get("sku"), str) or not isinstance(item.get("qty"), int):
            raise InvalidOrder("each item needs a `sku` (string) and a `qty` (integer)")
    if not order["items"]:
        raise InvalidOrder("the order has no items")


def call(method, url, payload=None):
    """Call another service; returns (status, decoded JSON body or {})."""
    status, body = send(method, url, json.dumps(payload).encode() if payload is not None else b"")
    try:
        return status, json.loads(body) if body else {}
    except ValueError:
        return status, {"error": body.decode(errors="replace")}


class Answer(Exception):
    """Ends the flow early with an HTTP status and body."""

    def __init__(self, status, body):
        super().__init__(status)
        self.status, self.body = status, body


def step(flow, transaction_id, service, what, method, url, payload=None, outcome="rejected"):
    """Call one downstream service and return its JSON body. A 5xx fails
    the flow (its span gets status Error, the checkout answers 500); any
    other non-200 ends the checkout with that status as a business outcome."""
    status, body = call(method, url, payload)
    if status >= 500:
        flow.set_status_error(f"{service} failed with {status}")
        raise Answer(500, {"error": f"{what} failed", "transaction_id": transaction_id})
    if status != 200:
        flow.set_attribute("checkout.outcome", outcome)
        answer = {"error": body.get("error", outcome), "transaction_id": transaction_id}
        if body.get("reason"):
            answer["reason"] = body["reason"]
        raise Answer(status, answer)
    return body


def checkout(order):
    """The flow; returns (HTTP status, response body)."""
    with polytrace.span("checkout_flow", {"user.id": str(order.get("user_id", ""))}) as flow:
        with polytrace.span("validate_order", {"order.items": len(order.get("items") or [])}):
            validate(order)  # InvalidOrder is recorded on validate_order and re-raised
        transaction_id = "txn-" + uuid.uuid4().hex[:12]
        flow.set_attribute("transaction.id", transaction_id)

        try:
            step(flow, transaction_id, "fraud-service", "fraud check", "POST", "http://fraud-service/verify",
                 {
                     "transaction_id": transaction_id,
                     "amount": order["amount"],
                     "session_id": order["session_id"],
                     "user_id": order["user_id"],
                 })
            step(flow, transaction_id, "session-service", "session lookup", "GET",
                 f"http://session-service/sessions/{order['session_id']}")
            charge = step(flow, transaction_id, "billing", "billing", "POST", "http://billing/charge",
                          {
                              "transaction_id": transaction_id,
                              "user_id": order["user_id"],
                              "amount": order["amount"],
                              "payment_method": order["payment_method"],
                          },
                          outcome="declined")
        except Answer as answer:
            # Inside the span: an answer is an outcome, not an exception of the flow.
            return answer.status, answer.body

        order_id = "ord-" + uuid.uuid4().hex[:12]
        try:
            db.cursor().execute(
                "INSERT INTO orders (id, transaction_id, user_id, session_id, amount_cents, items, charge_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (order_id, transaction_id, order["user_id"], order["session_id"],
                 round(order["amount"] * 100), len(order["items"]), str(charge.get("charge_id"))),
            )
        except dbapi.Error as e:
            # The database's error is on the statement's span; the flow fails.
            flow.set_status_error(f"the order could not be saved: {e.kind}")
            return 503, {"error": "the order could not be saved", "transaction_id": transaction_id}
        flow.set_attributes({"checkout.outcome": "approved", "order.id": order_id})
        return 200, {"order_id": order_id, "transaction_id": transaction_id, "charge_id": charge.get("charge_id")}


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        request = Request(request)
        if request.method != "POST" or request.path != "/checkout":
            return respond(response_out, 404, "application/json", b'{"error":"POST /checkout"}')
        order = None
        try:
            order = json.loads(request.body or b"null")
            status, body = checkout(order)
        except (ValueError, InvalidOrder) as e:
            status, body = 400, {"error": str(e)}
        except HttpError as e:
            status, body = 502, {"error": str(e)}
        outcome = OUTCOMES.get(status, "failed")
        method = order.get("payment_method") if isinstance(order, dict) else None
        metrics.counter("orders.created", "Checkouts the gateway processed, by outcome", "{order}").add(
            1, {"status": outcome, "payment_method": method if isinstance(method, str) else "unknown"}
        )
        if status >= 500:
            log.error("checkout failed with %d: %s", status, body.get("error"))
        else:
            log.info("checkout %s", outcome)
        respond(response_out, status, "application/json", json.dumps(body).encode())
