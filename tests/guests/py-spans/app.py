"""The Python SDK's spans at their edges (tests/tests/tracing.rs): values
that are not attribute values, subclasses of the ones that are, spans used
after their end and spans nobody holds.

    GET /  makes the spans; answers what the SDK said of the ended span
"""

import enum
import json

import polytrace
from polytrace.http import respond
from wit_world import exports


class Tag(str):
    pass


class Level(enum.IntEnum):
    LOW = 1


class Thing:
    pass


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        attributes = {
            "plain": "x",
            "sub.str": Tag("t"),
            "sub.int": Level.LOW,
            "numbers": [1, 2.5],
            "none": None,
            "object": Thing(),
            # Deeper than a batch may nest: the host refuses the operation,
            # the SDK sends it again with the value left out.
            "nested": [[["deep"]]],
        }
        with polytrace.span("py.values", attributes) as span:
            span.set_attribute("set.object", Thing())
            span.set_attribute("set.int", 7)
        ended = polytrace.span("py.ended")
        ended.end()
        ended.set_attribute("after.end", 1)
        # Not held: it ends when it goes, as the host's span resource did.
        polytrace.span("py.dropped")
        with polytrace.span("py.after"):
            pass
        body = {"context_after_end": ended.context, "recording_after_end": ended.is_recording}
        respond(response_out, 200, "application/json", json.dumps(body).encode())
