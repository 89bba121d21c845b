// reports: a Hono service reading the orders database that the Python
// orders service writes, with the node-postgres-shaped client
// (`sql.connect(name).query(text, params)`). Its statements are traced by
// the host exactly as the Python service's are.
//
//   GET /reports/summary        → { orders, items }
//   GET /reports/items/:item    → the orders of one item ($1 placeholder)
import { Hono } from 'hono';
import { sql } from './polytrace.js';

const db = sql.connect('orders');
const app = new Hono();

app.get('/reports/summary', async (c) => {
  const { rows } = await db.query('SELECT count(*) AS orders, coalesce(sum(quantity), 0) AS items FROM orders');
  return c.json(rows[0]);
});

app.get('/reports/items/:item', async (c) => {
  const { rows, rowCount } = await db.query('SELECT id, quantity FROM orders WHERE item = $1 ORDER BY id', [
    c.req.param('item'),
  ]);
  return c.json({ count: rowCount, orders: rows });
});

export default app;
