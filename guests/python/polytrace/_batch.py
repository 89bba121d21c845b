"""Span operations through the host's ``span-batch`` interface, in the
marshal form (wit/telemetry.wit): each operation is a tuple, written by
``marshal.dumps`` (C in every CPython) and handed to the host at once, so
the host's state is what the per-call ``tracing.span`` resource would have
made it, operation by operation. It costs a third of the resource's path:
no resource object per span and no typed key-value objects per attribute.

Attribute dicts go to the host as they are: it keeps str, bool, int (64
bits), float and lists of one of those, and counts anything else on the
SERVER span (``polytrace.attributes.invalid``) instead of failing the span.
"""

import marshal
import sys

from componentize_py_types import Err
from wit_world.imports import span_batch as _span_batch

_dumps = marshal.dumps
_apply = _span_batch.apply
context_of = _span_batch.context_of
is_recording = _span_batch.is_recording

# The operations (wit/telemetry.wit, span-batch).
START = 1
START_WITH_PARENT = 2
SET_ATTRIBUTES = 3
ADD_EVENT = 4
RECORD_EXCEPTION = 5
SET_STATUS = 6
UPDATE_NAME = 7
END = 8

_last = 0


def handle():
    """A new span handle: not 0, unique among this instance's open spans."""
    global _last
    _last = _last % 0xFFFFFFFF + 1
    return _last


def send(op):
    """Apply one operation (a tuple) now."""
    try:
        data = _dumps((op,), 2)
    except ValueError:
        # A value marshal cannot write (an object of another class).
        data = _dumps((_plain_op(op),), 2)
    try:
        _apply(data)
    except Err as e:
        # A value the host cannot read inside a marshallable one (a code
        # object): once more with plain values, else said on stderr.
        try:
            _apply(_dumps((_plain_op(op),), 2))
        except Err:
            print(f"polytrace: {e.value}", file=sys.stderr)


# Where each operation carries its attributes.
_ATTRIBUTES_AT = {START: 5, START_WITH_PARENT: 5, SET_ATTRIBUTES: 2, ADD_EVENT: 4}


def _plain_op(op):
    at = _ATTRIBUTES_AT.get(op[0])
    if at is None:
        return op
    op = list(op)
    op[at] = plain_attributes(op[at])
    return tuple(op)


def plain_attributes(attributes):
    """``attributes`` with only the types marshal writes and the host reads:
    subclasses (an IntEnum, a str subclass) as their base type, anything
    else None (which the host counts as invalid)."""
    if not attributes:
        return {}
    return {str(k): _plain(v) for k, v in dict(attributes).items() if isinstance(k, str)}


def _scalar(value):
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return None


def _plain(value):
    """A value as the host reads it, or None: a scalar, or a list of
    scalars (a list inside a list is no attribute value, and nested deep
    enough the host would refuse the whole operation)."""
    if isinstance(value, (list, tuple)):
        items = [_scalar(i) for i in value]
        return None if any(i is None for i in items) else items
    return _scalar(value)
