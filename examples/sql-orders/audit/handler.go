// audit: a Go net/http service reading the orders database with
// database/sql, as a Go team writes it; only the driver import and its name
// are polytrace's. Its statements are traced by the host exactly as the
// Python and JavaScript services' are.
//
//	GET /audit/orders/{id} → 200 {"id", "item", "quantity"}; unknown → 404
package export_wasi_http_incoming_handler

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"

	"wit_component/polytrace/nethttp"
	"wit_component/polytrace/otel"
	"wit_component/polytrace/otel/attribute"
	_ "wit_component/polytrace/sqldriver"
	wasihttp "wit_component/wasi_http_types"
)

var (
	db     = mustOpen()
	tracer = otel.Tracer("audit")
	mux    = routes()
)

// mustOpen prepares the pool; nothing connects until the first statement.
func mustOpen() *sql.DB {
	db, err := sql.Open("polytrace", "orders")
	if err != nil {
		panic(err)
	}
	return db
}

func routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /audit/orders/{id}", audit)
	return mux
}

// Handle serves every request with the mux.
func Handle(request *wasihttp.IncomingRequest, out *wasihttp.ResponseOutparam) {
	nethttp.Serve(mux, request, out)
}

func audit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, span := tracer.Start(r.Context(), "audit_order")
	defer span.End()
	span.SetAttributes(attribute.String("order.id", id))
	var item string
	var quantity int64
	err := db.QueryRowContext(ctx, "SELECT item, quantity FROM orders WHERE id = $1", id).Scan(&item, &quantity)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case errors.Is(err, sql.ErrNoRows):
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "no order " + id})
	case err != nil:
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
	default:
		json.NewEncoder(w).Encode(map[string]any{"id": id, "item": item, "quantity": quantity})
	}
}
