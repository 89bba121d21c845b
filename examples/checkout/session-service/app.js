// session-service (JavaScript): GET /sessions/:id → span `load_session`
// (`session.id`, `session.active`); unknown ids → 404.
import { counter, withSpan, serve } from './polytrace.js';

const SESSIONS = new Map([
  ['abc', { user_id: 'user-1', active: true, created: '2026-11-01T09:00:00Z' }],
  ['xyz', { user_id: 'user-2', active: true, created: '2026-11-20T17:30:00Z' }],
]);

// Exported directly (not a fetch listener) so one instance serves request
// after request.
export const incomingHandler = serve(handle);

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

async function handle(request) {
  const { pathname } = new URL(request.url);
  const match = /^\/sessions\/([^/]+)$/.exec(pathname);
  if (request.method !== 'GET' || !match) return json(404, { error: 'GET /sessions/:id' });
  const id = decodeURIComponent(match[1]);
  return withSpan('load_session', { 'session.id': id }, (span) => {
    const session = SESSIONS.get(id);
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
