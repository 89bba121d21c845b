// Package sqldriver is a database/sql driver, registered as "polytrace",
// for the SQL databases the host supplies: code written for database/sql
// runs with its import and driver name changed.
//
//	import (
//		"database/sql"
//		_ "wit_component/polytrace/sqldriver"
//	)
//
//	db, _ := sql.Open("polytrace", "orders") // a database the manifest grants
//	row := db.QueryRowContext(r.Context(), "SELECT item FROM orders WHERE id = $1", id)
//	err := row.Scan(&item)
//
// The data source name is the name the component's manifest grants the
// database under (`sql = { orders = "sqlite:orders.db" }`). The host runs
// and traces every statement: a CLIENT span under the current span with the
// OpenTelemetry database conventions, and db.client.operation.duration.
//
// Placeholders: `?` and `$1`. Values sent: nil, int64, float64, bool,
// []byte, string, and time.Time (as RFC 3339 text). Values received: nil,
// int64, float64, string and []byte (TEXT that is not UTF-8). Transactions:
// BeginTx, Commit and Rollback (a transaction a request leaves open is
// rolled back by the host when the request ends). Errors are *Error, with
// the host's Kind ("syntax", "constraint", ...) and the database's Code.
// LastInsertId is not supported (use RETURNING).
package sqldriver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"time"

	"wit_component/polytrace"
	witsql "wit_component/polytrace_telemetry_sql"
)

func init() { sql.Register("polytrace", Driver{}) }

// Error is a database error: Kind is the host's (not-granted, unavailable,
// syntax, constraint, data, too-large, timeout, other), Code the database's
// own (SQLSTATE for PostgreSQL, SQLite's extended result code), Message its
// message.
type Error struct {
	Kind, Code, Message string
}

func (e *Error) Error() string { return e.Message }

var kinds = [...]string{"not-granted", "unavailable", "syntax", "constraint", "data", "too-large", "timeout", "other"}

func toError(e witsql.Error) error {
	kind := "other"
	if int(e.Kind) < len(kinds) {
		kind = kinds[e.Kind]
	}
	return &Error{Kind: kind, Code: e.Code, Message: e.Message}
}

// Driver opens connections to granted databases by name.
type Driver struct{}

// Open opens the database granted as name.
func (Driver) Open(name string) (driver.Conn, error) {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	r := witsql.ConnectionOpen(name)
	if r.IsErr() {
		return nil, toError(r.Err())
	}
	return &conn{host: r.Ok()}, nil
}

type conn struct {
	host *witsql.Connection
}

func (c *conn) run(query string, args []driver.NamedValue) (witsql.Outcome, error) {
	values := make([]witsql.Value, len(args))
	for i, a := range args {
		v, err := toValue(a.Value)
		if err != nil {
			return witsql.Outcome{}, err
		}
		values[i] = v
	}
	// The host makes the statement's span under its current span.
	polytrace.Flush()
	defer polytrace.HoldGC()() // the outcome is copied in through cabi_realloc
	r := c.host.Execute(query, values)
	if r.IsErr() {
		return witsql.Outcome{}, toError(r.Err())
	}
	return r.Ok(), nil
}

func toValue(v driver.Value) (witsql.Value, error) {
	switch x := v.(type) {
	case nil:
		return witsql.MakeValueNull(), nil
	case int64:
		return witsql.MakeValueInt64(x), nil
	case float64:
		return witsql.MakeValueFloat64(x), nil
	case bool:
		return witsql.MakeValueBoolean(x), nil
	case []byte:
		return witsql.MakeValueBlob(x), nil
	case string:
		return witsql.MakeValueText(x), nil
	case time.Time:
		return witsql.MakeValueText(x.Format(time.RFC3339Nano)), nil
	}
	return witsql.Value{}, &Error{Kind: "data", Message: "a parameter of this type cannot be sent to the database"}
}

func fromValue(v witsql.Value) driver.Value {
	switch v.Tag() {
	case witsql.Value_Int64:
		return v.Int64()
	case witsql.Value_Float64:
		return v.Float64()
	case witsql.Value_Boolean:
		return v.Boolean()
	case witsql.Value_Text:
		return v.Text()
	case witsql.Value_Blob:
		return v.Blob()
	}
	return nil
}

func (c *conn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	out, err := c.run(query, args)
	if err != nil {
		return nil, err
	}
	return result(out.RowsAffected), nil
}

func (c *conn) QueryContext(_ context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	out, err := c.run(query, args)
	if err != nil {
		return nil, err
	}
	return &rows{columns: out.Columns, rows: out.Rows}, nil
}

func (c *conn) Prepare(query string) (driver.Stmt, error) { return &stmt{c: c, query: query}, nil }

func (c *conn) Close() error {
	c.host.Drop()
	return nil
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *conn) BeginTx(_ context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.ReadOnly || opts.Isolation != driver.IsolationLevel(sql.LevelDefault) {
		return nil, errors.New("sqldriver: only default, read-write transactions")
	}
	if _, err := c.run("BEGIN", nil); err != nil {
		return nil, err
	}
	return tx{c}, nil
}

// CheckNamedValue accepts every value toValue sends (and time.Time).
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if nv.Name != "" {
		return errors.New("sqldriver: named parameters are not supported; use $1 or ?")
	}
	if _, ok := nv.Value.(time.Time); ok {
		return nil
	}
	v, err := driver.DefaultParameterConverter.ConvertValue(nv.Value)
	nv.Value = v
	return err
}

type tx struct{ c *conn }

func (t tx) Commit() error {
	_, err := t.c.run("COMMIT", nil)
	return err
}

func (t tx) Rollback() error {
	_, err := t.c.run("ROLLBACK", nil)
	return err
}

type stmt struct {
	c     *conn
	query string
}

func (s *stmt) Close() error  { return nil }
func (s *stmt) NumInput() int { return -1 }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.c.ExecContext(context.Background(), s.query, named(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.c.QueryContext(context.Background(), s.query, named(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.c.ExecContext(ctx, s.query, args)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.c.QueryContext(ctx, s.query, args)
}

func named(args []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, a := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return out
}

type result uint64

func (r result) LastInsertId() (int64, error) {
	return 0, errors.New("sqldriver: LastInsertId is not supported; use RETURNING")
}
func (r result) RowsAffected() (int64, error) { return int64(r), nil }

type rows struct {
	columns []string
	rows    [][]witsql.Value
	at      int
}

func (r *rows) Columns() []string { return r.columns }
func (r *rows) Close() error      { return nil }

func (r *rows) Next(dest []driver.Value) error {
	if r.at >= len(r.rows) {
		return io.EOF
	}
	for i, v := range r.rows[r.at] {
		dest[i] = fromValue(v)
	}
	r.at++
	return nil
}
