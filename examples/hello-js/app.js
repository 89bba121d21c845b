// hello-js: the same behaviour as hello-rust, with the JavaScript SDK.
//
// GET /hello?next=URL → span `hello.work` with one attribute of each type and
// a `checkpoint` event; when `next` is given, a fetch() to it (the host makes
// the CLIENT span and propagates the trace).
import { withSpan, serve } from './polytrace.js';

// Exported directly (not a fetch listener) so one instance serves request
// after request.
export const incomingHandler = serve(handle);

async function handle(request) {
  const query = new URL(request.url).searchParams;
  const attributes = {
    'hello.name': query.get('name') ?? 'world',
    'hello.polite': true,
    'hello.count': 3,
    'hello.ratio': 0.5,
    'hello.tags': ['a', 'b'],
    'hello.flags': [true, false],
    'hello.numbers': [1, 2, 3],
    'hello.weights': [0.25, 0.75],
  };
  const next = await withSpan('hello.work', attributes, async (span) => {
    span.addEvent('checkpoint', { step: 1 });
    const url = query.get('next');
    if (!url) return null;
    try {
      const response = await fetch(url);
      await response.arrayBuffer();
      return { url, status: response.status };
    } catch (e) {
      span.recordException(e);
      return { url, error: String(e.message ?? e) };
    }
  });
  const body = { service: 'hello-js', language: 'javascript', message: 'hello', next };
  return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
}
