// A Go component (Go 1.27, wasip1 + reactor adapter) that uses the raw
// wit-bindgen Go bindings: proof that the host runs Go components with the
// same tracing as Rust. The idiomatic Go SDK lives in guests/go.
package export_wasi_http_incoming_handler

import (
	. "wit_component/polytrace_telemetry_tracing"
	t "wit_component/polytrace_telemetry_types"
	http "wit_component/wasi_http_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

func Handle(request *http.IncomingRequest, out *http.ResponseOutparam) {
	request.Drop()
	span := MakeSpan("go.work", SpanKind_Internal, []t.KeyValue{
		{Key: "go.text", Value: t.MakeValueString("gopher")},
		{Key: "go.count", Value: t.MakeValueS64(3)},
		{Key: "go.ratio", Value: t.MakeValueF64(0.5)},
		{Key: "go.flag", Value: t.MakeValueBool(true)},
	})
	span.AddEvent("checkpoint", []t.KeyValue{{Key: "step", Value: t.MakeValueS64(1)}}, witTypes.None[uint64]())
	span.RecordException("*errors.errorString", "go says no", witTypes.None[string](), true)
	span.End(witTypes.None[uint64]())
	span.Drop()

	headers := http.FieldsFromList([]witTypes.Tuple2[string, []uint8]{
		{F0: "content-type", F1: []uint8("text/plain")},
	}).Ok()
	response := http.MakeOutgoingResponse(headers)
	body := response.Body().Ok()
	http.ResponseOutparamSet(out, witTypes.Ok[*http.OutgoingResponse, http.ErrorCode](response))
	stream := body.Write().Ok()
	stream.BlockingWriteAndFlush([]uint8("hello from go"))
	stream.Drop()
	http.OutgoingBodyFinish(body, witTypes.None[*http.Fields]())
}
