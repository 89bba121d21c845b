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
``requirements.txt``). Spans are the host's ``tracing.span`` resources, so
API-made spans nest, export and obey the limits exactly as
``polytrace.span`` does; the host makes the SERVER and CLIENT spans.

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
* the instrumentation scope (``get_tracer(name)``) is the component's.

Invalid attribute values are dropped (the API's rule), never raised.
"""

from opentelemetry import context as _context
from opentelemetry import metrics as _metrics_api
from opentelemetry import trace as _trace
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util._decorator import _agnosticcontextmanager

from wit_world.imports import polytrace_telemetry_types as _types
from wit_world.imports import tracing as _tracing

from . import _value, exception_type
from . import metrics as _metrics
from . import server as _server

_KINDS = {
    _trace.SpanKind.INTERNAL: _tracing.SpanKind.INTERNAL,
    _trace.SpanKind.SERVER: _tracing.SpanKind.SERVER,
    _trace.SpanKind.CLIENT: _tracing.SpanKind.CLIENT,
    _trace.SpanKind.PRODUCER: _tracing.SpanKind.PRODUCER,
    _trace.SpanKind.CONSUMER: _tracing.SpanKind.CONSUMER,
}

_INTERNAL = _trace.SpanKind.INTERNAL

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


class Span(_trace.Span):
    """A span made through the API: the host's span resource behind the
    API's ``Span`` interface. Operations after ``end`` do nothing."""

    __slots__ = ("_span", "_ended", "_context", "_recording")

    def __init__(self, inner):
        self._span = inner
        # After the end: the handle, kept so that the span's context can
        # still be asked for (its host resource goes with this object).
        self._ended = None
        self._context = None
        self._recording = None
        _open.append(self)

    def _host_context(self):
        """The host's record of this span's context (one host call, once)."""
        if self._context is None:
            self._context = (self._span or self._ended).span_context()
        return self._context

    def get_span_context(self):
        return _to_api_context(self._host_context())

    def set_attribute(self, key, value):
        if self._span is not None:
            wit_value = _valid(value)
            if wit_value is not None:
                self._span.set_attribute(key, wit_value)

    def set_attributes(self, attributes):
        if self._span is not None:
            self._span.set_attributes(_attributes(attributes))

    def add_event(self, name, attributes=None, timestamp=None):
        if self._span is not None:
            self._span.add_event(name, _attributes(attributes), timestamp)

    def add_link(self, context, attributes=None):
        """Links are not recorded by the host (see the module's notes)."""

    def update_name(self, name):
        if self._span is not None:
            self._span.update_name(name)

    def is_recording(self):
        if self._span is None:
            return False
        if self._recording is None:
            self._recording = self._span.is_recording()
        return self._recording

    def set_status(self, status, description=None):
        if self._span is None:
            return
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.ERROR:
            self._span.set_status(_tracing.Status_Error(description or ""))
        elif code is StatusCode.OK:
            self._span.set_status(_tracing.Status_Ok())

    def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
        if self._span is not None:
            # The API sets the status itself (use_span): no status here.
            self._span.record_exception(exception_type(exception), str(exception), _stack(exception), False)

    def end(self, end_time=None):
        if self._span is None:
            return
        inner, self._span = self._span, None
        if _open and _open[-1] is self:
            _open.pop()
        else:
            try:
                _open.remove(self)
            except ValueError:
                pass
        inner.end(None if end_time is None else int(end_time))
        # Its context outlives it (children, links in logs): the handle is
        # kept until this object goes, and the host answers for it then.
        self._ended = inner


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
        parent = _trace.get_current_span(context)
        # SpanKind members hash in Python: the common kind by identity.
        host_kind = _tracing.SpanKind.INTERNAL if kind is _INTERNAL else _KINDS.get(kind, _tracing.SpanKind.INTERNAL)
        attrs = _attributes(attributes)
        if _host_current_is(parent):
            inner = _tracing.Span(str(name), host_kind, attrs)
        else:
            cx = parent._host_context() if isinstance(parent, Span) else _to_host_context(parent.get_span_context())
            inner = _tracing.Span.start_with_parent(str(name), host_kind, attrs, cx)
        return Span(inner)

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


def _host_current_is(parent):
    """Whether the host's current span is ``parent`` already, so the new
    span needs no explicit parent."""
    if isinstance(parent, Span):
        return bool(_open) and _open[-1] is parent
    if isinstance(parent, ServerSpan):
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
