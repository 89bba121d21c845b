"""The native twin of examples/flask-orders: the same app.py, run by Flask
with the official OpenTelemetry SDK set up as a Flask team sets it up.
These setup lines are exactly what the polytrace component does without
(tests/tests/frameworks.rs runs both and compares their traces):

    cd tests/native && OTEL_SERVICE_NAME=orders \\
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
      ../../.tools/native-venv/bin/python flask_orders_otel.py

It serves on PORT (default: a free port) with Flask's development server
and prints ``listening on URL`` first. Spans and metrics go over OTLP/HTTP
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "flask-orders"))
from app import app  # noqa: E402  (the component's own code, unchanged)

FlaskInstrumentor().instrument_app(app)  # setup too: polytrace makes the SERVER span

if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "0")), app)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
