"""polytrace guest SDK for Python components (componentize-py).

The host supplies the telemetry; this package makes it Pythonic::

    import polytrace

    with polytrace.span("validate_order", attributes={"order.items": 3}) as span:
        span.add_event("checkpoint", {"step": 1})
        ...  # an exception raised here is recorded on the span and re-raised

    @polytrace.traced("charge_card")
    def charge(card): ...

Outgoing wasi:http requests (see ``polytrace.http``) get CLIENT spans and
``traceparent`` from the host automatically. ``polytrace.metrics`` has
counters, histograms and gauges; ``polytrace.logs`` has log records, and
``logging`` records go to the host once polytrace is imported.
``polytrace.server`` reaches the request's SERVER span (route, attributes).

With the ``opentelemetry-api`` package bundled, importing polytrace makes it
the API's SDK (``polytrace.otel``): ``trace.get_tracer(__name__)`` and
``metrics.get_meter(__name__)`` work unchanged. ``polytrace.wsgi`` serves a
WSGI app (Flask) as the component's handler.
"""

import functools
import traceback

from wit_world.imports import polytrace_telemetry_types as _types
from wit_world.imports import tracing as _tracing

from . import _batch

SpanKind = _tracing.SpanKind


_SCALARS = {
    str: _types.Value_String,
    bool: _types.Value_Bool,
    int: _types.Value_S64,
    float: _types.Value_F64,
}


def _value(value):
    """A typed attribute value from a Python value."""
    # Exact types first (the common case, and True is an int in Python but
    # a bool in OpenTelemetry); subclasses and sequences below.
    make = _SCALARS.get(type(value))
    if make is not None:
        return make(value)
    if isinstance(value, bool):
        return _types.Value_Bool(value)
    if isinstance(value, int):
        return _types.Value_S64(int(value))
    if isinstance(value, float):
        return _types.Value_F64(float(value))
    if isinstance(value, str):
        return _types.Value_String(str(value))
    if isinstance(value, (list, tuple)):
        items = list(value)
        if all(isinstance(i, str) for i in items):
            return _types.Value_StringArray(items)
        if all(isinstance(i, bool) for i in items):
            return _types.Value_BoolArray(items)
        if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            return _types.Value_S64Array(items)
        if all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
            return _types.Value_F64Array([float(i) for i in items])
    raise TypeError(
        f"attribute value {value!r} is not a str, bool, int, float or a list of one of those"
    )


def exception_type(exception):
    """``exception.type`` of `exception`: its fully-qualified class name
    (``app.ProcessingError``), unqualified for built-ins (``ValueError``),
    as the semantic conventions ask and opentelemetry-sdk writes it."""
    cls = type(exception)
    module = cls.__module__
    return f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__


def _attributes(attributes):
    if not attributes:
        return []
    KeyValue = _types.KeyValue
    return [KeyValue(key, _value(value)) for key, value in attributes.items()]


# The host's code of each span kind (span-batch's span-kind order).
_KIND_CODES = {
    SpanKind.INTERNAL: 0,
    SpanKind.SERVER: 1,
    SpanKind.CLIENT: 2,
    SpanKind.PRODUCER: 3,
    SpanKind.CONSUMER: 4,
}
_INTERNAL = SpanKind.INTERNAL
_START = _batch.START


def _kind_code(kind):
    """The host's code of `kind`; a value that is not a SpanKind is
    INTERNAL (a bad kind must not fail the request)."""
    # An Enum member hashes in Python: the common kind by identity.
    if kind is _INTERNAL or not isinstance(kind, SpanKind):
        return 0
    return _KIND_CODES[kind]


def _attribute_dict(attributes):
    if not attributes:
        return {}
    return attributes if type(attributes) is dict else _batch.plain_attributes(attributes)


class Span:
    """A span; the current span while open. Use it as a context manager, or
    call ``end()``. Operations after the end do nothing; a span nobody
    holds any more ends then, as the host's span resource did.

    Attribute values are str, bool, int, float or a list of one of those;
    others are left out and counted on the SERVER span
    (``polytrace.attributes.invalid``)."""

    __slots__ = ("_handle", "_ended")

    def __init__(self, name, attributes=None, kind=SpanKind.INTERNAL):
        self._ended = True
        # This runs for every span: the common cases inline (a Python call
        # costs a few hundred ns in this interpreter).
        if type(name) is not str:
            name = str(name)
        if type(attributes) is not dict:
            attributes = _attribute_dict(attributes)
        h = _batch.handle()
        _batch.send((_START, h, 0 if kind is _INTERNAL else _kind_code(kind), None, name, attributes))
        self._handle = h
        self._ended = False

    def set_attribute(self, key, value):
        if not self._ended:
            _batch.send((_batch.SET_ATTRIBUTES, self._handle, {key: value}))

    def set_attributes(self, attributes):
        if not self._ended:
            _batch.send((_batch.SET_ATTRIBUTES, self._handle, _attribute_dict(attributes)))

    def add_event(self, name, attributes=None):
        if not self._ended:
            _batch.send((_batch.ADD_EVENT, self._handle, None, str(name), _attribute_dict(attributes)))

    def record_exception(self, exception, set_error_status=True):
        """Record an exception as an ``exception`` event with its traceback."""
        if self._ended:
            return
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        _batch.send(
            (_batch.RECORD_EXCEPTION, self._handle, None, exception_type(exception), str(exception), stack, bool(set_error_status))
        )

    def set_status_error(self, description=""):
        if not self._ended:
            _batch.send((_batch.SET_STATUS, self._handle, 2, str(description)))

    def set_status_ok(self):
        if not self._ended:
            _batch.send((_batch.SET_STATUS, self._handle, 1, ""))

    def update_name(self, name):
        if not self._ended:
            _batch.send((_batch.UPDATE_NAME, self._handle, str(name)))

    @property
    def context(self):
        """The span's context; ``None`` once it has ended."""
        return None if self._ended else _batch.context_of(self._handle)

    @property
    def is_recording(self):
        return not self._ended and _batch.is_recording(self._handle)

    def end(self):
        """End the span. Later calls on the span do nothing."""
        if not self._ended:
            self._ended = True
            _batch.send((_batch.END, self._handle, None))

    def __del__(self):
        self.end()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None:
            self.record_exception(exc)
        self.end()
        return False


def span(name, attributes=None, kind=SpanKind.INTERNAL):
    """Start a span under the current one: ``with polytrace.span("x"): ...``."""
    return Span(name, attributes, kind)


def traced(name=None, attributes=None):
    """Decorator: run the function in a span named ``name`` (default: the
    function's qualified name); exceptions are recorded and re-raised."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with Span(name or function.__qualname__, attributes):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def current_span_context():
    return _tracing.current_span_context()


def inject():
    """W3C headers for the current span, for transports other than wasi:http."""
    return _tracing.inject()


def extract(headers):
    return _tracing.extract(list(headers))


# Imported last: they use _attributes above.
from . import logs, metrics, server  # noqa: E402

try:
    import opentelemetry.trace  # noqa: F401  (bundled when requirements.txt lists opentelemetry-api)
except ImportError:
    pass
else:
    from . import otel  # noqa: F401  (polytrace becomes the OpenTelemetry API's SDK)
