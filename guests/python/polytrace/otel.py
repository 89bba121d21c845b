"""The OpenTelemetry API (the ``opentelemetry-api`` package), backed by the host.

Code written against the API runs unchanged; polytrace is its SDK::

    from opentelemetry import trace, metrics

    tracer = trace.get_tracer(__name__)
    orders = metrics.get_meter(__name__).create_counter("orders.created")

    with tracer.start_as_current_span("validate_order") as span:
        span.set_attribute("order.items", 3)
        orders.add(1, {"status": "approved"})

There is no provider, processor or exporter to set up: importing polytrace
installs :class:`TracerProvider` and :class:`MeterProvider` as the global
providers when the ``opentelemetry-api`` package is bundled (list it in
``requirements.txt``). Spans go to the host through ``span-batch``, as
``polytrace.span``'s do, so API-made spans nest, export and obey the limits
exactly as those; the host makes the SERVER and CLIENT spans.

What differs from the API's own SDK, all as its no-op implementation does:

* links (``links=``, ``add_link``) are dropped, and ``start_time`` is
  ignored: the host stamps a span's start;
* a span started with ``start_span`` (not made current) is still the host's
  current span until it ends, for outgoing requests and log records; spans
  nest by the API's context all the same;
* attributes given to ``record_exception`` are dropped (the ``exception.*``
  ones are recorded);
* observable instruments (callbacks) are no-ops: the host never calls into
  an instance between requests;
* the instrumentation scope (``get_tracer(name)``) is the component's;
* an ended span's context is the host's to give until 64 more spans have
  ended after it; past that ``get_span_context()`` of a span never asked
  for it before is invalid (ask while it is open to keep it).

Invalid attribute values are dropped (the API's rule), never raised; the
host counts them on the SERVER span (``polytrace.attributes.invalid``).
"""

from opentelemetry import context as _context
from opentelemetry import metrics as _metrics_api
from opentelemetry import trace as _trace
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util._decorator import _agnosticcontextmanager

from wit_world.imports import polytrace_telemetry_types as _types
from wit_world.imports import tracing as _tracing

from . import _attribute_dict, _batch, _value, exception_type
from . import metrics as _metrics
from . import server as _server

# The host's code of each API span kind (span-batch's span-kind order).
_KIND_CODES = {
    _trace.SpanKind.INTERNAL: 0,
    _trace.SpanKind.SERVER: 1,
    _trace.SpanKind.CLIENT: 2,
    _trace.SpanKind.PRODUCER: 3,
    _trace.SpanKind.CONSUMER: 4,
}

_INTERNAL = _trace.SpanKind.INTERNAL


def _kind_code(kind):
    """The host's code of an API span kind (INTERNAL for anything else)."""
    # SpanKind members hash in Python: the common kind by identity.
    if kind is _INTERNAL or not isinstance(kind, _trace.SpanKind):
        return 0
    return _KIND_CODES[kind]

# Spans this module started and has not ended, oldest first: the host makes
# the innermost of them current, so a span whose parent is that one (or, with
# none open, the SERVER span) needs no explicit parent.
_open = []


def _attributes(attributes):
    """Host key-values from API attributes, leaving out invalid values."""
    if not attributes:
        return []
    out = []
    KeyValue = _types.KeyValue
    for key, value in attributes.items():
        # _valid inlined: this runs for every attribute of every span.
        if value is None or not key or not isinstance(key, str):
            continue
        try:
            out.append(KeyValue(key, _value(value)))
        except TypeError:
            pass
    return out


def _valid(value):
    if value is None:
        return None
    try:
        return _value(value)
    except TypeError:
        return None


def _to_api_context(cx):
    """An API SpanContext from the host's ``span-context`` record."""
    if cx is None:
        return _trace.INVALID_SPAN_CONTEXT
    return SpanContext(
        trace_id=int(cx.trace_id, 16),
        span_id=int(cx.span_id, 16),
        is_remote=cx.is_remote,
        trace_flags=TraceFlags(cx.trace_flags),
        trace_state=TraceState.from_header([cx.trace_state]) if cx.trace_state else TraceState(),
    )


def _to_host_context(cx):
    """The host's ``span-context`` record from an API SpanContext."""
    return _tracing.SpanContext(
        format(cx.trace_id, "032x"),
        format(cx.span_id, "016x"),
        int(cx.trace_flags) & 0xFF,
        cx.trace_state.to_header() if cx.trace_state else "",
        bool(cx.is_remote),
    )


def _stack(exception):
    import traceback

    return "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))


