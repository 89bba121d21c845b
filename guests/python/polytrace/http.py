"""Small helpers over wasi:http for Python handlers: read a request, answer
it, make an outgoing request. The host adds CLIENT spans and propagation."""

from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as types


class Request:
    """An incoming request, read whole."""

    def __init__(self, incoming):
        method = incoming.method()
        self.method = method.value if isinstance(method, types.Method_Other) else type(method).__name__.split("_", 1)[1].upper()
        self.path_with_query = incoming.path_with_query() or "/"
        self.scheme = "https" if isinstance(incoming.scheme(), types.Scheme_Https) else "http"
        self.authority = incoming.authority() or ""
        with incoming.headers() as headers:
            self.headers = headers.entries()
        self.body = _read_body(incoming)
        # Children before parents: the host refuses to drop a resource whose
        # body or stream is still alive.
        incoming.__exit__(None, None, None)
        split = urlsplit(self.path_with_query)
        self.path = split.path
        self.query = {k: v[0] for k, v in parse_qs(split.query).items()}


def _read_body(message):
    """Read the whole body of an incoming request or response, dropping the
    stream and the body resources in order."""
    chunks = []
    with message.consume() as body:
        with body.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(65536))
                except Err as e:
                    if isinstance(e.value, streams.StreamError_Closed):
                        break
                    raise
    return b"".join(chunks)


def respond(response_out, status, content_type, body):
    """Answer with a status, a content type and a body."""
    respond_with_headers(response_out, status, [("content-type", content_type.encode())], body)


# Headers a wasi:http response may not carry (the host frames the connection).
_FORBIDDEN = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings", "te"))


def respond_with_headers(response_out, status, headers, body):
    """Answer with a status, ``headers`` (``(name, bytes)`` pairs; names a
    wasi:http response may not carry, such as ``connection``, are left out)
    and a body."""
    fields = types.Fields()
    for name, value in headers:
        if name.lower() not in _FORBIDDEN:
            try:
                fields.append(name, value)
            except Err:
                pass  # an invalid name or value: left out, as a proxy would
    response = types.OutgoingResponse(fields)
    response.set_status_code(status)
    outgoing = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    stream = outgoing.write()
    try:
        for i in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[i : i + 4096])
    except Err:
        # The client went away: the host records it; nothing more to send.
        stream.__exit__(None, None, None)
        return
    stream.__exit__(None, None, None)
    types.OutgoingBody.finish(outgoing, None)


class HttpError(Exception):
    """An outgoing request failed before a response arrived."""


def send(method, url, body=b""):
    """Send a request (``http://component-id/path`` calls another component of
    the app in-process) and return ``(status, body)``."""
    split = urlsplit(url)
    request = types.OutgoingRequest(types.Fields())
    request.set_method(_method(method))
    request.set_scheme(types.Scheme_Https() if split.scheme == "https" else types.Scheme_Http())
    request.set_authority(split.netloc)
    request.set_path_with_query(split.path + ("?" + split.query if split.query else "") or "/")
    outgoing = request.body()
    if body:
        stream = outgoing.write()
        stream.blocking_write_and_flush(body)
        stream.__exit__(None, None, None)
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        raise HttpError(f"{url}: {e.value}") from None
    types.OutgoingBody.finish(outgoing, None)
    while (result := future.get()) is None:
        future.subscribe().block()
    inner = result.value if isinstance(result, Ok) else None
    if not isinstance(inner, Ok):
        raise HttpError(f"{url}: {getattr(inner, 'value', inner)}")
    with inner.value as response:
        status = response.status()
        data = _read_body(response)
    future.__exit__(None, None, None)
    return status, data


def _method(name):
    known = {
        "GET": types.Method_Get,
        "HEAD": types.Method_Head,
        "POST": types.Method_Post,
        "PUT": types.Method_Put,
        "DELETE": types.Method_Delete,
        "PATCH": types.Method_Patch,
        "OPTIONS": types.Method_Options,
    }
    return known[name]() if name in known else types.Method_Other(name)
