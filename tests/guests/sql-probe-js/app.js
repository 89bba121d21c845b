// The SQL benchmark guest in JavaScript (tests/benches/sql_cost.rs): the
// same primary-key SELECT as tests/guests/sql-probe (Python), through
// polytrace.js's node-postgres-shaped client, on the database granted as
// `bench`.
//
//   GET /sql-cost?n=N  → {"n", "elapsed_ns"}: N queries, timed in the guest
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
