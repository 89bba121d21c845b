"""gunicorn configuration for hello_flask.py (the native Flask hello service
of the side-by-side benchmark) and flask_otel.py (which sets its SDK
up on import): for hello_flask, sets the OpenTelemetry SDK up in every worker
after the fork, so each has its own BatchSpanProcessor thread, and flushes it
when the worker exits. Bind and worker count default to 127.0.0.1:$PORT and 2
sync workers; -b and -w on the command line override them.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = 2
worker_class = "sync"
# No runtime control socket (gunicorn makes one in ~/.gunicorn by default,
# shared by every gunicorn the user runs).
control_socket_disable = True


def when_ready(server):
    for listener in server.LISTENERS:
        print(f"listening on {listener}", flush=True)


def post_fork(server, worker):
    # flask_otel.py sets its SDK up when a worker imports it.
    if (server.cfg.wsgi_app or "").startswith("hello_flask"):
        import hello_flask

        hello_flask.setup_tracing()


def worker_exit(server, worker):
    if (server.cfg.wsgi_app or "").startswith("hello_flask"):
        import hello_flask

        hello_flask.shutdown_tracing()
