// The key-value test guest in JavaScript (tests/tests/keyvalue.rs): the
// same routes and answers as tests/guests/kv-probe (Python), through
// polytrace.js's keyvalue client.
import { keyvalue, KeyValueError, serve } from './polytrace.js';

async function run(store, op, args) {
  switch (op) {
    case 'get': return store.get(args[0]);
    case 'set': return (await store.set(args[0], args[1])) ?? null;
    case 'delete': return (await store.delete(args[0])) ?? null;
    case 'exists': return store.exists(args[0]);
    case 'increment': return store.increment(args[0], ...args.slice(1));
    case 'get_many': return store.getMany(args[0]);
    case 'set_many': return (await store.setMany(args[0])) ?? null;
    case 'delete_many': return (await store.deleteMany(args[0])) ?? null;
    case 'keys': {
      const keys = [];
      for await (const k of store.keys()) keys.push(k);
      return keys.sort();
    }
    default: throw new Error(`unknown op ${op}`);
  }
}

async function handle(request) {
  const url = new URL(request.url);
  const name = url.searchParams.get('store') ?? 'cache';
  const big = 'k'.repeat(1 << 20);
  const ops = url.pathname === '/big-key'
    ? [['set', big, 'v'], ['get', big], ['set', 'small', 'ok'], ['get', 'small']]
    : await request.json();
  const results = [];
  let store;
  for (const [op, ...args] of ops) {
    try {
      if (op === 'open') {
        store = keyvalue.open(args[0] ?? name);
        results.push(null);
        continue;
      }
      store ??= keyvalue.open(name);
      results.push(await run(store, op, args));
    } catch (e) {
      if (!(e instanceof KeyValueError)) throw e;
      results.push({ error: e.kind, message: e.message });
    }
  }
  return new Response(JSON.stringify(results), { headers: { 'content-type': 'application/json' } });
}

export const incomingHandler = serve(handle);
