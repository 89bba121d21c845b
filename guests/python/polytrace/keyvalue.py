"""Key-value stores the host supplies (``wasi:keyvalue``), for Python guests.

A store is one the manifest grants the component, opened by its name::

    # polytrace.toml:  keyvalue = { sessions = "sqlite:sessions.db" }
    #              or: keyvalue = { sessions = "redis://:${REDIS_PASSWORD}@cache:6379/0" }
    from polytrace import keyvalue

    sessions = keyvalue.open("sessions")
    sessions.set("s-1", b'{"user": "u-1"}')      # str values are stored as UTF-8
    sessions.get("s-1")                           # -> bytes, or None
    sessions.exists("s-1")                        # -> bool
    sessions.increment("visits:s-1")              # -> int (a Redis counter)
    sessions.delete("s-1")
    sessions.get_many(["a", "b"])                 # -> {"a": b"...", "b": None}
    sessions.set_many({"a": b"1", "b": b"2"})
    sessions.delete_many(["a", "b"])
    for key in sessions.keys(): ...

The host traces every operation (a CLIENT span under the current span,
``GET sessions``, with the database conventions; keys and values are never
recorded). Failures raise :class:`KeyValueError` (``kind`` is
``access-denied``, ``no-such-store``, ``unavailable``, ``timeout``,
``too-large``, ``data`` or ``other``).
"""

from typing import Dict, Iterable, Iterator, Mapping, Optional, Union

from componentize_py_types import Err as _Err
from wit_world.imports import atomics as _atomics
from wit_world.imports import batch as _batch
from wit_world.imports import store as _store

__all__ = ["KeyValueError", "Store", "open"]

Value = Union[bytes, bytearray, memoryview, str]


class KeyValueError(Exception):
    """A key-value operation failed: ``kind`` says how, ``str()`` what happened."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _error(e: _Err) -> KeyValueError:
    v = e.value
    if isinstance(v, _store.Error_AccessDenied):
        return KeyValueError("access-denied", "this key-value store is not granted to the component")
    if isinstance(v, _store.Error_NoSuchStore):
        return KeyValueError("no-such-store", "no such key-value store")
    text = str(getattr(v, "value", v))
    kind, sep, message = text.partition(": ")
    if sep and kind in ("unavailable", "timeout", "too-large", "data", "other"):
        return KeyValueError(kind, message)
    return KeyValueError("other", text)


def _bytes(value: Value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a key-value value is bytes or str, not {type(value).__name__}")


class Store:
    """A granted key-value store (a ``wasi:keyvalue`` bucket)."""

    def __init__(self, bucket: "_store.Bucket", name: str):
        self._bucket = bucket
        self.name = name

    def get(self, key: str) -> Optional[bytes]:
        """The value of ``key``, or None when there is none."""
        try:
            return self._bucket.get(key)
        except _Err as e:
            raise _error(e) from None

    def set(self, key: str, value: Value) -> None:
        """Set ``key`` to ``value`` (bytes; a str is stored as UTF-8)."""
        try:
            self._bucket.set(key, _bytes(value))
        except _Err as e:
            raise _error(e) from None

    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is not there."""
        try:
            self._bucket.delete(key)
        except _Err as e:
            raise _error(e) from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` has a value."""
        try:
            return self._bucket.exists(key)
        except _Err as e:
            raise _error(e) from None

    def increment(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` (0 or more) to the integer at ``key`` (0 when
        there is none), atomically; returns the new value."""
        if not isinstance(delta, int) or delta < 0:
            raise ValueError("an increment is an integer of 0 or more (wasi:keyvalue's u64)")
        try:
            return _atomics.increment(self._bucket, key, delta)
        except _Err as e:
            raise _error(e) from None

    def get_many(self, keys: Iterable[str]) -> Dict[str, Optional[bytes]]:
        """The values of ``keys`` in one operation: key → value or None."""
        keys = list(keys)
        try:
            found = _batch.get_many(self._bucket, keys)
        except _Err as e:
            raise _error(e) from None
        values: Dict[str, Optional[bytes]] = {k: None for k in keys}
        for pair in found:
            if pair is not None:
                values[pair[0]] = pair[1]
        return values

    def set_many(self, values: Mapping[str, Value]) -> None:
        """Set every key of ``values`` in one operation."""
        try:
            _batch.set_many(self._bucket, [(k, _bytes(v)) for k, v in values.items()])
        except _Err as e:
            raise _error(e) from None

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` in one operation."""
        try:
            _batch.delete_many(self._bucket, list(keys))
        except _Err as e:
            raise _error(e) from None

    def keys(self) -> Iterator[str]:
        """Every key, a page at a time (in no promised order; a key set or
        removed meanwhile may or may not be listed)."""
        cursor = None
        while True:
            try:
                page = self._bucket.list_keys(cursor)
            except _Err as e:
                raise _error(e) from None
            yield from page.keys
            cursor = page.cursor
            if cursor is None:
                return

    def close(self) -> None:
        """Let the host drop the bucket now (it does at the instance's end);
        the next :func:`open` of the name opens it again."""
        if _stores.get(self.name) is self:
            del _stores[self.name]
        self._bucket.__exit__(None, None, None)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The stores this instance has open, by name: a warm instance serves many
# requests, and each open would otherwise hold a host handle until the
# garbage collector ran (the host allows 16 per instance).
_stores: Dict[str, Store] = {}


def open(name: str) -> Store:  # noqa: A001 - the interface's own word
    """The key-value store the manifest grants under ``name``: opened on
    first use and kept for the instance's later requests."""
    store = _stores.get(name)
    if store is None:
        try:
            store = Store(_store.open(name), name)
        except _Err as e:
            raise _error(e) from None
        _stores[name] = store
    return store
