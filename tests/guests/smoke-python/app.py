"""A componentize-py component that uses the raw WIT bindings: proof that
the host runs Python components (several core modules, ~20 MB) with the same
tracing as Rust. The idiomatic Python SDK lives in guests/python."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import polytrace_telemetry_types as t
from wit_world.imports import tracing
from wit_world.imports.wasi_http_types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        span = tracing.Span(
            "py.work",
            tracing.SpanKind.INTERNAL,
            [
                t.KeyValue("py.text", t.Value_String("snake")),
                t.KeyValue("py.count", t.Value_S64(3)),
                t.KeyValue("py.ratio", t.Value_F64(0.5)),
                t.KeyValue("py.flag", t.Value_Bool(True)),
            ],
        )
        span.add_event("checkpoint", [t.KeyValue("step", t.Value_S64(1))], None)
        try:
            raise ValueError("python says no")
        except ValueError as e:
            span.record_exception(type(e).__name__, str(e), None, True)
        span.end(None)
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        stream.blocking_write_and_flush(b"hello from python")
        stream.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
