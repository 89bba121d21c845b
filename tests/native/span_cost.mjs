// Per-span cost of the native OpenTelemetry JavaScript SDK (@opentelemetry/sdk-trace) on Node, for
// comparison with the polytrace JavaScript guest (tests/benches/span_cost.rs
// runs both). The same loop as the span-cost scenario of
// tests/conformance/SPEC.md; a BatchSpanProcessor feeds an exporter that
// discards.
//
//   node span_cost.mjs N  →  {"n": N, "elapsed_ns": ...}
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';

const discard = {
  export(spans, done) {
    done({ code: 0 });
  },
  shutdown() {
    return Promise.resolve();
  },
};

function run(tracer, n) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    tracer
      .startSpan('bench.span', {
        attributes: {
          'bench.string': 'value',
          'bench.bool': true,
          'bench.int': i,
          'bench.float': 0.5,
          'bench.route': '/checkout',
        },
      })
      .end();
  }
  return process.hrtime.bigint() - started;
}

const n = Number(process.argv[2]);
// A queue that holds the whole run: no span is dropped for being fast.
const provider = new TracerProvider({
  spanProcessors: [new BatchSpanProcessor({ exporter: discard, maxQueueSize: n + 1, maxExportBatchSize: 512 })],
});
const tracer = provider.getTracer('bench');
run(tracer, Math.min(n, 1000)); // warm up
const elapsed = run(tracer, n);
await provider.shutdown();
console.log(JSON.stringify({ n, elapsed_ns: Number(elapsed) }));
