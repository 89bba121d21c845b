"""data-processor (Python): GET /data/:name → span ``process-data-internal``
(``data.input_name``); work that grows with the name's length. A name
containing ``error`` raises: the exception is recorded on the span (status
Error) and the answer is 500. Otherwise the answer is the upper-cased name,
also set as ``data.result``.
"""

import json
import time
from urllib.parse import unquote

import polytrace
from polytrace.http import Request, respond
from wit_world import exports

WORK_PER_CHARACTER = 0.005  # seconds


class ProcessingError(Exception):
    pass


def process(name):
    with polytrace.span("process-data-internal", {"data.input_name": name}) as span:
        time.sleep(WORK_PER_CHARACTER * len(name))
        if "error" in name:
            raise ProcessingError(f"cannot process `{name}`: the input asks for an error")
        result = name.upper()
        span.set_attribute("data.result", result)
        return result


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        request = Request(request)
        prefix = "/data/"
        if request.method != "GET" or not request.path.startswith(prefix) or len(request.path) == len(prefix):
            return respond(response_out, 404, "application/json", b'{"error":"GET /data/:name"}')
        name = unquote(request.path[len(prefix):])
        try:
            status, body = 200, {"name": name, "result": process(name)}
        except ProcessingError as e:
            status, body = 500, {"name": name, "error": str(e)}
        respond(response_out, status, "application/json", json.dumps(body).encode())
