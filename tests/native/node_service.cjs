// A native Node.js service instrumented with the official OpenTelemetry
// Node SDK (@opentelemetry/sdk-node + the HTTP instrumentation): the
// interop test's callee of a polytrace guest.
//
// On any request it starts span `native-node.work` and answers JSON. Spans
// go over OTLP/HTTP (protobuf) to OTEL_EXPORTER_OTLP_ENDPOINT. Prints
// `listening on http://ADDR` once it serves.
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { SimpleSpanProcessor } = require('@opentelemetry/sdk-trace');

const sdk = new NodeSDK({
  serviceName: 'native-node',
  spanProcessors: [new SimpleSpanProcessor({ exporter: new OTLPTraceExporter() })],
  instrumentations: [new HttpInstrumentation()],
});
sdk.start();

// Required after sdk.start(), so the instrumentation has patched it.
const http = require('node:http');
const { trace } = require('@opentelemetry/api');
const tracer = trace.getTracer('native-node');

const server = http.createServer((req, res) => {
  const span = tracer.startSpan('native-node.work', { attributes: { 'node.path': req.url } });
  span.end();
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ service: 'native-node', path: req.url }));
});
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => sdk.shutdown().finally(() => process.exit(0)));
