// Package codes has the shapes of go.opentelemetry.io/otel/codes: the
// status codes of span.SetStatus, with the official values.
package codes

// Code is a span status code.
type Code uint32

const (
	// Unset is the default status.
	Unset Code = 0
	// Error means the operation failed.
	Error Code = 1
	// Ok means the operation succeeded (set only to override an error).
	Ok Code = 2
)

func (c Code) String() string {
	switch c {
	case Error:
		return "Error"
	case Ok:
		return "Ok"
	}
	return "Unset"
}
