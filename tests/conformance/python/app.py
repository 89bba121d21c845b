"""The conformance scenario (tests/conformance/SPEC.md) with the Python SDK."""

import json
import logging
import time

import polytrace
from polytrace import dbapi, logs, metrics
from polytrace.http import HttpError, Request, respond, send
from wit_world import exports


class ConformanceError(Exception):
    pass


# Spans the scenario leaves open on purpose; held so nothing releases them.
_unended = []


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        request = Request(request)
        if request.path.endswith("/bad-input"):
            return bad_input(response_out)
        n = int(request.query.get("n", "1000"))
        if request.path.endswith("/span-cost"):
            return span_cost(n, response_out)
        if request.path.endswith("/metric-cost"):
            return metric_cost(n, response_out)
        if request.path.endswith("/log-cost"):
            return log_cost(n, response_out)
        if request.path.endswith("/db"):
            return database(response_out)
        attributes = {
            "conformance.string": "text",
            "conformance.bool": True,
            "conformance.int": 42,
            "conformance.float": 2.5,
            "conformance.strings": ["a", "b"],
            "conformance.bools": [True, False],
            "conformance.ints": [1, 2, 3],
            "conformance.floats": [0.5, 1.5],
        }
        status = None
        with polytrace.span("conformance.work", attributes=attributes) as work:
            work.add_event("checkpoint", {"conformance.step": 1})
            outcome = {"conformance.outcome": "ok"}
            metrics.counter("conformance.requests", "Conformance scenario runs", "{request}").add(1, outcome)
            metrics.histogram(
                "conformance.latency", "Conformance latency", "ms", boundaries=[1, 10, 100]
            ).record(42.5, outcome)
            logs.warn("conformance log", {"conformance.step": 2})
            logging.getLogger("conformance").info("conformance native log")
            url = request.query.get("next")
            if url:
                try:
                    status, _ = send("GET", url)
                except HttpError as e:
                    work.record_exception(e)
        work.set_attribute("conformance.after_end", True)

        with polytrace.span("conformance.fail") as fail:
            try:
                raise ConformanceError("conformance failure")
            except ConformanceError as e:
                fail.record_exception(e)
            fail.set_status_error("conformance failure")

        _unended.append(polytrace.span("conformance.unended"))

        body = {"language": "python", "next_status": status}
        respond(response_out, 200, "application/json", json.dumps(body).encode())


def database(response_out):
    """The database scenario: a table made, a row upserted in a
    transaction, read back, and a statement on a missing table, handled."""
    with polytrace.span("conformance.db"):
        db = dbapi.connect("conformance")
        cur = db.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS conformance_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        with db:  # BEGIN before the INSERT, COMMIT at the end
            cur.execute(
                "INSERT INTO conformance_items (id, name) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                (1, "tea"),
            )
        cur.execute("SELECT name FROM conformance_items WHERE id = ?", (1,))
        (name,) = cur.fetchone()
        try:
            cur.execute("SELECT name FROM conformance_missing")
            kind = "none"
        except dbapi.Error as e:
            kind = e.kind
    body = {"language": "python", "name": name, "error_kind": kind}
    respond(response_out, 200, "application/json", json.dumps(body).encode())


def bad_input(response_out):
    """The bad-input scenario."""
    polytrace.span("").end()
    polytrace.span("bad.kind", kind="bogus").end()
    polytrace.span("bad.huge", {"bad.huge": "x" * (1 << 20), "bad.long": list(range(1000))}).end()
    polytrace.span("bad.many", {f"bad.attr.{i:05}": i for i in range(10_000)}).end()
    try:
        metrics.counter("1bad name")
        error = "none"
    except metrics.MetricError as e:
        error = e.kind
    body = {"language": "python", "metric_error": error}
    respond(response_out, 200, "application/json", json.dumps(body).encode())


def span_cost(n, response_out):
    """The span-cost scenario: n spans of five attributes, timed in the guest."""
    started = time.perf_counter_ns()
    for i in range(n):
        polytrace.span(
            "bench.span",
            {
                "bench.string": "value",
                "bench.bool": True,
                "bench.int": i,
                "bench.float": 0.5,
                "bench.route": "/checkout",
            },
        ).end()
    elapsed = time.perf_counter_ns() - started
    body = {"language": "python", "n": n, "elapsed_ns": elapsed}
    respond(response_out, 200, "application/json", json.dumps(body).encode())


BENCH_ATTRIBUTES = {"bench.route": "/checkout", "bench.status": "ok"}


def metric_cost(n, response_out):
    """The metric-cost scenario: n counter adds with two attributes."""
    counter = metrics.counter("bench.counter", unit="{item}")
    started = time.perf_counter_ns()
    for _ in range(n):
        counter.add(1, BENCH_ATTRIBUTES)
    elapsed = time.perf_counter_ns() - started
    body = {"language": "python", "n": n, "elapsed_ns": elapsed}
    respond(response_out, 200, "application/json", json.dumps(body).encode())


def log_cost(n, response_out):
    """The log-cost scenario: n INFO records with two attributes."""
    started = time.perf_counter_ns()
    for _ in range(n):
        logs.info("bench log", BENCH_ATTRIBUTES)
    elapsed = time.perf_counter_ns() - started
    body = {"language": "python", "n": n, "elapsed_ns": elapsed}
    respond(response_out, 200, "application/json", json.dumps(body).encode())
