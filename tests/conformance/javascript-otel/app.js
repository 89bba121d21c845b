// The conformance scenario (tests/conformance/SPEC.md) written against
// @opentelemetry/api: the host is its SDK. Its trees, metrics and logs must
// equal the SDK version's (javascript/app.js). Log records are the SDK's
// (log.warn) and console's: the API package has no logs.
import { metrics, SpanStatusCode, trace } from '@opentelemetry/api';
import { flush, log, serve } from './polytrace.js';

const tracer = trace.getTracer('conformance');
const meter = metrics.getMeter('conformance');
const requestsRun = meter.createCounter('conformance.requests', {
  description: 'Conformance scenario runs',
  unit: '{request}',
});
const latency = meter.createHistogram('conformance.latency', {
  description: 'Conformance latency',
  unit: 'ms',
  advice: { explicitBucketBoundaries: [1, 10, 100] },
});

class ConformanceError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConformanceError';
  }
}

// Spans the scenario leaves open on purpose; held so nothing releases them.
const unended = [];

export const incomingHandler = serve(handle);

async function handle(request) {
  const { pathname, searchParams } = new URL(request.url);
  if (pathname.endsWith('/span-cost')) return spanCost(Number(searchParams.get('n') ?? 1000));
  const url = searchParams.get('next');
  const attributes = {
    'conformance.string': 'text',
    'conformance.bool': true,
    'conformance.int': 42,
    'conformance.float': 2.5,
    'conformance.strings': ['a', 'b'],
    'conformance.bools': [true, false],
    'conformance.ints': [1, 2, 3],
    'conformance.floats': [0.5, 1.5],
  };
  let work;
  const status = await tracer.startActiveSpan('conformance.work', { attributes }, async (span) => {
    work = span;
    try {
      span.addEvent('checkpoint', { 'conformance.step': 1 });
      const outcome = { 'conformance.outcome': 'ok' };
      requestsRun.add(1, outcome);
      latency.record(42.5, outcome);
      log.warn('conformance log', { 'conformance.step': 2 });
      console.info('conformance native log');
      if (!url) return null;
      try {
        const response = await fetch(url);
        await response.arrayBuffer();
        return response.status;
      } catch (e) {
        span.recordException(e);
        return null;
      }
    } finally {
      span.end();
    }
  });
  work.setAttribute('conformance.after_end', true);

  tracer.startActiveSpan('conformance.fail', (span) => {
    try {
      throw new ConformanceError('conformance failure');
    } catch (e) {
      span.recordException(e);
    }
    span.setStatus({ code: SpanStatusCode.ERROR, message: 'conformance failure' });
    span.end();
  });

  unended.push(tracer.startSpan('conformance.unended'));

  const body = { language: 'javascript-otel', next_status: status };
  return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
}

// The span-cost scenario through the API: n spans of five attributes.
function spanCost(n) {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    tracer
      .startSpan('bench.span', {
        attributes: {
          'bench.string': 'value',
          'bench.bool': true,
          'bench.int': i,
          'bench.float': 0.5,
          'bench.route': '/checkout',
        },
      })
      .end();
  }
  // Timed as the SDK's scenario is: the spans handed to the host first.
  flush();
  const elapsed = Math.round((performance.now() - started) * 1e6);
  return new Response(JSON.stringify({ language: 'javascript-otel', n, elapsed_ns: elapsed }), {
    headers: { 'content-type': 'application/json' },
  });
}
