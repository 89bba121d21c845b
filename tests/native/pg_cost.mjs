// The native side of tests/benches/sql_cost.rs for JavaScript: N
// primary-key SELECTs with node-postgres (`pg`, pure JavaScript) on the
// server at URL, over one connection, the statement prepared once (a named
// query, as the host's pool caches it); prints {"n", "elapsed_ns"}.
//
//   node tests/native/pg_cost.mjs N URL
import pg from 'pg';

const [n, url] = [Number(process.argv[2]), process.argv[3]];
const client = new pg.Client({ connectionString: url });
await client.connect();
await client.query('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)');
await client.query("INSERT INTO items (id, name) VALUES (1, 'tea') ON CONFLICT (id) DO NOTHING");
const query = { name: 'item-by-id', text: 'SELECT name FROM items WHERE id = $1', values: [1] };
for (let i = 0; i < Math.min(n, 1000); i++) await client.query(query); // warm up
const started = process.hrtime.bigint();
for (let i = 0; i < n; i++) {
  const { rows } = await client.query(query);
  if (rows.length !== 1) throw new Error('no row');
}
const elapsed = process.hrtime.bigint() - started;
await client.end();
console.log(JSON.stringify({ n, elapsed_ns: Number(elapsed) }));
