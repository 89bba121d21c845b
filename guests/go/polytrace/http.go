package polytrace

import (
	"fmt"
	"net/url"
	"strings"

	outgoing "wit_component/wasi_http_outgoing_handler"
	wasihttp "wit_component/wasi_http_types"
	streams "wit_component/wasi_io_streams"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Request is an incoming request, read whole.
type Request struct {
	Method  string
	Path    string
	Query   url.Values
	Headers map[string]string
	Body    []byte
	// Every header in arrival order, names as sent and repeated names kept
	// (Headers keeps the last value of each lower-cased name).
	HeaderList [][2]string
	// "http" or "https", the authority (host and port) and the path with its
	// query, as the request line and Host header gave them.
	Scheme, Authority, PathWithQuery string
}

// ReadRequest reads the whole incoming request and releases it. The error
// says the body did not arrive whole (the client ended it before its
// Content-Length or its last chunk, or the connection failed): answer 400,
// never act on part of a body.
func ReadRequest(in *wasihttp.IncomingRequest) (Request, error) {
	defer HoldGC()() // every read below is copied in through cabi_realloc
	r := Request{Method: methodName(in.Method()), Headers: map[string]string{}, Scheme: "http"}
	pathWithQuery := in.PathWithQuery().SomeOr("/")
	r.PathWithQuery = pathWithQuery
	r.Authority = in.Authority().SomeOr("")
	if scheme := in.Scheme(); scheme.IsSome() && scheme.Some().Tag() == wasihttp.Scheme_Https {
		r.Scheme = "https"
	}
	headers := in.Headers()
	for _, h := range headers.Entries() {
		r.Headers[strings.ToLower(h.F0)] = string(h.F1)
		r.HeaderList = append(r.HeaderList, [2]string{h.F0, string(h.F1)})
	}
	headers.Drop()
	var err error
	if body := in.Consume(); body.IsOk() {
		if r.Body, err = readBody(body.Ok()); err != nil {
			err = fmt.Errorf("the request body %w", err)
		}
	}
	in.Drop()
	if u, err := url.ParseRequestURI(pathWithQuery); err == nil {
		r.Path, r.Query = u.Path, u.Query()
	} else {
		r.Path, r.Query = pathWithQuery, url.Values{}
	}
	return r, err
}

// readBody reads a body to its end, then releases the stream and the body
// (children before parents, as wasi:http requires). The error says how a
// body that did not arrive whole failed.
func readBody(body *wasihttp.IncomingBody) ([]byte, error) {
	var data []byte
	var failed error
	if stream := body.Stream(); stream.IsOk() {
		s := stream.Ok()
		for {
			chunk := s.BlockingRead(65536)
			if chunk.IsErr() {
				if e := chunk.Err(); e.Tag() == streams.StreamError_LastOperationFailed {
					cause := e.LastOperationFailed()
					failed = fmt.Errorf("ended early after %d bytes: %s", len(data), cause.ToDebugString())
					cause.Drop()
				}
				break
			}
			data = append(data, chunk.Ok()...)
		}
		s.Drop()
	}
	trailers := wasihttp.IncomingBodyFinish(body)
	defer trailers.Drop()
	for failed == nil {
		got := trailers.Get()
		if got.IsNone() {
			pollable := trailers.Subscribe()
			pollable.Block()
			pollable.Drop()
			continue
		}
		if inner := got.Some(); inner.IsOk() {
			if fields := inner.Ok(); fields.IsErr() {
				failed = fmt.Errorf("failed at its end: %s", errorCodeName(fields.Err()))
			} else if fields.Ok().IsSome() {
				fields.Ok().Some().Drop()
			}
		}
		break
	}
	return data, failed
}

// Respond answers with a status, a content type and a body.
func Respond(out *wasihttp.ResponseOutparam, status int, contentType string, body []byte) {
	headers := wasihttp.FieldsFromList([]witTypes.Tuple2[string, []uint8]{
		{F0: "content-type", F1: []uint8(contentType)},
	}).Ok()
	response := wasihttp.MakeOutgoingResponse(headers)
	response.SetStatusCode(uint16(status))
	outBody := response.Body().Ok()
	wasihttp.ResponseOutparamSet(out, witTypes.Ok[*wasihttp.OutgoingResponse, wasihttp.ErrorCode](response))
	writeBody(outBody, body)
}

// RespondWithHeaders answers with a status, headers (name, value pairs;
// names a wasi:http response may not carry, such as "connection", and
// invalid ones are left out) and a body.
func RespondWithHeaders(out *wasihttp.ResponseOutparam, status int, headers [][2]string, body []byte) {
	fields := wasihttp.MakeFields()
	for _, h := range headers {
		if forbidden[strings.ToLower(h[0])] {
			continue
		}
		fields.Append(h[0], []uint8(h[1])) // an error leaves the header out
	}
	response := wasihttp.MakeOutgoingResponse(fields)
	response.SetStatusCode(uint16(status))
	outBody := response.Body().Ok()
	wasihttp.ResponseOutparamSet(out, witTypes.Ok[*wasihttp.OutgoingResponse, wasihttp.ErrorCode](response))
	writeBody(outBody, body)
}

// Headers a wasi:http response may not carry: the host frames the connection.
var forbidden = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"upgrade": true, "host": true, "http2-settings": true, "te": true,
}

