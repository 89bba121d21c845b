// Per-operation cost of the native OpenTelemetry JavaScript SDK on Node
// (@opentelemetry/sdk-trace, sdk-metrics, sdk-logs), for comparison with the
// polytrace JavaScript guest (tests/benches/span_cost.rs runs both). The same
// loops as the span-cost, metric-cost and log-cost scenarios of
// tests/conformance/SPEC.md; spans and log records go through batch
// processors to exporters that discard; the counter aggregates in the SDK.
//
//   node span_cost.mjs N [span|metric|log]  →  {"n": N, "elapsed_ns": ...}
//
// `span-export`: the same spans, exported through an exporter that encodes
// each batch as OTLP protobuf (@opentelemetry/otlp-transformer, what the
// OTLP/proto exporter sends) and discards the bytes; reports the process's
// CPU time over the loop and the final flush, every thread counted:
// {"n": N, "cpu_ns": ...}.
import { BatchLogRecordProcessor, LoggerProvider } from '@opentelemetry/sdk-logs';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';

const discard = {
  export(spans, done) {
    done({ code: 0 });
  },
  shutdown() {
    return Promise.resolve();
  },
  forceFlush() {
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
const scenario = process.argv[3] ?? 'span';
const BENCH_ATTRIBUTES = { 'bench.route': '/checkout', 'bench.status': 'ok' };

function timed(loop) {
  const started = process.hrtime.bigint();
  loop();
  return Number(process.hrtime.bigint() - started);
}

if (scenario === 'metric') {
  // A pull reader nobody pulls: the counter aggregates, nothing exports.
  class Idle extends MetricReader {
    async onForceFlush() {}
    async onShutdown() {}
  }
  const provider = new MeterProvider({ readers: [new Idle()] });
  const counter = provider.getMeter('bench').createCounter('bench.counter', { unit: '{item}' });
  const loop = (k) => () => {
    for (let i = 0; i < k; i++) counter.add(1, BENCH_ATTRIBUTES);
  };
  timed(loop(Math.min(n, 1000))); // warm up
  const elapsed = timed(loop(n));
  await provider.shutdown();
  console.log(JSON.stringify({ n, elapsed_ns: elapsed }));
  process.exit(0);
}

if (scenario === 'log') {
  const provider = new LoggerProvider({
    processors: [new BatchLogRecordProcessor({ exporter: discard, maxQueueSize: n + 1, maxExportBatchSize: 512 })],
  });
  const logger = provider.getLogger('bench');
  const loop = (k) => () => {
    for (let i = 0; i < k; i++) {
      logger.emit({ severityNumber: 9, severityText: 'INFO', body: 'bench log', attributes: BENCH_ATTRIBUTES });
    }
  };
  timed(loop(Math.min(n, 1000))); // warm up
  const elapsed = timed(loop(n));
  await provider.shutdown();
  console.log(JSON.stringify({ n, elapsed_ns: elapsed }));
  process.exit(0);
}

if (scenario === 'span-export') {
  const { ProtobufTraceSerializer } = await import('@opentelemetry/otlp-transformer');
  let encoded = 0;
  const encode = {
    export(spans, done) {
      const body = ProtobufTraceSerializer.serializeRequest(spans);
      if (body.length <= 100 * spans.length) throw new Error(`${spans.length} spans in ${body.length} bytes`);
      encoded += spans.length;
      done({ code: 0 });
    },
    shutdown() {
      return Promise.resolve();
    },
    forceFlush() {
      return Promise.resolve();
    },
  };
  const provider = new TracerProvider({
    spanProcessors: [new BatchSpanProcessor({ exporter: encode, maxQueueSize: n + 1, maxExportBatchSize: 512 })],
  });
  const tracer = provider.getTracer('bench');
  run(tracer, Math.min(n, 1000)); // warm up
  await provider.forceFlush();
  const before = process.cpuUsage();
  run(tracer, n);
  await provider.forceFlush();
  const cpu = process.cpuUsage(before);
  await provider.shutdown();
  if (encoded !== Math.min(n, 1000) + n) throw new Error(`${encoded} spans encoded, not ${Math.min(n, 1000) + n}`);
  console.log(JSON.stringify({ n, cpu_ns: (cpu.user + cpu.system) * 1000 }));
  process.exit(0);
}

// A queue that holds the whole run: no span is dropped for being fast.
const provider = new TracerProvider({
  spanProcessors: [new BatchSpanProcessor({ exporter: discard, maxQueueSize: n + 1, maxExportBatchSize: 512 })],
});
const tracer = provider.getTracer('bench');
run(tracer, Math.min(n, 1000)); // warm up
const elapsed = run(tracer, n);
await provider.shutdown();
console.log(JSON.stringify({ n, elapsed_ns: Number(elapsed) }));
