"""orders with a database: a Flask service that keeps its orders in SQL
through the host (``polytrace.dbapi``, DB-API 2.0), as a team writes it
with sqlite3 or psycopg2. Every statement is a CLIENT span the host makes,
under the view's spans, with the database conventions' attributes.

    POST /orders              {"id": "o-1", "item": "tea", "quantity": 2} → 201; a known id or a
                              quantity under 1 → 409; anything else → 400
    GET  /orders/<order_id>   → 200 the order; unknown → 404
    GET  /orders/broken       → a statement with a syntax error: Flask's 500
    GET  /orders/ungranted    → a database the manifest does not grant: 503
"""

from flask import Flask, jsonify, request
from opentelemetry import trace

from polytrace import dbapi

app = Flask(__name__)
tracer = trace.get_tracer(__name__)
db = dbapi.connect("orders")  # opens at the first statement
SCHEMA = """CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY NOT NULL,
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0)
)"""
ready = False


@app.before_request
def schema():
    global ready
    if not ready:
        with db:
            db.cursor().execute(SCHEMA)
        ready = True


@app.post("/orders")
def create_order():
    order = request.get_json(silent=True)
    if not (
        isinstance(order, dict)
        and isinstance(order.get("id"), str)
        and isinstance(order.get("item"), str)
        and type(order.get("quantity")) is int
    ):
        return jsonify(error='send {"id": "...", "item": "...", "quantity": N}'), 400
    with tracer.start_as_current_span("save_order") as span:
        span.set_attribute("order.id", str(order.get("id")))
        try:
            with db:  # one transaction: committed, or rolled back
                cur = db.cursor()
                cur.execute(
                    "INSERT INTO orders (id, item, quantity) VALUES (%s, %s, %s)",
                    (order.get("id"), order.get("item"), order.get("quantity")),
                )
        except dbapi.IntegrityError as e:
            return jsonify(error=str(e), sqlstate=e.sqlstate), 409
    return jsonify(id=order["id"]), 201


@app.get("/orders/<order_id>")
def get_order(order_id):
    cur = db.cursor()
    cur.execute("SELECT id, item, quantity FROM orders WHERE id = ?", (order_id,))
    row = cur.fetchone()
    db.commit()
    if row is None:
        return jsonify(error=f"no order {order_id}"), 404
    return jsonify(dict(zip([d[0] for d in cur.description], row)))


@app.get("/orders/broken")
def broken():
    db.cursor().execute("SELEC id FROM orders")


@app.get("/orders/ungranted")
def ungranted():
    try:
        dbapi.connect("analytics").cursor().execute("SELECT 1")
    except dbapi.OperationalError as e:
        return jsonify(error=str(e), kind=e.kind), 503
    return jsonify(ok=True)
