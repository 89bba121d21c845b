"""Log records supplied by the host, stamped with the current span.

Importing polytrace attaches a :class:`LogHandler` to the root logger (and
lowers the root level from the default WARNING to INFO), so
``logging.getLogger(__name__).info("...")`` just works. The direct helpers
take attributes::

    from polytrace import logs

    logs.warn("card declined", {"payment.method": "card"})

``print`` works too: every line on stdout is an INFO record, on stderr a
WARN record.
"""

import logging
import traceback

from wit_world.imports import logs as _logs

from . import _attributes

TRACE, DEBUG, INFO, WARN, ERROR, FATAL = 1, 5, 9, 13, 17, 21


def emit(severity, body, attributes=None):
    """Emit a record with an OpenTelemetry severity number."""
    _logs.emit(severity, str(body), _attributes(attributes))


def enabled(severity):
    return _logs.enabled(severity)


def debug(body, attributes=None):
    emit(DEBUG, body, attributes)


def info(body, attributes=None):
    emit(INFO, body, attributes)


def warn(body, attributes=None):
    emit(WARN, body, attributes)


def error(body, attributes=None):
    emit(ERROR, body, attributes)


def _severity(levelno):
    if levelno >= logging.CRITICAL:
        return FATAL
    if levelno >= logging.ERROR:
        return ERROR
    if levelno >= logging.WARNING:
        return WARN
    if levelno >= logging.INFO:
        return INFO
    if levelno >= logging.DEBUG:
        return DEBUG
    return TRACE


class LogHandler(logging.Handler):
    """Python ``logging`` records as host log records: the message as the
    body, the logger and call site as ``code.*`` attributes, an exception
    as ``exception.*``, ``extra`` values of attribute types as attributes."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def emit(self, record):
        severity = _severity(record.levelno)
        try:
            if not _logs.enabled(severity):
                return
            attributes = {
                "code.namespace": record.name,
                "code.function.name": record.funcName,
                "code.file.path": record.pathname,
                "code.line.number": record.lineno,
            }
            for key, value in vars(record).items():
                if key not in self._STANDARD and isinstance(value, (str, bool, int, float)):
                    attributes[key] = value
            if record.exc_info and record.exc_info[1] is not None:
                kind, exc, tb = record.exc_info
                attributes["exception.type"] = kind.__name__
                attributes["exception.message"] = str(exc)
                attributes["exception.stacktrace"] = "".join(traceback.format_exception(kind, exc, tb))
            _logs.emit(severity, record.getMessage(), _attributes(attributes))
        except Exception:  # logging must never fail the request
            self.handleError(record)


def install(level=logging.INFO):
    """Attach the handler to the root logger once; done on import."""
    root = logging.getLogger()
    if not any(isinstance(h, LogHandler) for h in root.handlers):
        root.addHandler(LogHandler())
        if root.level == logging.WARNING:
            root.setLevel(level)


install()
