// The native side of tests/benches/sql_cost.rs for Go: N primary-key
// SELECTs with database/sql over lib/pq (Debian's golang-github-lib-pq-dev,
// the module proxy being out of reach here) on the server at URL, over one
// connection, the statement prepared once; prints {"n", "elapsed_ns"}.
//
//	target/native/pg_cost_go N URL
package main

import (
	"database/sql"
	"encoding/json"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	_ "github.com/lib/pq"
)

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	url := os.Args[2]
	if !strings.Contains(url, "sslmode=") {
		// As psycopg and node-postgres connect by default: no TLS on a
		// server without it (lib/pq's default is to require it).
		url += "?sslmode=disable"
	}
	db, err := sql.Open("postgres", url)
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	for _, statement := range []string{
		"CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
		"INSERT INTO items (id, name) VALUES (1, 'tea') ON CONFLICT (id) DO NOTHING",
	} {
		if _, err := db.Exec(statement); err != nil {
			log.Fatal(err)
		}
	}
	query, err := db.Prepare("SELECT name FROM items WHERE id = $1")
	if err != nil {
		log.Fatal(err)
	}
	run := func(count int) {
		for range count {
			var name string
			if err := query.QueryRow(1).Scan(&name); err != nil {
				log.Fatal(err)
			}
		}
	}
	run(min(n, 1000)) // warm up
	started := time.Now()
	run(n)
	elapsed := time.Since(started)
	json.NewEncoder(os.Stdout).Encode(map[string]int64{"n": int64(n), "elapsed_ns": elapsed.Nanoseconds()})
}
