// The SQL benchmark guest in JavaScript (tests/benches/sql_cost.rs): the
// same primary-key SELECT as tests/guests/sql-probe (Python), through
// polytrace.js's node-postgres-shaped client, on the database granted as
// `bench`.
//
//   GET /sql-cost?n=N  → {"n", "elapsed_ns"}: N queries, timed in the guest
//   GET /values        → the values JSON numbers cannot carry (BigInts,
//                        Infinity, bytes, text that is not UTF-8), sent as
//                        parameters and read back: {column: {type, value}}
import { sql, serve } from './polytrace.js';

const db = sql.connect('bench');
let ready = false;

async function handle(request) {
  const url = new URL(request.url);
  if (!ready) {
    await db.query('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)');
    await db.query(
      "INSERT INTO items (id, name) VALUES (1, 'tea') ON CONFLICT (id) DO UPDATE SET name = excluded.name",
    );
    ready = true;
  }
  if (url.pathname === '/values') {
    const { rows } = await db.query(
      "SELECT ? AS big, ? AS neg, ? AS inf, ? AS bytes, ? AS text, ? AS nil, ? AS yes, ? AS half, ? AS bigfloat, CAST(x'ff00fe' AS TEXT) AS bad",
      [2n ** 60n, -(2n ** 62n), Infinity, new Uint8Array([0, 255, 1]), 'é\u0000x', null, true, 1.5, 2 ** 60],
    );
    const describe = (v) =>
      v instanceof Uint8Array
        ? { type: 'bytes', value: [...v] }
        : { type: typeof v, value: typeof v === 'number' && !Number.isFinite(v) ? String(v) : v };
    const out = Object.fromEntries(Object.entries(rows[0]).map(([k, v]) => [k, describe(v)]));
    return new Response(JSON.stringify(out), { headers: { 'content-type': 'application/json' } });
  }
  const n = Number(url.searchParams.get('n') ?? '1000');
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    const { rows } = await db.query('SELECT name FROM items WHERE id = $1', [1]);
    if (rows.length !== 1) throw new Error('no row');
  }
  const elapsedNs = Math.round((performance.now() - started) * 1e6);
  return new Response(JSON.stringify({ n, elapsed_ns: elapsedNs }), {
    headers: { 'content-type': 'application/json' },
  });
}

export const incomingHandler = serve(handle);
