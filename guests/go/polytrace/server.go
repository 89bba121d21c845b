package polytrace

import (
	"fmt"
	"runtime/debug"

	server "wit_component/polytrace_telemetry_server"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// SetRoute tells the host the route template the request matched, in the
// router's own syntax ("/sessions/{id}"): the host sets http.route on the
// SERVER span and its duration metric, and names the span "GET
// /sessions/{id}". ServeHTTP does it for a ServeMux; never pass the
// request's own path (a route is a low-cardinality name).
func SetRoute(route string) {
	if route != "" {
		server.SetRoute(route)
	}
}

// SetServerAttributes adds attributes to the request's SERVER span; the
// host's own HTTP attributes (http.*, url.*, ...) cannot be replaced.
func SetServerAttributes(attrs ...Attribute) {
	if len(attrs) > 0 {
		batch.flush()
		server.SetAttributes(attrs)
	}
}

// RecordServerError records err as an exception event on the request's
// SERVER span, with the stack where it was recorded. A nil err is ignored.
func RecordServerError(err error) {
	if err != nil {
		RecordServerException(fmt.Sprintf("%T", err), err.Error(), string(debug.Stack()))
	}
}

// RecordServerException records an exception on the request's SERVER span.
func RecordServerException(exceptionType, message, stacktrace string) {
	batch.flush()
	server.RecordException(exceptionType, message, witTypes.Some(stacktrace))
}
