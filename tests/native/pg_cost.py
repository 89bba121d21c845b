"""The native side of tests/benches/sql_cost.rs on PostgreSQL: N
primary-key SELECTs with psycopg 3 (its C implementation) on the server at
URL, over one connection, prepared by the server after the first few, as
the host's pool does; prints {"n", "elapsed_ns"}.

    .tools/native-venv/bin/python tests/native/pg_cost.py N URL
"""

import json
import sys
import time

import psycopg

n, url = int(sys.argv[1]), sys.argv[2]
with psycopg.connect(url, autocommit=True) as db:
    assert psycopg.pq.__impl__ in ("c", "binary"), psycopg.pq.__impl__
    cur = db.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    cur.execute("INSERT INTO items (id, name) VALUES (1, 'tea') ON CONFLICT (id) DO NOTHING")
    for _ in range(min(n, 1000)):  # warm up
        cur.execute("SELECT name FROM items WHERE id = %s", (1,))
        cur.fetchone()
    started = time.perf_counter_ns()
    for _ in range(n):
        cur.execute("SELECT name FROM items WHERE id = %s", (1,))
        cur.fetchone()
    print(json.dumps({"n": n, "elapsed_ns": time.perf_counter_ns() - started}))
