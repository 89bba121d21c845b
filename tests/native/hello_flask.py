"""The native Python equivalent of examples/hello-python, for the
side-by-side benchmark: a Flask app traced by the official OpenTelemetry
SDK and its Flask instrumentation, run under gunicorn.

``GET /hello/...?name=X`` → the instrumentation's SERVER span with a child
span ``hello.work`` carrying one attribute of each type and a
``checkpoint`` event; answers the same JSON as the guest (``next`` is always
null here). Spans are batched (BatchSpanProcessor defaults, OTEL_BSP_*) and
sent over OTLP/HTTP protobuf to OTEL_EXPORTER_OTLP_ENDPOINT (``/v1/traces``);
service.name comes from OTEL_SERVICE_NAME.

gunicorn forks its workers, and a BatchSpanProcessor's export thread does
not survive a fork, so the SDK is set up in each worker by
``setup_tracing()``, which gunicorn_conf.py calls from its post_fork hook:

    cd tests/native && PORT=8081 OTEL_SERVICE_NAME=hello-flask \\
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
      ../../.tools/native-venv/bin/gunicorn -c gunicorn_conf.py \\
        -w 2 -b 127.0.0.1:$PORT hello_flask:app

``python hello_flask.py`` serves it with Flask's development server instead
(one process, for trying it out).
"""

import json
import os

from flask import Flask, Response, request
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SERVICE = os.environ.get("OTEL_SERVICE_NAME", "hello-flask")

app = Flask(__name__)
# A proxy until setup_tracing() installs the SDK's provider, then that
# provider's tracer.
tracer = trace.get_tracer(__name__)
_provider = None


def setup_tracing():
    """Install the SDK in this process (once) and instrument the app."""
    global _provider
    if _provider is not None:
        return _provider
    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    # the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT and adds /v1/traces.
    _provider = TracerProvider(resource=Resource.create())
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    FlaskInstrumentor().instrument_app(app)
    return _provider


def shutdown_tracing():
    """Export what is still queued (gunicorn's worker_exit hook)."""
    if _provider is not None:
        _provider.shutdown()


@app.get("/hello")
@app.get("/hello/<path:rest>")
def hello(rest=None):
    attributes = {
        "hello.name": request.args.get("name", "world"),
        "hello.polite": True,
        "hello.count": 3,
        "hello.ratio": 0.5,
        "hello.tags": ["a", "b"],
        "hello.flags": [True, False],
        "hello.numbers": [1, 2, 3],
        "hello.weights": [0.25, 0.75],
    }
    with tracer.start_as_current_span("hello.work", attributes=attributes) as span:
        span.add_event("checkpoint", {"step": 1})
    body = {"service": SERVICE, "language": "python", "message": "hello", "next": None}
    return Response(json.dumps(body), mimetype="application/json")


if __name__ == "__main__":
    setup_tracing()
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "0")))
