// The native Node.js equivalent of examples/hello-js, for the side-by-side
// benchmark: an Express app traced by the official OpenTelemetry Node SDK,
// which hello_express_otel.cjs starts first:
//
//   cd tests/native && PORT=8082 OTEL_SERVICE_NAME=hello-express \
//     OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//     node --require ./hello_express_otel.cjs hello_express.cjs
//
// GET /hello/...?name=X → the HTTP instrumentation's SERVER span (and the
// Express instrumentation's middleware and request-handler spans) with a
// child span `hello.work` carrying one attribute of each type and a
// `checkpoint` event; answers the same JSON as the guest (`next` is always
// null here). Prints `listening on http://ADDR` once it serves.
const express = require('express');
const { trace } = require('@opentelemetry/api');

const tracer = trace.getTracer('hello');
const service = process.env.OTEL_SERVICE_NAME ?? 'hello-express';

function hello(req, res) {
  // Like URLSearchParams.get(): the first value when the name is repeated.
  let name = req.query.name;
  if (Array.isArray(name)) name = name[0];
  const attributes = {
    'hello.name': typeof name === 'string' ? name : 'world',
    'hello.polite': true,
    'hello.count': 3,
    'hello.ratio': 0.5,
    'hello.tags': ['a', 'b'],
    'hello.flags': [true, false],
    'hello.numbers': [1, 2, 3],
    'hello.weights': [0.25, 0.75],
  };
  tracer.startActiveSpan('hello.work', { attributes }, (span) => {
    span.addEvent('checkpoint', { step: 1 });
    span.end();
  });
  res.json({ service, language: 'javascript', message: 'hello', next: null });
}

const app = express();
app.disable('x-powered-by');
app.get('/hello{/*rest}', hello);

const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