class Span:
    """A span made through the API: a host span (``span-batch``) behind the
    API's ``Span`` interface. Operations after ``end`` do nothing.

    An ``opentelemetry.trace.Span`` by registration (``isinstance`` holds)
    rather than by inheritance: the API's base class has no ``__slots__``,
    and an instance with a ``__dict__`` costs ~0.7 µs more to make in this
    interpreter, on every span."""

    __slots__ = ("_handle", "_ended", "_context", "_recording")

    def __init__(self, handle):
        self._handle = handle
        self._ended = False
        self._context = None
        self._recording = None
        _open.append(self)

    def _host_context(self):
        """The host's record of this span's context (one host call, once;
        the host answers for a span until 64 more have ended after it)."""
        if self._context is None:
            self._context = _batch.context_of(self._handle)
        return self._context

    def get_span_context(self):
        return _to_api_context(self._host_context())

    def set_attribute(self, key, value):
        if not self._ended:
            _batch.send((_batch.SET_ATTRIBUTES, self._handle, {key: value}))

    def set_attributes(self, attributes):
        if not self._ended and attributes:
            _batch.send((_batch.SET_ATTRIBUTES, self._handle, _attribute_dict(attributes)))

    def add_event(self, name, attributes=None, timestamp=None):
        if not self._ended:
            _batch.send((_batch.ADD_EVENT, self._handle, _time(timestamp), str(name), _attribute_dict(attributes)))

    def add_link(self, context, attributes=None):
        """Links are not recorded by the host (see the module's notes)."""

    def update_name(self, name):
        if not self._ended:
            _batch.send((_batch.UPDATE_NAME, self._handle, str(name)))

    def is_recording(self):
        if self._ended:
            return False
        if self._recording is None:
            self._recording = _batch.is_recording(self._handle)
        return self._recording

    def set_status(self, status, description=None):
        if self._ended:
            return
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.ERROR:
            _batch.send((_batch.SET_STATUS, self._handle, 2, str(description or "")))
        elif code is StatusCode.OK:
            _batch.send((_batch.SET_STATUS, self._handle, 1, ""))

    def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
        if not self._ended:
            # The API sets the status itself (use_span): no status here.
            _batch.send(
                (_batch.RECORD_EXCEPTION, self._handle, _time(timestamp), exception_type(exception), str(exception), _stack(exception), False)
            )

    def end(self, end_time=None):
        if self._ended:
            return
        self._ended = True
        if _open and _open[-1] is self:
            _open.pop()
        else:
            try:
                _open.remove(self)
            except ValueError:
                pass
        _send((_END, self._handle, None if end_time is None else int(end_time)))

    # What the API's base class gives its subclasses: a span is a context
    # manager that ends it.
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.end()


_trace.Span.register(Span)


def _time(ns):
    """An API timestamp (ns since the epoch) for the host; None is now."""
    return None if ns is None else int(ns)


class ServerSpan(_trace.Span):
    """The request's SERVER span, which the host makes: the current span
    in a framework's view (``polytrace.wsgi`` puts it in the context).
    Attributes and exceptions go to the host's SERVER span; its name and
    status are the host's (from the route and the response)."""

    __slots__ = ("_context",)

    def __init__(self, host_context):
        self._context = host_context

    def get_span_context(self):
        return _to_api_context(self._context)

    def set_attribute(self, key, value):
        self.set_attributes({key: value})

    def set_attributes(self, attributes):
        valid = {k: v for k, v in (attributes or {}).items() if _valid(v) is not None}
        _server.set_attributes(valid)

    def add_event(self, name, attributes=None, timestamp=None):
        """Events on the SERVER span are not recorded (see the README)."""

    def add_link(self, context, attributes=None):
        """Links are not recorded by the host."""

    def update_name(self, name):
        """The host names the SERVER span after the route."""

    def is_recording(self):
        return bool(self._context.trace_flags & 1) if self._context else False

    def set_status(self, status, description=None):
        """The SERVER span's status follows the response status."""

    def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
        _server.record_exception(exception)

    def end(self, end_time=None):
        """The host ends the SERVER span when the response is done."""


def server_context(extracted=None):
    """A context whose current span is the request's SERVER span (with the
    baggage of ``extracted``, a context from ``propagate.extract``)."""
    _open.clear()
    host_context = _tracing.current_span_context()
    return _trace.set_span_in_context(ServerSpan(host_context), extracted)


