"""The request's SERVER span, which the host makes: what a web framework
knows about the request and the host cannot see::

    from polytrace import server

    server.set_route("/orders/<order_id>")      # http.route, span name "GET /orders/<order_id>"
    server.set_attributes({"order.id": "o-42"})
    server.record_exception(error)              # an ``exception`` event

``polytrace.wsgi`` calls these for Flask apps; with the OpenTelemetry API,
``trace.get_current_span()`` in a view is the SERVER span and its
``set_attribute`` / ``record_exception`` land here.
"""

import traceback

from wit_world.imports import server as _server

from . import _attributes, exception_type


def set_route(route):
    """The route template the framework matched, in its own syntax (never
    the request's own path: the route is a low-cardinality name)."""
    if route:
        _server.set_route(str(route))


def set_attributes(attributes):
    """Attributes for the SERVER span; the host's own HTTP attributes
    (``http.*``, ``url.*``, ...) cannot be replaced."""
    if attributes:
        _server.set_attributes(_attributes(attributes))


def record_exception(exception):
    """Record ``exception`` on the SERVER span, with its traceback."""
    stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    _server.record_exception(exception_type(exception), str(exception), stack)
