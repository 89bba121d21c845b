// session-service (JavaScript): the checkout's sessions, kept in the
// `sessions` key-value store the manifest grants (an embedded file by
// default, Redis when CHECKOUT_SESSIONS_STORE names one). The host traces
// every store operation (a CLIENT span `GET sessions` under `load_session`),
// so a slow or failing store shows in the trace where it happened.
//
//   GET /sessions/:id  → span `load_session` (`session.id`, `session.active`);
//                        unknown ids → 404; the store failing → 503
//   PUT /sessions/:id  {"user_id": "...", "active": true} → 200 (sign-in's
//                        stand-in: the demo and the tests create their sessions)
import { counter, keyvalue, KeyValueError, server, withSpan, serve } from './polytrace.js';

// Exported directly (not a fetch listener) so one instance serves request
// after request.
export const incomingHandler = serve(handle);

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

const key = (id) => `session:${id}`;

async function handle(request) {
  const { pathname } = new URL(request.url);
  const match = /^\/sessions\/([^/]+)$/.exec(pathname);
  if (!match) return json(404, { error: 'GET or PUT /sessions/:id' });
  const id = decodeURIComponent(match[1]);
  // The SERVER span: `GET /sessions/{id}` (http.route), not the raw path.
  server.setRoute('/sessions/{id}');
  try {
    if (request.method === 'GET') return await load(id);
    if (request.method === 'PUT') return await save(id, await request.json().catch(() => null));
  } catch (e) {
    if (!(e instanceof KeyValueError)) throw e;
    console.error(`session store: ${e.kind}: ${e.message}`);
    return json(503, { error: `session store ${e.kind}` });
  }
  return json(405, { error: 'GET or PUT /sessions/:id' });
}

function load(id) {
  return withSpan('load_session', { 'session.id': id }, async (span) => {
    const stored = await keyvalue.open('sessions').get(key(id));
    const session = stored === null ? null : JSON.parse(stored);
    span.setAttribute('session.active', Boolean(session?.active));
    const loaded = counter('sessions.loaded', { description: 'Session lookups, by status', unit: '{session}' });
    loaded.add(1, { status: session ? 'found' : 'not_found' });
    if (!session) {
      console.warn(`session ${id} not found`);
      return json(404, { error: `session ${id} not found` });
    }
    return json(200, { session_id: id, ...session });
  });
}

async function save(id, body) {
  if (typeof body?.user_id !== 'string') return json(400, { error: 'send {"user_id": "...", "active": true}' });
  const session = { user_id: body.user_id, active: body.active !== false, created: new Date().toISOString() };
  await withSpan('save_session', { 'session.id': id }, () => keyvalue.open('sessions').set(key(id), JSON.stringify(session)));
  return json(200, { session_id: id, ...session });
}
