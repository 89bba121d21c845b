"""Per-span cost of the native OpenTelemetry Python SDK, for comparison with
the polytrace Python guest (tests/benches/span_cost.rs runs both).

The same loop as the span-cost scenario of tests/conformance/SPEC.md: start a
span with five attributes, end it. A BatchSpanProcessor feeds an exporter
that discards, as a production setup would feed an OTLP exporter.

    python span_cost.py N  →  {"n": N, "elapsed_ns": ...}
"""

import json
import sys
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def run(tracer, n):
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
    return time.perf_counter_ns() - started


def main():
    n = int(sys.argv[1])
    provider = TracerProvider()
    # A queue that holds the whole run: no span is dropped for being fast.
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=n + 1))
    tracer = provider.get_tracer("bench")
    run(tracer, min(n, 1000))  # warm up
    elapsed = run(tracer, n)
    provider.shutdown()
    print(json.dumps({"n": n, "elapsed_ns": elapsed}))


main()
