// fraud-service, written as a Go team writes it: net/http with Go 1.22
// patterns and the OpenTelemetry API's shapes. Against the official
// packages, only the import paths differ (go.opentelemetry.io/otel/... →
// wit_component/polytrace/otel/...), the mux is nethttp.NewServeMux (for
// its route through the middleware), and Handle connects it to wasi:http
// in one line.
//
//	POST /verify            {"transaction_id", "amount"} → 200 approved, 403 denied
//	GET  /transactions/{id} → 200
//	GET  /panic             → a handler that panics: 500
package export_wasi_http_incoming_handler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"wit_component/polytrace/nethttp"
	"wit_component/polytrace/otel"
	"wit_component/polytrace/otel/attribute"
	"wit_component/polytrace/otel/codes"
	"wit_component/polytrace/otel/metric"
	"wit_component/polytrace/otel/trace"
	wasihttp "wit_component/wasi_http_types"
)

// FraudLimit is the amount above which a transaction is denied.
const FraudLimit = 10000.0

var (
	tracer = otel.Tracer("fraud-service")
	meter  = otel.Meter("fraud-service")
	mux    = routes()
)

// routes is the service's mux behind its middleware. nethttp.NewServeMux
// is http.NewServeMux that still reports its matched pattern (the route)
// when middleware hands it a copy of the request.
func routes() http.Handler {
	mux := nethttp.NewServeMux()
	mux.HandleFunc("POST /verify", verify)
	mux.HandleFunc("GET /transactions/{id}", transaction)
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) {
		panic("rules engine exploded")
	})
	return requestID(mux)
}

type requestIDKey struct{}

// requestID is ordinary middleware: the request id in the context, and a
// copy of the request for the mux.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// Handle serves every request with the mux.
func Handle(request *wasihttp.IncomingRequest, out *wasihttp.ResponseOutparam) {
	nethttp.Serve(mux, request, out)
}

type verifyRequest struct {
	TransactionID string  `json:"transaction_id"`
	Amount        float64 `json:"amount"`
}

func verify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad verify request: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, span := tracer.Start(r.Context(), "check_fraud_rules",
		trace.WithAttributes(attribute.String("transaction.id", req.TransactionID)))
	fraud := req.Amount > FraudLimit
	span.SetAttributes(attribute.Bool("fraud.detected", fraud))
	result, status := "approved", http.StatusOK
	if fraud {
		result, status = "denied", http.StatusForbidden
		err := fmt.Errorf("amount %.2f above the limit %.2f", req.Amount, FraudLimit)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		slog.WarnContext(ctx, "transaction denied", "transaction.id", req.TransactionID)
	}
	span.End()
	if verifications, err := meter.Int64Counter("verifications.performed",
		metric.WithDescription("Fraud verifications, by result"),
		metric.WithUnit("{verification}")); err == nil {
		verifications.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"transaction_id": req.TransactionID, "result": result})
}

func transaction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, span := tracer.Start(r.Context(), "load_transaction")
	span.SetAttributes(attribute.String("transaction.id", id))
	defer span.End()
	trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("transaction.id", id))
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"transaction_id": id})
}
