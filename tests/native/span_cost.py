"""Per-operation cost of the native OpenTelemetry Python SDK, for comparison
with the polytrace Python guest (tests/benches/span_cost.rs runs both).

The same loops as the span-cost, metric-cost and log-cost scenarios of
tests/conformance/SPEC.md. Spans and log records go through batch
processors to exporters that discard, as a production setup would feed an
OTLP exporter; the counter aggregates in the SDK, read by nobody.

    python span_cost.py N [span|metric|log]  →  {"n": N, "elapsed_ns": ...}

`span-export`: the same spans, exported through an exporter that encodes
each batch as OTLP protobuf (opentelemetry-exporter-otlp-proto-common, what
the OTLP/HTTP exporter sends) and discards the bytes; reports the process's
CPU time over the loop and the final flush, every thread counted:
{"n": N, "cpu_ns": ...}.
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


BENCH_ATTRIBUTES = {"bench.route": "/checkout", "bench.status": "ok"}


def run_metric(counter, n):
    started = time.perf_counter_ns()
    for _ in range(n):
        counter.add(1, BENCH_ATTRIBUTES)
    return time.perf_counter_ns() - started


def run_log(logger, n):
    from opentelemetry._logs import LogRecord, SeverityNumber

    started = time.perf_counter_ns()
    for _ in range(n):
        logger.emit(
            LogRecord(
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body="bench log",
                attributes=BENCH_ATTRIBUTES,
            )
        )
    return time.perf_counter_ns() - started


def metric(n):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    counter = provider.get_meter("bench").create_counter("bench.counter", unit="{item}")
    run_metric(counter, min(n, 1000))  # warm up
    elapsed = run_metric(counter, n)
    provider.shutdown()
    return elapsed


def log(n):
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult

    class DiscardLogs(LogRecordExporter):
        def export(self, batch):
            return LogRecordExportResult.SUCCESS

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(DiscardLogs(), max_queue_size=n + 1))
    logger = provider.get_logger("bench")
    run_log(logger, min(n, 1000))  # warm up
    elapsed = run_log(logger, n)
    provider.shutdown()
    return elapsed


def span_export(n):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    class EncodeOtlp(SpanExporter):
        spans = 0

        def export(self, spans):
            body = encode_spans(spans).SerializeToString()
            assert len(body) > 100 * len(spans)
            EncodeOtlp.spans += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EncodeOtlp(), max_queue_size=n + 1))
    tracer = provider.get_tracer("bench")
    run(tracer, min(n, 1000))  # warm up
    assert provider.force_flush()
    before = time.process_time_ns()
    run(tracer, n)
    assert provider.force_flush()
    cpu = time.process_time_ns() - before
    provider.shutdown()
    assert EncodeOtlp.spans == min(n, 1000) + n, "every span encoded"
    return cpu


def main():
    n = int(sys.argv[1])
    scenario = sys.argv[2] if len(sys.argv) > 2 else "span"
    if scenario == "span-export":
        print(json.dumps({"n": n, "cpu_ns": span_export(n)}))
        return
    if scenario != "span":
        elapsed = metric(n) if scenario == "metric" else log(n)
        print(json.dumps({"n": n, "elapsed_ns": elapsed}))
        return
    provider = TracerProvider()
    # A queue that holds the whole run: no span is dropped for being fast.
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=n + 1))
    tracer = provider.get_tracer("bench")
    run(tracer, min(n, 1000))  # warm up
    elapsed = run(tracer, n)
    provider.shutdown()
    print(json.dumps({"n": n, "elapsed_ns": elapsed}))


main()
