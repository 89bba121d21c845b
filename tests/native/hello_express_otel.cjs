// OpenTelemetry setup for hello_express.cjs (the native Express hello
// service of the side-by-side benchmark), loaded before it with
// `node --require ./hello_express_otel.cjs`: the instrumentations patch
// node:http and express as they are required, so the SDK must have started
// before the app requires express.
//
// The official Node SDK (@opentelemetry/sdk-node) with the HTTP and Express
// instrumentations; spans are batched (BatchSpanProcessor defaults,
// OTEL_BSP_*) and sent over OTLP/HTTP protobuf to
// OTEL_EXPORTER_OTLP_ENDPOINT (/v1/traces). service.name comes from
// OTEL_SERVICE_NAME. Traces only, like the Flask service: no metric reader
// and no log processor (the SDK would otherwise start OTLP ones from the
// environment's defaults).
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');

const sdk = new NodeSDK({
  // Given as traceExporter, the SDK wraps it in a BatchSpanProcessor
  // configured from the environment (OTEL_BSP_*, else the defaults).
  traceExporter: new OTLPTraceExporter(),
  metricReaders: [],
  logRecordProcessors: [],
  instrumentations: [new HttpInstrumentation(), new ExpressInstrumentation()],
});
sdk.start();

// Export what is still queued before exiting.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    sdk.shutdown().finally(() => process.exit(0));
  });
}
