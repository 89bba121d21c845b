"""The conformance scenario (tests/conformance/SPEC.md) written against the
OpenTelemetry API (the opentelemetry-api package): the host is its SDK.
Its trees, metrics and logs must equal the SDK version's (python/app.py)."""

import json
import logging
import time

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode
from polytrace.http import HttpError, Request, respond, send
from wit_world import exports

tracer = trace.get_tracer("conformance")
meter = metrics.get_meter("conformance")
requests_run = meter.create_counter("conformance.requests", unit="{request}", description="Conformance scenario runs")
latency = meter.create_histogram(
    "conformance.latency", unit="ms", description="Conformance latency", explicit_bucket_boundaries_advisory=[1, 10, 100]
)
log = logging.getLogger("conformance")


class ConformanceError(Exception):
    pass


# Spans the scenario leaves open on purpose; held so nothing releases them.
_unended = []


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        request = Request(request)
        if request.path.endswith("/span-cost"):
            return span_cost(int(request.query.get("n", "1000")), response_out)
        attributes = {
            "conformance.string": "text",
            "conformance.bool": True,
            "conformance.int": 42,
            "conformance.float": 2.5,
            "conformance.strings": ["a", "b"],
            "conformance.bools": [True, False],
            "conformance.ints": [1, 2, 3],
            "conformance.floats": [0.5, 1.5],
        }
        status = None
        with tracer.start_as_current_span("conformance.work", attributes=attributes) as work:
            if not isinstance(work, trace.Span):
                raise TypeError(f"the API's span is not an opentelemetry.trace.Span: {type(work)}")
            work.add_event("checkpoint", {"conformance.step": 1})
            outcome = {"conformance.outcome": "ok"}
            requests_run.add(1, outcome)
            latency.record(42.5, outcome)
            log.warning("conformance log", extra={"conformance.step": 2})
            log.info("conformance native log")
            url = request.query.get("next")
            if url:
                try:
                    status, _ = send("GET", url)
                except HttpError as e:
                    work.record_exception(e)
        work.set_attribute("conformance.after_end", True)

        # A span is itself a context manager that ends it (the API's Span).
        with tracer.start_span("conformance.fail") as fail:
            try:
                raise ConformanceError("conformance failure")
            except ConformanceError as e:
                fail.record_exception(e)
            fail.set_status(Status(StatusCode.ERROR, "conformance failure"))

        _unended.append(tracer.start_span("conformance.unended"))

        body = {"language": "python-otel", "next_status": status}
        respond(response_out, 200, "application/json", json.dumps(body).encode())


def span_cost(n, response_out):
    """The span-cost scenario through the API: n spans of five attributes."""
    started = time.perf_counter_ns()
    for i in range(n):
        tracer.start_span(
            "bench.span",
            attributes={
                "bench.string": "value",
                "bench.bool": True,
                "bench.int": i,
                "bench.float": 0.5,
                "bench.route": "/checkout",
            },
        ).end()
    elapsed = time.perf_counter_ns() - started
    body = {"language": "python-otel", "n": n, "elapsed_ns": elapsed}
    respond(response_out, 200, "application/json", json.dumps(body).encode())
