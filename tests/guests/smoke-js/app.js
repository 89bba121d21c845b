// A componentize-js component that uses the raw WIT bindings: proof that the
// host runs StarlingMonkey components with the same tracing as Rust, and
// that a plain fetch() gets a CLIENT span and propagation from the host.
import { Span, currentSpanContext } from 'polytrace:telemetry/tracing@0.1.0';

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const span = new Span('js.work', 'internal', [
    { key: 'js.text', value: { tag: 'string', val: 'camel' } },
    { key: 'js.count', value: { tag: 's64', val: 3n } },
    { key: 'js.ratio', value: { tag: 'f64', val: 0.5 } },
    { key: 'js.flag', value: { tag: 'bool', val: true } },
  ]);
  span.addEvent('checkpoint', [{ key: 'step', value: { tag: 's64', val: 1n } }], undefined);
  let next = null;
  try {
    const target = new URL(request.url).searchParams.get('next');
    if (target) {
      next = (await fetch(target)).status;
    }
  } catch (e) {
    span.recordException(e.name, String(e.message), e.stack, true);
  } finally {
    span.end(undefined);
  }
  const body = { language: 'javascript', next, traceId: currentSpanContext()?.traceId };
  return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
}
