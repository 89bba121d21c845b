"""The native twin of a Flask component: the component's own app.py, run by
Flask with the official OpenTelemetry SDK set up as a Flask team sets it up.
These setup lines are exactly what the polytrace component does without
(tests/tests/twins.rs runs both sides and compares their traces):

    cd tests/native && APP_DIR=examples/flask-orders OTEL_SERVICE_NAME=orders \\
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
      ../../.tools/native-venv/bin/python flask_otel.py

APP_DIR is the component's directory (absolute, or relative to the
repository). It serves on PORT (default: a free port) with Flask's
development server and prints ``listening on URL`` first; gunicorn serves
``flask_otel:app`` the same way. Spans and metrics go over OTLP/HTTP
protobuf to OTEL_EXPORTER_OTLP_ENDPOINT.
"""

import os
import sys

# ---- the OpenTelemetry SDK setup: what polytrace supplies instead ----------
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

resource = Resource.create()
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(tracer_provider)
metrics.set_meter_provider(
    MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
)
# ---------------------------------------------------------------------------

repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(repo, os.environ["APP_DIR"]))
from app import app  # noqa: E402  (the component's own code, unchanged)

FlaskInstrumentor().instrument_app(app)  # setup too: polytrace makes the SERVER span

if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "0")), app, threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
