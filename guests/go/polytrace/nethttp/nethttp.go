// Package nethttp serves a component's requests with any net/http Handler:
// a ServeMux with Go 1.22 patterns ("GET /sessions/{id}"), or a router
// built on the standard library. One line connects it to wasi:http:
//
//	var mux = newMux() // the service's own net/http code
//
//	func Handle(request *http.IncomingRequest, out *http.ResponseOutparam) {
//		nethttp.Serve(mux, request, out)
//	}
//
// A mux wrapped in middleware (logging(auth(mux))) reports its route when
// it is made with nethttp.NewServeMux instead of http.NewServeMux.
//
// r.Context() carries the request's SERVER span: the OpenTelemetry-shaped
// API (wit_component/polytrace/otel) starts children of it with
// tracer.Start(r.Context(), ...). A ServeMux's matched pattern becomes the
// route (http.route, the SERVER span's name). A handler that panics is a
// 500 with the panic on the SERVER span, and the instance keeps serving.
//
// The request body is read whole before the handler runs, and the response
// is sent once the handler returns.
package nethttp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"

	"wit_component/polytrace"
	"wit_component/polytrace/otel/trace"
	wasihttp "wit_component/wasi_http_types"
)

// Serve answers one wasi:http request with h.
func Serve(h http.Handler, in *wasihttp.IncomingRequest, out *wasihttp.ResponseOutparam) {
	req, err := polytrace.ReadRequest(in)
	if err != nil {
		polytrace.Respond(out, 400, "text/plain; charset=utf-8", []byte(err.Error()+"\n"))
		return
	}
	holder := &routeHolder{}
	ctx := context.WithValue(trace.ServerContext(context.Background()), routeKey{}, holder)
	r, err := request(ctx, req)
	if err != nil {
		polytrace.Respond(out, 400, "text/plain; charset=utf-8", []byte(err.Error()+"\n"))
		return
	}
	w := &writer{header: http.Header{}}
	if panicked := run(h, w, r); panicked {
		w = &writer{header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, status: 500}
		w.body.WriteString("Internal Server Error\n")
	}
	pattern := r.Pattern
	if pattern == "" {
		pattern = holder.pattern // a nethttp.ServeMux behind middleware
	}
	if route := Route(pattern); route != "" {
		polytrace.SetRoute(route)
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	headers := make([][2]string, 0, len(w.header))
	for name, values := range w.header {
		for _, v := range values {
			headers = append(headers, [2]string{strings.ToLower(name), v})
		}
	}
	if w.header.Get("Content-Type") == "" && w.body.Len() > 0 {
		// As net/http's server does: sniff what the handler did not say.
		headers = append(headers, [2]string{"content-type", http.DetectContentType(w.body.Bytes())})
	}
	polytrace.RespondWithHeaders(out, status, headers, w.body.Bytes())
}

// run calls the handler; a panic is recorded on the SERVER span and logged.
func run(h http.Handler, w http.ResponseWriter, r *http.Request) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panicked = true
				return
			}
			panicked = true
			kind := "panic"
			if err, ok := v.(error); ok {
				kind = fmt.Sprintf("%T", err)
			}
			stack := string(debug.Stack())
			polytrace.RecordServerException(kind, fmt.Sprint(v), stack)
			slog.Error("panic serving "+r.Method+" "+r.URL.RequestURI(), "exception.message", fmt.Sprint(v))
		}
	}()
	h.ServeHTTP(w, r)
	return false
}

// request builds the *http.Request the handler sees.
func request(ctx context.Context, req polytrace.Request) (*http.Request, error) {
	target := req.Scheme + "://" + req.Authority + req.PathWithQuery
	if req.Authority == "" {
		target = req.Scheme + "://localhost" + req.PathWithQuery
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, target, bytes.NewReader(req.Body))
	if err != nil {
		return nil, fmt.Errorf("bad request target %q: %w", req.PathWithQuery, err)
	}
	// As a server's request has them: an origin-form URL, the Host header
	// in r.Host.
	if u, err := url.ParseRequestURI(req.PathWithQuery); err == nil {
		r.URL = u
	}
	r.Host = req.Authority
	r.RequestURI = req.PathWithQuery
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.ContentLength = int64(len(req.Body))
	if len(req.Body) == 0 {
		r.Body = http.NoBody
	}
	for _, h := range req.HeaderList {
		r.Header.Add(h[0], h[1])
	}
	if host := r.Header.Get("Host"); host != "" {
		r.Host = host
	}
	r.Header.Del("Host")
	return r, nil
}

type routeKey struct{}

// routeHolder carries the pattern a ServeMux matched out of middleware,
// which hands the mux a copy of the request (r.WithContext).
type routeHolder struct{ pattern string }

// ServeMux is http.ServeMux that also reports its matched pattern when
// middleware wraps it: Serve reads r.Pattern from the request it made, and
// a middleware's copy of the request takes the mux's pattern with it. Use
// NewServeMux where the service calls http.NewServeMux; everything else
// is the standard mux.
type ServeMux struct{ *http.ServeMux }

// NewServeMux is http.NewServeMux, reporting its route through middleware.
func NewServeMux() *ServeMux { return &ServeMux{http.NewServeMux()} }

func (m *ServeMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Deferred: a handler that panics still has its route.
	defer func() {
		if h, ok := r.Context().Value(routeKey{}).(*routeHolder); ok && r.Pattern != "" {
			h.pattern = r.Pattern
		}
	}()
	m.ServeMux.ServeHTTP(w, r)
}

// Route is the route template of a ServeMux pattern: its path, without
// the method and host ("GET example.com/sessions/{id}" → "/sessions/{id}").
func Route(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = strings.TrimLeft(pattern[i+1:], " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return ""
}

// writer buffers the response.
type writer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *writer) Header() http.Header { return w.header }

func (w *writer) WriteHeader(status int) {
	if w.status == 0 && status >= 100 && status <= 999 {
		w.status = status
	}
}

func (w *writer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(p)
}

// Flush is accepted (http.Flusher); the response goes out when the handler returns.
func (w *writer) Flush() {}
