"""A SQL test guest (tests/tests/sql.rs, tests/benches/sql_cost.rs), on the
database granted as ``bench``:

    GET /sql-cost?n=N  N primary-key SELECTs through polytrace.dbapi, timed in the guest
    GET /slow          a statement that never ends on its own (the deadline stops it)
    GET /huge          a statement returning 200,000 rows (past the host's cap)
    GET /text          TEXT with an embedded NUL, and TEXT that is not UTF-8, stored and read back
                       (SQLite; PostgreSQL refuses the NUL: a DataError)
    GET /mismatch      a statement given the wrong number of parameters
    POST /statements   [[statement, [parameters...]], ...] run in order on one
                       connection; answers each one's rows or error (kind, sqlstate, message)
The statements run on SQLite and on PostgreSQL alike. Each failure answers 200 with the DB-API exception's class, kind and message.
"""

import json
import time

from polytrace import dbapi
from polytrace.http import Request, respond
from wit_world import exports

db = dbapi.connect("bench")
# SQLite and PostgreSQL both take this form of upsert.
UPSERT = "INSERT INTO items (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name"
ready = False


def answer(response_out, body):
    respond(response_out, 200, "application/json", json.dumps(body).encode())


def failure(e):
    return {"error": type(e).__name__, "kind": e.kind, "sqlstate": e.sqlstate, "message": str(e)}


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        global ready
        request = Request(request)
        cur = db.cursor()
        if not ready:
            cur.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            cur.execute(UPSERT, (1, "tea"))
            db.commit()
            ready = True
        if request.path == "/statements":
            results = []
            for statement, parameters in json.loads(request.body):
                try:
                    cur.execute(statement, parameters)
                    rows = cur.fetchall() if cur.description else []
                    results.append({"rows": [list(r) for r in rows], "rowcount": cur.rowcount})
                except dbapi.Error as e:
                    results.append(failure(e))
            return answer(response_out, results)
        try:
            if request.path == "/slow":
                cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
                return answer(response_out, {"rows": cur.fetchall()})
            if request.path == "/huge":
                cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) SELECT x FROM c")
                return answer(response_out, {"rows": len(cur.fetchall())})
            if request.path == "/text":
                cur.execute(UPSERT, (2, "a\x00b"))
                cur.execute("INSERT OR REPLACE INTO items (id, name) VALUES (3, CAST(x'ff00fe' AS TEXT))")
                db.commit()
                cur.execute("SELECT id, name FROM items WHERE id IN (2, 3) ORDER BY id")
                rows = [(i, v.hex() if isinstance(v, bytes) else v, type(v).__name__) for i, v in cur.fetchall()]
                return answer(response_out, {"rows": rows})
            if request.path == "/mismatch":
                cur.execute("SELECT name FROM items WHERE id = ?", (1, 2))
                return answer(response_out, {"rows": cur.fetchall()})
        except dbapi.Error as e:
            return answer(response_out, failure(e))
        n = int(request.query.get("n", "1000"))
        started = time.perf_counter_ns()
        for _ in range(n):
            cur.execute("SELECT name FROM items WHERE id = ?", (1,))
            cur.fetchone()
        elapsed = time.perf_counter_ns() - started
        answer(response_out, {"n": n, "elapsed_ns": elapsed})
