// hello-go: the same behaviour as hello-rust, with the Go SDK.
//
// GET /hello?next=URL → span `hello.work` with one attribute of each type and
// a `checkpoint` event; when `next` is given, an outgoing request to it (the
// host makes the CLIENT span and propagates the trace).
package export_wasi_http_incoming_handler

import (
	"encoding/json"

	"wit_component/polytrace"
	http "wit_component/wasi_http_types"
)

func Handle(request *http.IncomingRequest, out *http.ResponseOutparam) {
	r, err := polytrace.ReadRequest(request)
	if err != nil {
		polytrace.Respond(out, 400, "text/plain", []byte(err.Error()))
		return
	}
	name := r.Query.Get("name")
	if name == "" {
		name = "world"
	}
	span := polytrace.Start("hello.work",
		polytrace.String("hello.name", name),
		polytrace.Bool("hello.polite", true),
		polytrace.Int("hello.count", 3),
		polytrace.Float64("hello.ratio", 0.5),
		polytrace.Strings("hello.tags", []string{"a", "b"}),
		polytrace.Bools("hello.flags", []bool{true, false}),
		polytrace.Int64s("hello.numbers", []int64{1, 2, 3}),
		polytrace.Float64s("hello.weights", []float64{0.25, 0.75}),
	)
	span.AddEvent("checkpoint", polytrace.Int("step", 1))
	var next map[string]any
	if url := r.Query.Get("next"); url != "" {
		if status, _, err := polytrace.Send("GET", url, nil); err != nil {
			span.RecordError(err)
			next = map[string]any{"url": url, "error": err.Error()}
		} else {
			next = map[string]any{"url": url, "status": status}
		}
	}
	span.End()
	body, _ := json.Marshal(map[string]any{
		"service": "hello-go", "language": "go", "message": "hello", "next": next,
	})
	polytrace.Respond(out, 200, "application/json", body)
}
