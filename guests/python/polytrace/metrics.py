"""Metric instruments supplied by the host::

    from polytrace import metrics

    metrics.counter("orders.created", unit="{order}").add(1, {"status": "approved"})

An instance lives for one request, so instruments are made where they are
used; asking again for the same name and kind returns the same instrument
(a dictionary lookup here, a cheap lookup in the host, which aggregates
across requests and exports with this component's resource).
"""

from componentize_py_types import Err
from wit_world.imports import metrics as _metrics

from . import _attributes

_ERROR_KINDS = {
    _metrics.MetricError_InvalidName: "invalid-name",
    _metrics.MetricError_InvalidUnit: "invalid-unit",
    _metrics.MetricError_InvalidBoundaries: "invalid-boundaries",
    _metrics.MetricError_Rejected: "rejected",
}


class MetricError(ValueError):
    """The host refused an instrument; ``kind`` is ``invalid-name``,
    ``invalid-unit``, ``invalid-boundaries`` or ``rejected``."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


class _Instrument:
    __slots__ = ("_inner", "_method")

    def __init__(self, inner, method):
        self._inner = inner
        self._method = getattr(inner, method)


class Counter(_Instrument):
    def add(self, value, attributes=None):
        """Add a non-negative amount (the host ignores others)."""
        self._method(float(value), _attributes(attributes))


class UpDownCounter(_Instrument):
    def add(self, value, attributes=None):
        self._method(float(value), _attributes(attributes))


class Histogram(_Instrument):
    def record(self, value, attributes=None):
        self._method(float(value), _attributes(attributes))


class Gauge(_Instrument):
    def record(self, value, attributes=None):
        self._method(float(value), _attributes(attributes))


_made = {}


def _make(cls, method, create, name, *args):
    key = (cls, name.lower())
    made = _made.get(key)
    if made is None:
        try:
            made = cls(create(name, *args), method)
        except Err as e:
            error = e.value
            raise MetricError(_ERROR_KINDS.get(type(error), "rejected"), error.value) from None
        _made[key] = made
    return made


def counter(name, description="", unit=""):
    return _make(Counter, "add", _metrics.create_counter, name, description, unit)


def up_down_counter(name, description="", unit=""):
    return _make(UpDownCounter, "add", _metrics.create_up_down_counter, name, description, unit)


def histogram(name, description="", unit="", boundaries=None):
    """A histogram; ``boundaries`` are explicit bucket boundaries."""
    bounds = None if boundaries is None else [float(b) for b in boundaries]
    return _make(Histogram, "record", _metrics.create_histogram, name, description, unit, bounds)


def gauge(name, description="", unit=""):
    return _make(Gauge, "record", _metrics.create_gauge, name, description, unit)
