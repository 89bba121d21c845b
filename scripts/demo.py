#!/usr/bin/env python3
"""The demo's run: start examples/checkout, send a handful of checkouts, and
print each one's trace as a compact tree (service, span, duration, status),
the log records the services wrote in it, and the app's metrics.

    scripts/demo.py [--polytrace BIN] [--listen ADDR] [--once]

Spans are read from polytrace's console exporter (OTEL_TRACES_EXPORTER
includes `console`), guest logs from its JSON console lines
(`--guest-logs info,json`), metrics from the viewer's Prometheus /metrics;
with OTEL_EXPORTER_OTLP_ENDPOINT set all three also go to that backend
(Jaeger, a Collector, ...). Without --once the app keeps
serving until Ctrl-C. Standard library only.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPAN_LINE = re.compile(
    r"^span\s+(?P<service>\S+)\s+(?P<kind>[A-Z]+)\s+(?P<name>.*?)\s+trace=(?P<trace>[0-9a-f]{32})"
    r"\s+span=(?P<span>[0-9a-f]{16})\s+parent=(?P<parent>\S+)\s+start=(?P<start>[0-9.]+)"
    r"\s+(?P<ms>[0-9.]+)ms\s+status=(?P<status>ERROR \([^)]*\)|ERROR|OK|-)\s*(?P<attrs>.*)$"
)

EXTERNAL_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def order(session, amount, payment):
    return {
        "user_id": "user-1",
        "session_id": session,
        "amount": amount,
        "items": [{"sku": "book-42", "qty": 2}, {"sku": "pen-7", "qty": 1}],
        "payment_method": payment,
    }


REQUESTS = [
    ("approved", order("abc", 42.5, "visa"), {}),
    ("fraud: amount over 10000", order("abc", 20000, "visa"), {}),
    ("unknown session", order("nope", 42.5, "visa"), {}),
    ("card declined", order("xyz", 42.5, "declined"), {}),
    ("billing fails (amount 666)", order("xyz", 666, "visa"), {}),
    (
        "approved, continuing a caller's trace",
        order("xyz", 10, "visa"),
        {"traceparent": f"00-{EXTERNAL_TRACE}-00f067aa0ba902b7-01"},
    ),
]


class Host:
    """polytrace up, with its console spans collected."""

    def __init__(self, binary, listen, extra, env):
        self.spans = []
        self.records = []
        self.lock = threading.Lock()
        self.log = []
        self.addr = None
        self.viewer = None
        ready = threading.Event()
        self.proc = subprocess.Popen(
            [binary, "up", os.path.join(ROOT, "examples/checkout"), "--listen", listen, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

        def read_stderr():
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                v = re.search(r"viewer on (http://\S+)", line)
                if v:
                    self.viewer = v.group(1)
                m = re.search(r"listening on http://(\S+)", line)
                if m and not ready.is_set():
                    self.addr = m.group(1)
                    ready.set()
            ready.set()

        def read_stdout():
            for line in self.proc.stdout:
                m = SPAN_LINE.match(line)
                if m:
                    with self.lock:
                        self.spans.append(m.groupdict())
                elif line.startswith("{"):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    with self.lock:
                        self.records.append(record)

        threading.Thread(target=read_stderr, daemon=True).start()
        threading.Thread(target=read_stdout, daemon=True).start()
        ready.wait(300)
        if self.addr is None:
            self.proc.kill()
            sys.exit("demo: polytrace did not start:\n" + "\n".join(self.log[-20:]))

    def trace(self, trace_id, settle=0.6, limit=10.0):
        """The spans of a trace, once no new ones arrived for `settle` s."""
        started = time.monotonic()
        last, since = -1, time.monotonic()
        while time.monotonic() - started < limit:
            with self.lock:
                spans = [s for s in self.spans if s["trace"] == trace_id]
            if len(spans) != last:
                last, since = len(spans), time.monotonic()
            elif spans and time.monotonic() - since >= settle:
                break
            time.sleep(0.1)
        return spans

    def logs(self, trace_id):
        with self.lock:
            return sorted((r for r in self.records if r.get("trace_id") == trace_id), key=lambda r: r["time"])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def post(url, body, headers, method="POST"):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def tree(spans):
    """Lines of an indented tree: service, span name, duration, status."""
    ids = {s["span"] for s in spans}
    children = {}
    for s in spans:
        children.setdefault(s["parent"] if s["parent"] in ids else None, []).append(s)
    lines = []

    def walk(parent, depth):
        for s in sorted(children.get(parent, []), key=lambda s: float(s["start"])):
            status = "" if s["status"] == "-" else "  " + s["status"]
            name = s["name"]
            # A CLIENT span's name is the method alone: show where it went.
            target = re.search(r"url\.full=(\S+)", s["attrs"])
            if s["kind"] == "CLIENT" and target:
                name += " " + target.group(1)
            label = f"{'  ' * depth}{s['service']}: {s['kind'].lower()} {name}"
            lines.append(f"    {label:<72} {float(s['ms']):>8.2f} ms{status}")
            walk(s["span"], depth + 1)

    walk(None, 0)
    return lines


def metrics_summary(viewer):
    """The checkout's own counters from Prometheus /metrics, one line each."""
    try:
        with urllib.request.urlopen(f"{viewer}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError as e:
        return [f"    (metrics unavailable: {e})"]
    lines = []
    for name in ("orders_created_total", "verifications_performed_total", "sessions_loaded_total"):
        for line in text.splitlines():
            m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
            if m:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                job = labels.pop("job", "").split("/")[-1]
                labels.pop("otel_scope_name", None)
                shown = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
                lines.append(f"    {job:<16} {name:<32} {shown:<40} {float(m.group(2)):g}")
    return lines or ["    (no checkout metrics yet)"]


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--polytrace", default=os.path.join(ROOT, "target/release/polytrace"))
    args.add_argument("--listen", default=os.environ.get("POLYTRACE_LISTEN", "127.0.0.1:3000"))
    args.add_argument("--once", action="store_true", help="stop after printing the traces")
    args.add_argument("--ui", help="the viewer's address (default: polytrace's, 127.0.0.1:16686)")
    args.add_argument("--store", help="`memory`, or a file (default: beside the manifest)")
    opts = args.parse_args()

    env = dict(os.environ)
    backend = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    env["OTEL_TRACES_EXPORTER"] = "otlp,console" if backend else "console"
    if not backend:
        # Nothing to send metrics and logs to: they stay in /metrics, the
        # viewer and the console.
        env.setdefault("OTEL_METRICS_EXPORTER", "none")
        env.setdefault("OTEL_LOGS_EXPORTER", "none")
    env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")
    env.setdefault("OTEL_BLRP_SCHEDULE_DELAY", "200")
    extra = ["--guest-logs", "info,json"]
    if opts.ui:
        extra += ["--ui", opts.ui]
    if opts.store:
        extra += ["--store", opts.store]
    host = Host(opts.polytrace, opts.listen, extra, env)
    url = f"http://{host.addr}/checkout"
    try:
        print(f"\ndemo: examples/checkout is up at {url}")
        print("      api-gateway (Python) → fraud-service (Go) → session-service (JavaScript) → billing (Python)")
        print("      orders and charges in SQL, sessions in a key-value store (files beside the manifest)\n")
        # Sign-in's stand-in: the sessions the checkouts use.
        for session, user in (("abc", "user-1"), ("xyz", "user-2")):
            status, _, text = post(f"http://{host.addr}/sessions/{session}", {"user_id": user}, {}, "PUT")
            if status != 200:
                sys.exit(f"demo: creating session {session} failed with {status}: {text}")
        for label, body, headers in REQUESTS:
            status, response_headers, text = post(url, body, headers)
            trace_id = (response_headers.get("traceresponse") or "---").split("-")[1]
            print(f"── {label}: POST /checkout → {status}  {text.strip()}")
            print(f"   trace {trace_id}" + (f"   {host.viewer}/trace/{trace_id}" if host.viewer else ""))
            spans = host.trace(trace_id)
            print("\n".join(tree(spans)) if spans else "    (no spans arrived)")
            for r in host.logs(trace_id):
                print(f"    log  {r['service']}: {r['severity']:<5} {r['body'].splitlines()[0]}")
            print()
        if host.viewer:
            print("── metrics (Prometheus, " + host.viewer + "/metrics):")
            print("\n".join(metrics_summary(host.viewer)))
            print()
        if host.viewer:
            print(f"demo: the viewer is at {host.viewer} — search, waterfalls, the service map "
                  f"(Jaeger's query API is under {host.viewer}/api, for Grafana's Jaeger data source).")
        if backend:
            print(f"demo: these traces were also sent to {backend}: open your backend's UI (Jaeger: http://localhost:16686).")
        else:
            print("demo: to see these traces in Jaeger, start it with OTLP enabled (ports 4318, 16686) and run")
            print("      OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 ./scripts/demo.sh")
        if opts.once:
            return
        print(f"demo: still serving; try\n      curl -X POST {url} -d '{json.dumps(order('abc', 12.5, 'visa'))}'")
        print("      Ctrl-C stops the host (requests in flight finish, spans are flushed).")
        host.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()


if __name__ == "__main__":
    main()
