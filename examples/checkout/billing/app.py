"""billing (Python): POST /charge → span ``charge_card`` (``payment.method``).

Charges are kept in the ``billing`` SQL database the manifest grants (an
SQLite file by default, PostgreSQL when CHECKOUT_BILLING_DB names one; the
host creates the tables from ``schema.sql`` at start). A charge is written
in one transaction: the ``charges`` row and the customer's running total.
The host traces every statement (CLIENT spans under ``charge_card``).

A ``declined`` payment method → 402 with the reason (the decline is kept as
a charge row too). An amount of exactly 666 simulates a payment processor
that fails after the charge row was written: the exception is recorded on
``charge_card`` (status Error), the transaction is rolled back, and the
answer is 500. The database failing → 503.
"""

import json
import logging
import uuid

import polytrace
from polytrace import dbapi
from polytrace.http import Request, respond
from wit_world import exports


log = logging.getLogger(__name__)
db = dbapi.connect("billing")  # opens at the first statement


class PaymentProcessorError(Exception):
    pass


INSERT_CHARGE = (
    "INSERT INTO charges (id, transaction_id, user_id, amount_cents, payment_method, status) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
ADD_TO_TOTAL = (
    "INSERT INTO customer_totals (user_id, charged_cents, charges) VALUES (?, ?, 1) "
    "ON CONFLICT (user_id) DO UPDATE SET charged_cents = customer_totals.charged_cents + excluded.charged_cents, "
    "charges = customer_totals.charges + 1"
)


def charge(payment):
    with polytrace.span("charge_card", {"payment.method": str(payment.get("payment_method", ""))}) as span:
        amount = float(payment.get("amount", 0))
        span.set_attribute("payment.amount", amount)
        charge_id = "ch-" + uuid.uuid4().hex[:12]
        row = (
            charge_id,
            str(payment.get("transaction_id", "")),
            str(payment.get("user_id", "")),
            round(amount * 100),
            str(payment.get("payment_method", "")),
        )
        if payment.get("payment_method") == "declined":
            with db:
                db.cursor().execute(INSERT_CHARGE, (*row, "declined"))
            span.set_attributes({"payment.status": "declined", "payment.decline_reason": "insufficient funds"})
            log.warning("card declined: insufficient funds")
            return 402, {"error": "card declined", "reason": "insufficient funds"}
        with db:  # one transaction: committed, or rolled back on an exception
            cur = db.cursor()
            cur.execute(INSERT_CHARGE, (*row, "charged"))
            cur.execute(ADD_TO_TOTAL, (row[2], row[3]))
            if payment.get("amount") == 666:
                log.error("payment processor did not answer in time")
                # Raised inside the span: recorded with its traceback, status
                # Error; the charge row is rolled back.
                raise PaymentProcessorError("payment processor unavailable: upstream timed out")
        span.set_attributes({"payment.status": "charged", "payment.charge_id": charge_id})
        return 200, {"charge_id": charge_id}


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        request = Request(request)
        if request.method != "POST" or request.path != "/charge":
            return respond(response_out, 404, "application/json", b'{"error":"POST /charge"}')
        try:
            status, body = charge(json.loads(request.body or b"{}"))
        except PaymentProcessorError as e:
            # A log record with the exception, in the request's trace.
            log.exception("charge failed")
            status, body = 500, {"error": str(e)}
        except dbapi.Error as e:
            log.exception("billing database failed")
            status, body = 503, {"error": f"billing database {e.kind}"}
        except ValueError as e:
            status, body = 400, {"error": f"bad payment request: {e}"}
        respond(response_out, status, "application/json", json.dumps(body).encode())
