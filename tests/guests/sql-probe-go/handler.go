// The SQL benchmark guest in Go (tests/benches/sql_cost.rs): the same
// primary-key SELECT as tests/guests/sql-probe (Python), through
// database/sql and polytrace's driver, on the database granted as `bench`.
//
//	GET /sql-cost?n=N → {"n", "elapsed_ns"}: N queries, timed in the guest
package export_wasi_http_incoming_handler

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"wit_component/polytrace/nethttp"
	_ "wit_component/polytrace/sqldriver"
	wasihttp "wit_component/wasi_http_types"
)

var (
	db    = mustOpen()
	ready = false
)

func mustOpen() *sql.DB {
	db, err := sql.Open("polytrace", "bench")
	if err != nil {
		panic(err)
	}
	return db
}

// Handle serves /sql-cost.
func Handle(request *wasihttp.IncomingRequest, out *wasihttp.ResponseOutparam) {
	nethttp.Serve(http.HandlerFunc(cost), request, out)
}

func cost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !ready {
		for _, statement := range []string{
			"CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
			"INSERT INTO items (id, name) VALUES (1, 'tea') ON CONFLICT (id) DO UPDATE SET name = excluded.name",
		} {
			if _, err := db.ExecContext(ctx, statement); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		ready = true
	}
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil {
		n = 1000
	}
	started := time.Now()
	for range n {
		var name string
		if err := db.QueryRowContext(ctx, "SELECT name FROM items WHERE id = $1", 1).Scan(&name); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	elapsed := time.Since(started)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]int64{"n": int64(n), "elapsed_ns": elapsed.Nanoseconds()})
}
