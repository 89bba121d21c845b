// The native counterpart of examples/hono-sessions for the side-by-side
// benchmark: the same session service (same routes, spans, attributes and
// counter through @opentelemetry/api) written for Express, which is what a
// Node.js team runs, traced by the official Node SDK that
// hello_express_otel.cjs starts first:
//
//   cd tests/native && PORT=8083 OTEL_SERVICE_NAME=sessions-express \
//     OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//     node --require ./hello_express_otel.cjs sessions_express.cjs
//
// Prints `listening on http://ADDR` once it serves.
const express = require('express');
const { metrics, SpanStatusCode, trace } = require('@opentelemetry/api');

const tracer = trace.getTracer('session-service');
const sessionsLoaded = metrics
  .getMeter('session-service')
  .createCounter('sessions.loaded', { description: 'Session lookups, by status', unit: '{session}' });

const SESSIONS = new Map([
  ['abc', { user_id: 'user-1', active: true }],
  ['xyz', { user_id: 'user-2', active: false }],
]);

async function lookup(id) {
  await Promise.resolve();
  return tracer.startActiveSpan('sessions.lookup', async (span) => {
    span.setAttribute('db.system.name', 'memory');
    await Promise.resolve();
    span.end();
    return SESSIONS.get(id);
  });
}

const app = express();
app.disable('x-powered-by');
app.use((req, res, next) => {
  res.set('x-served-by', 'session-service');
  next();
});
app.get('/sessions/:id', (req, res) =>
  tracer.startActiveSpan('load_session', async (span) => {
    const id = req.params.id;
    span.setAttribute('session.id', id);
    const session = await lookup(id);
    span.setAttribute('session.active', Boolean(session?.active));
    sessionsLoaded.add(1, { status: session ? 'found' : 'not_found' });
    if (!session) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: `session ${id} not found` });
      span.end();
      return res.status(404).json({ error: `session ${id} not found` });
    }
    span.end();
    return res.json({ session_id: id, ...session });
  }),
);

const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
