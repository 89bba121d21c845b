"""Serve a WSGI application (PEP 3333: Flask, or any WSGI callable) as the
component's wasi:http handler.

A directory with an ``app.py`` that defines a WSGI callable ``app`` and no
``IncomingHandler`` is built into such a component by
``scripts/build-guest.sh``, so an unchanged Flask app serves as it is::

    app = Flask(__name__)

    @app.get("/api/orders/<order_id>")
    def get_order(order_id): ...

By hand, the same is ``IncomingHandler = polytrace.wsgi.handler(app)``.

For a Flask app the bridge tells the host the matched route
(``/api/orders/<order_id>``: ``http.route`` and the SERVER span's name) and
records an exception that escapes a view on the SERVER span (Flask answers
500 itself). With the OpenTelemetry API bundled, the SERVER span is the
current span in a view, carrying the request's baggage. An exception that
escapes any other WSGI app is a 500 with the exception on the SERVER span.

The request body is read whole before the app runs, and the response body
is collected whole before it is sent.
"""

import io
import logging
import sys
from urllib.parse import unquote_to_bytes

from wit_world import exports

from . import server
from .http import Request, respond, respond_with_headers

try:
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate

    from . import otel as _otel
except ImportError:  # the OpenTelemetry API is not bundled
    _otel = None

_log = logging.getLogger("polytrace.wsgi")


def handler(app):
    """The component's ``IncomingHandler`` class, serving WSGI ``app``."""
    if not callable(app):
        raise TypeError(f"polytrace.wsgi.handler: {app!r} is not a WSGI application (a callable)")
    _connect_framework(app)

    class IncomingHandler(exports.IncomingHandler):
        def handle(self, request, response_out):
            serve(app, request, response_out)

    return IncomingHandler


def serve(app, incoming, response_out):
    """Answer one wasi:http request with WSGI ``app``."""
    request = Request(incoming)
    token = None
    if _otel is not None:
        carrier = {name.lower(): value.decode("latin-1") for name, value in request.headers}
        token = _context.attach(_otel.server_context(_propagate.extract(carrier)))
    try:
        status, headers, body = _call(app, environ(request))
    except Exception as e:  # noqa: BLE001 — any escape is the app's 500
        server.record_exception(e)
        _log.exception("error in WSGI application on %s %s", request.method, request.path_with_query)
        respond(response_out, 500, "text/plain; charset=utf-8", b"Internal Server Error\n")
        return
    finally:
        if token is not None:
            _context.detach(token)
    # The body is sent whole: its length is what it is. A HEAD response
    # states the GET response's length and carries no body (RFC 9110 9.3.2),
    # which wasi:http would count as a short body: no Content-Length then.
    head = request.method == "HEAD"
    fields = [(name, value.encode("latin-1")) for name, value in headers if name.lower() != "content-length"]
    if not head:
        fields.append(("content-length", str(len(body)).encode()))
    respond_with_headers(response_out, status, fields, b"" if head else body)


def _call(app, env):
    """Run the app: its status code, headers and whole body."""
    started = []
    chunks = []

    def start_response(status, headers, exc_info=None):
        if exc_info is not None and started:
            # Nothing has been sent yet (the body is buffered): the error
            # response replaces the first, as PEP 3333 allows.
            started.clear()
        elif started:
            raise AssertionError("start_response called twice without exc_info")
        started.append((status, headers))
        return chunks.append

    result = app(env, start_response)
    try:
        for chunk in result:
            if chunk:
                chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI application returned without calling start_response")
    status, headers = started[-1]
    return int(status.split(" ", 1)[0]), headers, b"".join(chunks)


def environ(request):
    """The PEP 3333 environ of ``request`` (a ``polytrace.http.Request``)."""
    path, _, query = request.path_with_query.partition("?")
    host, _, port = request.authority.rpartition(":") if ":" in request.authority else (request.authority, "", "")
    env = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        # PEP 3333: the bytes (percent-decoded path; the query as sent), as
        # latin-1 text.
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.encode("utf-8").decode("latin-1"),
        "SERVER_NAME": host or "localhost",
        "SERVER_PORT": port or ("443" if request.scheme == "https" else "80"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        key = name.upper().replace("-", "_")
        text = value.decode("latin-1")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[key] = text
        else:
            key = "HTTP_" + key
            # Repeated headers are one, comma-joined (RFC 9110 5.3); cookies
            # are joined as one Cookie header is (RFC 6265 5.4).
            joiner = "; " if key == "HTTP_COOKIE" else ","
            env[key] = env[key] + joiner + text if key in env else text
    if request.body and "CONTENT_LENGTH" not in env:
        env["CONTENT_LENGTH"] = str(len(request.body))
    return env


def _connect_framework(app):
    """Flask: tell the host the matched route, and record an exception that
    escapes a view (Flask turns it into a 500 itself)."""
    try:
        import flask
    except ImportError:
        return
    if not isinstance(app, flask.Flask):
        return

    def route(sender, **extra):
        rule = flask.request.url_rule
        if rule is not None:
            server.set_route(rule.rule)

    def exception(sender, exception, **extra):
        server.record_exception(exception)

    flask.request_started.connect(route, app, weak=False)
    flask.got_request_exception.connect(exception, app, weak=False)


# Modules of the standard library that packages often import inside
# functions: bundled by ``preload`` (see there).
_STDLIB = (
    "base64",
    "dataclasses",
    "datetime",
    "decimal",
    "email.message",
    "email.utils",
    # Codecs are found by name when first used (werkzeug encodes host names
    # with idna).
    "encodings.ascii",
    "encodings.idna",
    "encodings.latin_1",
    "encodings.punycode",
    "encodings.raw_unicode_escape",
    "encodings.unicode_escape",
    "encodings.utf_16",
    "encodings.utf_32",
    "encodings.utf_8",
    "gzip",
    "hashlib",
    "hmac",
    "http.cookies",
    "json",
    "logging.handlers",
    "mimetypes",
    "secrets",
    "traceback",
    "urllib.parse",
    "uuid",
    "zlib",
)


def preload(packages):
    """Import every module of ``packages`` (top-level names) and a few
    standard modules, ignoring those that fail.

    componentize-py bundles exactly the modules imported while it builds the
    component: a module first imported inside a function at request time
    would be missing (``ModuleNotFoundError``). The build calls this for the
    packages of ``requirements.txt``; a component's own modules should import
    what they need at the top."""
    import importlib
    import pkgutil

    for name in _STDLIB:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 — not every module exists under WASI
            pass
    for name in packages:
        try:
            module = importlib.import_module(name)
        except BaseException:  # noqa: BLE001 — a module that cannot load here is left out
            continue
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, name + ".", onerror=lambda _name: None):
            if info.name.endswith(".__main__"):
                continue
            try:
                importlib.import_module(info.name)
            except BaseException:  # noqa: BLE001
                pass
