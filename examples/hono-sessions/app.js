// session-service, written as a JavaScript team writes it: a Hono app with
// the OpenTelemetry API. Nothing in it is polytrace's: the build bundles it
// with its npm packages (esbuild), and polytrace serves `export default app`
// and supplies the SDK.
//
//   GET /sessions/:id  → 200 a session; unknown → 404
//   GET /boom          → an error in a handler: Hono's 500
//   GET /trace         → the W3C headers propagation.inject writes
import { Hono } from 'hono';
import { context, metrics, propagation, SpanStatusCode, trace } from '@opentelemetry/api';

const tracer = trace.getTracer('session-service');
const sessionsLoaded = metrics
  .getMeter('session-service')
  .createCounter('sessions.loaded', { description: 'Session lookups, by status', unit: '{session}' });

const SESSIONS = new Map([
  ['abc', { user_id: 'user-1', active: true }],
  ['xyz', { user_id: 'user-2', active: false }],
]);

const app = new Hono();

app.use('*', async (c, next) => {
  await next();
  c.header('x-served-by', 'session-service');
});

app.get('/sessions/:id', (c) =>
  tracer.startActiveSpan('load_session', async (span) => {
    const id = c.req.param('id');
    span.setAttribute('session.id', id);
    const session = await lookup(id);
    span.setAttribute('session.active', Boolean(session?.active));
    sessionsLoaded.add(1, { status: session ? 'found' : 'not_found' });
    if (!session) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: `session ${id} not found` });
      span.end();
      return c.json({ error: `session ${id} not found` }, 404);
    }
    span.end();
    return c.json({ session_id: id, ...session });
  }),
);

// A child span, started after an await inside its parent.
async function lookup(id) {
  await Promise.resolve();
  return tracer.startActiveSpan('sessions.lookup', async (span) => {
    span.setAttribute('db.system.name', 'memory');
    await Promise.resolve();
    span.end();
    return SESSIONS.get(id);
  });
}

app.get('/boom', () => {
  throw new Error('session store unavailable');
});

app.get('/trace', (c) =>
  tracer.startActiveSpan('inject', (span) => {
    const carrier = {};
    propagation.inject(context.active(), carrier);
    span.end();
    return c.json({ headers: carrier, span_id: span.spanContext().spanId });
  }),
);

export default app;
