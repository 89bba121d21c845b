"""SQL through the host, as a DB-API 2.0 module (PEP 249): code written for
``sqlite3`` or psycopg2 runs with its import changed::

    from polytrace import dbapi

    conn = dbapi.connect("orders")          # a database the manifest grants
    with conn:                              # commit, or roll back on an exception
        cur = conn.cursor()
        cur.execute("INSERT INTO orders (id, item) VALUES (%s, %s)", (order_id, item))
    cur = conn.cursor()
    cur.execute("SELECT item FROM orders WHERE id = ?", (order_id,))
    row = cur.fetchone()

The host runs every statement and traces it (a CLIENT span per statement
under the current span, with the OpenTelemetry database conventions, and
``db.client.operation.duration``): there is nothing to instrument here.

- ``connect(name)`` names a database the component's manifest grants
  (``sql = { orders = "sqlite:orders.db" }``); the host connection opens at
  the first statement (module-level code runs while the component is built,
  where there is no host).
- Placeholders: ``?`` (``paramstyle`` is ``qmark``), and psycopg2's ``%s``
  and ``%(name)s`` (translated to ``?``; ``%%`` is a literal ``%``).
- Transactions as Python's ``sqlite3`` has them: an ``INSERT``,
  ``UPDATE``, ``DELETE`` or ``REPLACE`` begins one (reads never hold one
  open); ``commit()`` and ``rollback()`` end it; ``with conn:`` commits, or
  rolls back on an exception; ``autocommit = True`` runs each statement on
  its own. A transaction still open when the connection is closed, or when
  the request ends, is rolled back by the host.
- Values: ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``,
  ``bytes``; ``datetime``, ``date``, ``time`` and ``Decimal`` are sent as
  ISO text. Rows come back as tuples of ``None``, ``int``, ``float``,
  ``str`` and ``bytes`` (a TEXT value that is not UTF-8 comes back as
  ``bytes``). At most 100,000 rows and 64 MiB per statement
  (``DataError`` past that).
- Errors are the DB-API's: ``ProgrammingError`` (syntax, missing table),
  ``IntegrityError`` (constraints), ``DataError`` (values),
  ``OperationalError`` (a database not granted or unavailable, a statement
  past the request's deadline), ``DatabaseError`` (the rest), each with
  ``sqlstate``/``pgcode`` (the database's own code, SQLite's extended
  result code for SQLite) and ``kind``.
"""

import datetime
import decimal

from wit_world.imports import sql as _sql
from componentize_py_types import Err as _Err

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"


class Warning(Exception):  # noqa: A001 (the name PEP 249 gives it)
    pass


class Error(Exception):
    """A database error: ``kind`` (the host's ``error-kind``: ``syntax``,
    ``constraint``, ...), ``sqlstate`` (the database's own code; also
    ``pgcode``, as psycopg2 names it) and the message."""

    def __init__(self, message, kind="other", sqlstate=None):
        super().__init__(message)
        self.kind = kind
        self.sqlstate = sqlstate or None
        self.pgcode = self.sqlstate


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


_KINDS = {
    _sql.ErrorKind.NOT_GRANTED: ("not-granted", OperationalError),
    _sql.ErrorKind.UNAVAILABLE: ("unavailable", OperationalError),
    _sql.ErrorKind.SYNTAX: ("syntax", ProgrammingError),
    _sql.ErrorKind.CONSTRAINT: ("constraint", IntegrityError),
    _sql.ErrorKind.DATA: ("data", DataError),
    _sql.ErrorKind.TOO_LARGE: ("too-large", DataError),
    _sql.ErrorKind.TIMEOUT: ("timeout", OperationalError),
    _sql.ErrorKind.OTHER: ("other", DatabaseError),
}


def _call(function, *args):
    """``function(*args)``, its WIT error raised as the DB-API exception of
    its kind (without the bindings' exception chained to it)."""
    try:
        return function(*args)
    except _Err as e:
        err = e.value
    kind, cls = _KINDS.get(err.kind, ("other", DatabaseError))
    raise cls(err.message, kind, err.code)


