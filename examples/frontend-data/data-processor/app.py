"""data-processor, written as a Flask team writes it, with the OpenTelemetry
API: GET /data/<name> → a ``process-data-internal`` span
(``data.input_name``) around work that grows with the name's length. A name
containing ``error`` raises: the span records the exception and its status
is Error, and the answer is 500 with the error as JSON. Otherwise the answer
is the upper-cased name, also set as ``data.result``.
"""

import time

from flask import Flask, jsonify
from opentelemetry import trace

WORK_PER_CHARACTER = 0.005  # seconds

app = Flask(__name__)
tracer = trace.get_tracer(__name__)


class ProcessingError(Exception):
    pass


@app.get("/data/<name>")
def process(name):
    with tracer.start_as_current_span("process-data-internal", attributes={"data.input_name": name}) as span:
        time.sleep(WORK_PER_CHARACTER * len(name))
        if "error" in name:
            raise ProcessingError(f"cannot process `{name}`: the input asks for an error")
        result = name.upper()
        span.set_attribute("data.result", result)
    return jsonify(name=name, result=result)


@app.errorhandler(ProcessingError)
def processing_failed(error):
    return jsonify(error=str(error)), 500
