"""hello-python: the same behaviour as hello-rust, with the Python SDK.

``GET /hello?next=URL`` → span ``hello.work`` with one attribute of each type
and a ``checkpoint`` event; when ``next`` is given, an outgoing request to it
(the host makes the CLIENT span and propagates the trace).
"""

import json

import polytrace
from polytrace.http import HttpError, Request, respond, send
from wit_world import exports


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        request = Request(request)
        attributes = {
            "hello.name": request.query.get("name", "world"),
            "hello.polite": True,
            "hello.count": 3,
            "hello.ratio": 0.5,
            "hello.tags": ["a", "b"],
            "hello.flags": [True, False],
            "hello.numbers": [1, 2, 3],
            "hello.weights": [0.25, 0.75],
        }
        next_call = None
        with polytrace.span("hello.work", attributes=attributes) as span:
            span.add_event("checkpoint", {"step": 1})
            url = request.query.get("next")
            if url:
                try:
                    status, _ = send("GET", url)
                    next_call = {"url": url, "status": status}
                except HttpError as e:
                    span.record_exception(e)
                    next_call = {"url": url, "error": str(e)}
        body = {"service": "hello-python", "language": "python", "message": "hello", "next": next_call}
        respond(response_out, 200, "application/json", json.dumps(body).encode())