class Tracer(_trace.Tracer):
    """Starts spans through the host; see the module's notes."""

    def start_span(
        self,
        name,
        context=None,
        kind=_trace.SpanKind.INTERNAL,
        attributes=None,
        links=None,
        start_time=None,
        record_exception=True,
        set_status_on_exception=True,
    ):
        # This runs for every span: the common cases inline (a Python call
        # costs a few hundred ns in this interpreter).
        if context is not None:
            parent = _trace.get_current_span(context)
        elif _context_get is None:
            parent = _trace.get_current_span()
        else:
            # trace.get_current_span() for the contextvars runtime context.
            # The API's Span is an ABC: isinstance against it is a Python
            # call (~0.5 µs here), so this module's own spans, and none,
            # are told by their type first.
            parent = _context_get().get(_SPAN_KEY)
            if parent is None:
                parent = _INVALID_SPAN
            elif type(parent) is not Span and type(parent) is not ServerSpan and not isinstance(parent, _API_SPAN):
                parent = _INVALID_SPAN
        code = 0 if kind is _INTERNAL else _kind_code(kind)
        if type(name) is not str:
            name = str(name)
        if type(attributes) is not dict:
            attributes = _attribute_dict(attributes)
        h = _batch.handle()
        if parent is _INVALID_SPAN or _host_current_is(parent):
            _batch.send((_START, h, code, None, name, attributes))
        else:
            cx = parent._host_context() if type(parent) is Span else _to_host_context(parent.get_span_context())
            if cx is None:
                # A parent the host no longer knows: under the current span.
                _batch.send((_START, h, code, None, name, attributes))
            else:
                _batch.send(
                    (
                        _batch.START_WITH_PARENT,
                        h,
                        code,
                        None,
                        name,
                        attributes,
                        cx.trace_id,
                        cx.span_id,
                        cx.trace_flags,
                        cx.is_remote,
                        cx.trace_state,
                    )
                )
        return Span(h)

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name,
        context=None,
        kind=_trace.SpanKind.INTERNAL,
        attributes=None,
        links=None,
        start_time=None,
        record_exception=True,
        set_status_on_exception=True,
        end_on_exit=True,
    ):
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception)
        with _trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def _context_reader():
    """The current context's getter for the default runtime context (the
    API's contextvars one), or None for any other: with it, reading the
    current span is one ContextVar read and a dict lookup instead of
    ``trace.get_current_span()``'s four Python calls, a third of an API
    span's cost in this interpreter."""
    runtime = getattr(_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is not ContextVarsRuntimeContext or var is None:
        return None
    return var.get


_context_get = _context_reader()
_API_SPAN = _trace.Span
_INVALID_SPAN = _trace.INVALID_SPAN


_START = _batch.START
_END = _batch.END
_send = _batch.send


def _host_current_is(parent):
    """Whether the host's current span is ``parent`` already, so the new
    span needs no explicit parent."""
    if parent is _INVALID_SPAN:
        # No span in the context: a handler without a framework bridge,
        # whose spans nest under the host's current span.
        return True
    # By type: isinstance against these (ABCs, as the API's Span is) costs
    # a Python call each.
    if type(parent) is Span:
        return bool(_open) and _open[-1] is parent
    if type(parent) is ServerSpan:
        return not _open
    # No span in the context: a handler without a framework bridge, whose
    # spans nest under the host's current span as with ``polytrace.span``.
    return not parent.get_span_context().is_valid


class TracerProvider(_trace.TracerProvider):
    """The global tracer provider: one tracer, the component's."""

    _tracer = Tracer()

    def get_tracer(self, instrumenting_module_name, instrumenting_library_version=None, schema_url=None, attributes=None):
        return self._tracer


class _Instrument:
    """An API instrument over a host instrument, made at its first
    measurement: instruments are usually created at import, which runs while
    the component is built, outside any request. Invalid attributes are
    dropped, as the API requires; an instrument the host refuses is logged
    once and records nothing."""

    def __init__(self, make, name, *args):
        self._make = make
        self._args = (name,) + args
        self._record = None

    def _measure(self, amount, attributes):
        record = self._record
        if record is None:
            if self._make is None:
                return
            record = self._record = _host_instrument(self._make, *self._args)
            self._make = None
            if record is None:
                return
        record(float(amount), _attributes(attributes))


class Counter(_Instrument, _metrics_api.Counter):
    def add(self, amount, attributes=None, context=None):
        self._measure(amount, attributes)


class UpDownCounter(_Instrument, _metrics_api.UpDownCounter):
    def add(self, amount, attributes=None, context=None):
        self._measure(amount, attributes)


class Histogram(_Instrument, _metrics_api.Histogram):
    def record(self, amount, attributes=None, context=None):
        self._measure(amount, attributes)


class Gauge(_Instrument, _metrics_api._Gauge):
    def set(self, amount, attributes=None, context=None):
        self._measure(amount, attributes)


def _host_instrument(make, name, *args):
    """The host instrument's recording method, or None (logged) when the
    host refuses it: the API never raises for a bad instrument."""
    try:
        instrument = make(name, *args)
    except _metrics.MetricError as e:
        import logging

        logging.getLogger("polytrace").warning("instrument %r not created: %s", name, e)
        return None
    return instrument._method


class Meter(_metrics_api.NoOpMeter):
    """Synchronous instruments go to the host; observable ones are the
    API's no-ops (see the module's notes)."""

    def create_counter(self, name, unit="", description=""):
        return Counter(_metrics.counter, name, description, unit)

    def create_up_down_counter(self, name, unit="", description=""):
        return UpDownCounter(_metrics.up_down_counter, name, description, unit)

    def create_histogram(self, name, unit="", description="", *, explicit_bucket_boundaries_advisory=None):
        return Histogram(_metrics.histogram, name, description, unit, explicit_bucket_boundaries_advisory)

    def create_gauge(self, name, unit="", description=""):
        return Gauge(_metrics.gauge, name, description, unit)


class MeterProvider(_metrics_api.MeterProvider):
    def get_meter(self, name, version=None, schema_url=None, attributes=None):
        return Meter(name, version, schema_url)


def install():
    """Make polytrace the API's SDK: global tracer and meter providers."""
    _trace.set_tracer_provider(TracerProvider())
    _metrics_api.set_meter_provider(MeterProvider())


install()
