// A JavaScript component written the old way, as a fetch listener: it cannot
// answer a second request on one instance (StarlingMonkey issue 247). The
// host must notice and give it a fresh instance per request from then on.
import { startSpan } from './polytrace.js';

let served = 0;

addEventListener('fetch', (event) => {
  served += 1;
  // Outside serve(): a span left open must not hold back the spans after
  // it, and a lone surrogate must not cost the batch.
  startSpan('listener.open', { text: 'a\ud800b' });
  startSpan('listener.child').end();
  event.respondWith(
    new Response(JSON.stringify({ served }), { headers: { 'content-type': 'application/json' } }),
  );
});
