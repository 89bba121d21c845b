"""billing (Python): POST /charge → span ``charge_card`` (``payment.method``).

A ``declined`` payment method → 402 with the reason. An amount of exactly
666 simulates a failing payment processor: the exception is recorded on
``charge_card`` (status Error) and the answer is 500.
"""

import json
import logging
import uuid

import polytrace
from polytrace.http import Request, respond
from wit_world import exports


log = logging.getLogger(__name__)


class PaymentProcessorError(Exception):
    pass


def charge(payment):
    with polytrace.span("charge_card", {"payment.method": str(payment.get("payment_method", ""))}) as span:
        span.set_attribute("payment.amount", float(payment.get("amount", 0)))
        if payment.get("payment_method") == "declined":
            span.set_attributes({"payment.status": "declined", "payment.decline_reason": "insufficient funds"})
            log.warning("card declined: insufficient funds")
            return 402, {"error": "card declined", "reason": "insufficient funds"}
        if payment.get("amount") == 666:
            log.error("payment processor did not answer in time")
            # Raised inside the span: recorded with its traceback, status Error.
            raise PaymentProcessorError("payment processor unavailable: upstream timed out")
        charge_id = "ch-" + uuid.uuid4().hex[:12]
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
        except ValueError as e:
            status, body = 400, {"error": f"bad payment request: {e}"}
        respond(response_out, status, "application/json", json.dumps(body).encode())