def _value(v):
    if v is None:
        return _sql.Value_Null()
    if isinstance(v, bool):
        return _sql.Value_Boolean(v)
    if isinstance(v, int):
        if not -(1 << 63) <= v < (1 << 63):
            raise DataError(f"integer {v} does not fit in 64 bits", "data")
        return _sql.Value_Int64(v)
    if isinstance(v, float):
        return _sql.Value_Float64(v)
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(f"a parameter is not valid Unicode text: {e}", "data") from None
        return _sql.Value_Text(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _sql.Value_Blob(bytes(v))
    if isinstance(v, (datetime.date, datetime.time)):
        return _sql.Value_Text(v.isoformat())
    if isinstance(v, decimal.Decimal):
        return _sql.Value_Text(str(v))
    raise ProgrammingError(f"a parameter of type {type(v).__name__} cannot be sent to the database", "data")


def _python(v):
    if isinstance(v, _sql.Value_Null):
        return None
    return v.value


def _translate(statement, parameters):
    """``statement`` with psycopg2's ``%s`` / ``%(name)s`` placeholders as
    ``?``, and the parameters in placeholder order."""
    if parameters is None:
        return statement, []
    mapping = hasattr(parameters, "keys")
    if "%" not in statement:
        if mapping:
            raise ProgrammingError("named parameters need %(name)s placeholders", "syntax")
        return statement, list(parameters)
    out, ordered, i, quote = [], [], 0, None
    n = len(statement)
    while i < n:
        ch = statement[i]
        if quote:
            # psycopg2 formats the whole text: `%%` is `%` inside quotes too.
            if ch == "%" and statement.startswith("%%", i):
                out.append("%")
                i += 2
                continue
            out.append(ch)
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            out.append(ch)
            i += 1
            continue
        if ch == "%" and i + 1 < n:
            nxt = statement[i + 1]
            if nxt == "%":
                out.append("%")
                i += 2
                continue
            if nxt == "s" and not mapping:
                out.append("?")
                i += 2
                continue
            if nxt == "(" and mapping:
                end = statement.find(")s", i + 2)
                if end < 0:
                    raise ProgrammingError(f"unterminated placeholder at {statement[i:i + 20]!r}", "syntax")
                name = statement[i + 2 : end]
                if name not in parameters:
                    raise ProgrammingError(f"no parameter named {name!r}", "syntax")
                ordered.append(parameters[name])
                out.append("?")
                i = end + 2
                continue
        out.append(ch)
        i += 1
    return "".join(out), (ordered if mapping else list(parameters))


_DML = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _writes(statement):
    """Whether `statement` changes rows (sqlite3's rule for an implicit BEGIN)."""
    return statement.lstrip().upper().startswith(_DML)


class Connection:
    """A connection to one granted database (see the module's notes)."""

    def __init__(self, name):
        self.name = name
        self.autocommit = False
        self._host = None
        self._closed = False

    def _run(self, statement, values):
        if self._closed:
            raise InterfaceError("the connection is closed", "other")
        if self._host is None:
            self._host = _call(_sql.Connection.open, self.name)
        if not self.autocommit and _writes(statement) and not self._host.in_transaction():
            _call(self._host.execute, "BEGIN", [])
        return _call(self._host.execute, statement, values)

    def cursor(self):
        return Cursor(self)

    def execute(self, statement, parameters=None):
        """A cursor's ``execute``, as sqlite3's connection has it."""
        return self.cursor().execute(statement, parameters)

    def _end(self, statement):
        # Asked, not remembered: the host rolls back what a request leaves
        # open, and the code may have run BEGIN itself.
        if self._host is not None and self._host.in_transaction():
            _call(self._host.execute, statement, [])

    def commit(self):
        self._end("COMMIT")

    def rollback(self):
        self._end("ROLLBACK")

    def close(self):
        """Close the connection; a transaction still open is rolled back."""
        if self._host is not None:
            host, self._host = self._host, None
            host.__exit__(None, None, None)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # As psycopg2 and sqlite3: the transaction ends; the connection stays.
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        return False


class Cursor:
    """A DB-API cursor: ``execute``, ``executemany``, ``fetchone``,
    ``fetchmany``, ``fetchall``, ``description``, ``rowcount``."""

    arraysize = 1

    def __init__(self, connection):
        self.connection = connection
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self._rows = []
        self._at = 0

    def execute(self, statement, parameters=None):
        statement, ordered = _translate(statement, parameters)
        values = [_value(v) for v in ordered]
        outcome = self.connection._run(statement, values)
        if outcome.columns:
            self.description = tuple((c, None, None, None, None, None, None) for c in outcome.columns)
            self._rows = [tuple(_python(v) for v in row) for row in outcome.rows]
            self.rowcount = len(self._rows)
        else:
            self.description = None
            self._rows = []
            self.rowcount = outcome.rows_affected
        self._at = 0
        return self

    def executemany(self, statement, seq_of_parameters):
        total = 0
        for parameters in seq_of_parameters:
            self.execute(statement, parameters)
            total += max(self.rowcount, 0)
        self.rowcount = total
        return self

    def fetchone(self):
        if self._at >= len(self._rows):
            return None
        row = self._rows[self._at]
        self._at += 1
        return row

    def fetchmany(self, size=None):
        size = self.arraysize if size is None else size
        rows = self._rows[self._at : self._at + size]
        self._at += len(rows)
        return rows

    def fetchall(self):
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def close(self):
        self._rows = []

    def setinputsizes(self, sizes):
        pass

    def setoutputsize(self, size, column=None):
        pass

    def __iter__(self):
        return iter(self.fetchone, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


def connect(name):
    """A connection to the database the manifest grants as ``name``."""
    return Connection(name)
