"""The native side of tests/benches/sql_cost.rs: N primary-key SELECTs with
Python's own sqlite3 on a file database in write-ahead-log mode, as the
guest's; prints {"n", "elapsed_ns"}.

    .tools/native-venv/bin/python tests/native/sql_cost.py N DB_FILE
"""

import json
import sqlite3
import sys
import time

n, path = int(sys.argv[1]), sys.argv[2]
db = sqlite3.connect(path)
db.execute("PRAGMA journal_mode=wal")
db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
db.execute("INSERT OR REPLACE INTO items (id, name) VALUES (1, 'tea')")
db.commit()
cur = db.cursor()
for _ in range(min(n, 1000)):  # warm up
    cur.execute("SELECT name FROM items WHERE id = ?", (1,))
    cur.fetchone()
started = time.perf_counter_ns()
for _ in range(n):
    cur.execute("SELECT name FROM items WHERE id = ?", (1,))
    cur.fetchone()
print(json.dumps({"n": n, "elapsed_ns": time.perf_counter_ns() - started}))