func writeBody(outBody *wasihttp.OutgoingBody, body []byte) {
	stream := outBody.Write().Ok()
	for len(body) > 0 {
		n := min(len(body), 4096)
		stream.BlockingWriteAndFlush(body[:n])
		body = body[n:]
	}
	stream.Drop()
	wasihttp.OutgoingBodyFinish(outBody, witTypes.None[*wasihttp.Fields]())
}

// HTTPError is an outgoing request that failed before a response arrived.
type HTTPError struct {
	URL  string
	Code string
}

func (e *HTTPError) Error() string { return e.URL + ": " + e.Code }

// Send makes an outgoing request and returns the status and body. A URL
// whose host is a component id (http://billing/charge) calls that component
// of the app in-process; the host adds the CLIENT span and traceparent.
func Send(method, rawURL string, body []byte) (int, []byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, nil, err
	}
	defer HoldGC()() // the response and its body are copied in through cabi_realloc
	request := wasihttp.MakeOutgoingRequest(wasihttp.MakeFields())
	request.SetMethod(makeMethod(method))
	if u.Scheme == "https" {
		request.SetScheme(witTypes.Some(wasihttp.MakeSchemeHttps()))
	} else {
		request.SetScheme(witTypes.Some(wasihttp.MakeSchemeHttp()))
	}
	request.SetAuthority(witTypes.Some(u.Host))
	request.SetPathWithQuery(witTypes.Some(u.RequestURI()))
	outBody := request.Body().Ok()
	result := outgoing.Handle(request, witTypes.None[*wasihttp.RequestOptions]())
	if result.IsErr() {
		outBody.Drop()
		return 0, nil, &HTTPError{URL: rawURL, Code: errorCodeName(result.Err())}
	}
	writeBody(outBody, body)
	future := result.Ok()
	defer future.Drop()
	for {
		got := future.Get()
		if got.IsSome() {
			inner := got.Some()
			if inner.IsErr() {
				return 0, nil, &HTTPError{URL: rawURL, Code: "response already taken"}
			}
			response := inner.Ok()
			if response.IsErr() {
				return 0, nil, &HTTPError{URL: rawURL, Code: errorCodeName(response.Err())}
			}
			r := response.Ok()
			status := int(r.Status())
			var data []byte
			var err error
			if b := r.Consume(); b.IsOk() {
				data, err = readBody(b.Ok())
			}
			r.Drop()
			if err != nil {
				return 0, nil, &HTTPError{URL: rawURL, Code: "the response body " + err.Error()}
			}
			return status, data, nil
		}
		pollable := future.Subscribe()
		pollable.Block()
		pollable.Drop()
	}
}

var methods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

func methodName(m wasihttp.Method) string {
	if m.Tag() == wasihttp.Method_Other {
		return m.Other()
	}
	return methods[m.Tag()]
}

func makeMethod(name string) wasihttp.Method {
	switch strings.ToUpper(name) {
	case "GET":
		return wasihttp.MakeMethodGet()
	case "HEAD":
		return wasihttp.MakeMethodHead()
	case "POST":
		return wasihttp.MakeMethodPost()
	case "PUT":
		return wasihttp.MakeMethodPut()
	case "DELETE":
		return wasihttp.MakeMethodDelete()
	case "OPTIONS":
		return wasihttp.MakeMethodOptions()
	case "PATCH":
		return wasihttp.MakeMethodPatch()
	}
	return wasihttp.MakeMethodOther(name)
}

// errorCodeNames spells the common wasi:http error codes as the WIT does.
var errorCodeNames = map[uint8]string{
	wasihttp.ErrorCode_DnsTimeout:             "DNS-timeout",
	wasihttp.ErrorCode_DnsError:               "DNS-error",
	wasihttp.ErrorCode_DestinationNotFound:    "destination-not-found",
	wasihttp.ErrorCode_DestinationUnavailable: "destination-unavailable",
	wasihttp.ErrorCode_ConnectionRefused:      "connection-refused",
	wasihttp.ErrorCode_ConnectionTerminated:   "connection-terminated",
	wasihttp.ErrorCode_ConnectionTimeout:      "connection-timeout",
	wasihttp.ErrorCode_HttpRequestDenied:      "HTTP-request-denied",
	wasihttp.ErrorCode_HttpRequestUriInvalid:  "HTTP-request-URI-invalid",
	wasihttp.ErrorCode_HttpResponseTimeout:    "HTTP-response-timeout",
	wasihttp.ErrorCode_HttpProtocolError:      "HTTP-protocol-error",
	wasihttp.ErrorCode_LoopDetected:           "loop-detected",
	wasihttp.ErrorCode_ConfigurationError:     "configuration-error",
}

// errorCodeName names a wasi:http error code as the WIT spells it.
func errorCodeName(code wasihttp.ErrorCode) string {
	if name, ok := errorCodeNames[code.Tag()]; ok {
		return name
	}
	if code.Tag() == wasihttp.ErrorCode_InternalError {
		return "internal-error: " + code.InternalError().SomeOr("")
	}
	return fmt.Sprintf("error-code %d", code.Tag())
}
