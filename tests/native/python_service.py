"""A native Python service instrumented with the official OpenTelemetry SDK
and its HTTP instrumentations (WSGI for what it serves, urllib for what it
calls): the interop test's caller of a polytrace app.

On any GET it starts span ``native-python.work`` and calls DOWNSTREAM_URL.
Spans go over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT. Prints
``listening on http://ADDR`` once it serves.
"""

import json
import os
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.urllib import URLLibInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "native-python"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
URLLibInstrumentor().instrument()
tracer = trace.get_tracer("native-python")
DOWNSTREAM = os.environ["DOWNSTREAM_URL"]


def app(environ, start_response):
    with tracer.start_as_current_span("native-python.work"):
        with urllib.request.urlopen(DOWNSTREAM, timeout=30) as response:
            status, body = response.status, json.loads(response.read())
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps({"service": "native-python", "downstream_status": status, "downstream": body}).encode()]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server("127.0.0.1", 0, OpenTelemetryMiddleware(app), handler_class=Quiet)
print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
