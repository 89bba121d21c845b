// The conformance scenario (tests/conformance/SPEC.md) with the JavaScript SDK.
import { counter, flush, histogram, log, MetricError, startSpan, withSpan, serve, sql } from './polytrace.js';

class ConformanceError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConformanceError';
  }
}

// Spans the scenario leaves open on purpose; held so nothing releases them.
const unended = [];

// Exported directly (not a fetch listener) so one instance serves request
// after request.
export const incomingHandler = serve(handle);

// The database scenario: a table made, a row upserted in a transaction,
// read back, and a statement on a missing table, handled.
async function database() {
  const body = await withSpan('conformance.db', async () => {
    const db = sql.connect('conformance');
    await db.query('CREATE TABLE IF NOT EXISTS conformance_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)');
    await db.query('BEGIN');
    await db.query(
      'INSERT INTO conformance_items (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name',
      [1, 'tea'],
    );
    await db.query('COMMIT');
    const { rows } = await db.query('SELECT name FROM conformance_items WHERE id = ?', [1]);
    let kind = 'none';
    try {
      await db.query('SELECT name FROM conformance_missing');
    } catch (e) {
      kind = e.kind;
    }
    return { language: 'javascript', name: rows[0].name, error_kind: kind };
  });
  return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
}

async function handle(request) {
  const { pathname, searchParams } = new URL(request.url);
  if (pathname.endsWith('/bad-input')) return badInput();
  const n = Number(searchParams.get('n') ?? 1000);
  if (pathname.endsWith('/span-cost')) return spanCost(n);
  if (pathname.endsWith('/metric-cost')) return metricCost(n);
  if (pathname.endsWith('/log-cost')) return logCost(n);
  if (pathname.endsWith('/db')) return database();
  const url = new URL(request.url).searchParams.get('next');
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
  const status = await withSpan('conformance.work', attributes, async (span) => {
    work = span;
    span.addEvent('checkpoint', { 'conformance.step': 1 });
    const outcome = { 'conformance.outcome': 'ok' };
    counter('conformance.requests', { description: 'Conformance scenario runs', unit: '{request}' }).add(
      1,
      outcome,
    );
    histogram('conformance.latency', {
      description: 'Conformance latency',
      unit: 'ms',
      boundaries: [1, 10, 100],
    }).record(42.5, outcome);
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
  });
  work.setAttribute('conformance.after_end', true);

  withSpan('conformance.fail', {}, (span) => {
    try {
      throw new ConformanceError('conformance failure');
    } catch (e) {
      span.recordException(e);
    }
    span.setStatus('error', 'conformance failure');
  });

  unended.push(startSpan('conformance.unended'));

  const body = { language: 'javascript', next_status: status };
  return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
}

// The bad-input scenario.
function badInput() {
  startSpan('').end();
  startSpan('bad.kind', {}, { kind: 'bogus' }).end();
  startSpan('bad.huge', {
    'bad.huge': 'x'.repeat(1 << 20),
    'bad.long': Array.from({ length: 1000 }, (_, i) => i),
  }).end();
  const many = {};
  for (let i = 0; i < 10000; i++) many[`bad.attr.${String(i).padStart(5, '0')}`] = i;
  startSpan('bad.many', many).end();
  let error = 'none';
  try {
    counter('1bad name');
  } catch (e) {
    error = e instanceof MetricError ? e.kind : `unexpected ${e}`;
  }
  return new Response(JSON.stringify({ language: 'javascript', metric_error: error }), {
    headers: { 'content-type': 'application/json' },
  });
}

// The span-cost scenario: n spans of five attributes, timed in the guest.
function spanCost(n) {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    startSpan('bench.span', {
      'bench.string': 'value',
      'bench.bool': true,
      'bench.int': i,
      'bench.float': 0.5,
      'bench.route': '/checkout',
    }).end();
  }
  // The host's share is timed too: the spans are handed over before the clock stops.
  flush();
  const elapsed = Math.round((performance.now() - started) * 1e6);
  return new Response(JSON.stringify({ language: 'javascript', n, elapsed_ns: elapsed }), {
    headers: { 'content-type': 'application/json' },
  });
}

const BENCH_ATTRIBUTES = { 'bench.route': '/checkout', 'bench.status': 'ok' };

function timed(n, loop) {
  const started = performance.now();
  loop();
  const elapsed = Math.round((performance.now() - started) * 1e6);
  return new Response(JSON.stringify({ language: 'javascript', n, elapsed_ns: elapsed }), {
    headers: { 'content-type': 'application/json' },
  });
}

// The metric-cost scenario: n counter adds with two attributes.
function metricCost(n) {
  const c = counter('bench.counter', { unit: '{item}' });
  return timed(n, () => {
    for (let i = 0; i < n; i++) c.add(1, BENCH_ATTRIBUTES);
  });
}

// The log-cost scenario: n INFO records with two attributes.
function logCost(n) {
  return timed(n, () => {
    for (let i = 0; i < n; i++) log.info('bench log', BENCH_ATTRIBUTES);
  });
}
