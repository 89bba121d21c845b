"""The SQL benchmark's guest (tests/benches/sql_cost.rs): GET /sql-cost?n=N
runs N primary-key SELECTs through polytrace.dbapi on the database granted
as ``bench`` and answers the time they took, measured in the guest."""

import json
import time

from polytrace import dbapi
from polytrace.http import Request, respond
from wit_world import exports

db = dbapi.connect("bench")
ready = False


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        global ready
        request = Request(request)
        n = int(request.query.get("n", "1000"))
        cur = db.cursor()
        if not ready:
            cur.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            cur.execute("INSERT OR REPLACE INTO items (id, name) VALUES (1, 'tea')")
            db.commit()
            ready = True
        started = time.perf_counter_ns()
        for _ in range(n):
            cur.execute("SELECT name FROM items WHERE id = ?", (1,))
            cur.fetchone()
        elapsed = time.perf_counter_ns() - started
        respond(response_out, 200, "application/json", json.dumps({"n": n, "elapsed_ns": elapsed}).encode())
