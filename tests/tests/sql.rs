//! SQL supplied by the host (`polytrace:telemetry/sql`), through each
//! language's client, against the embedded SQLite backend and a real
//! PostgreSQL server: examples/sql-orders, built by the real toolchain,
//! served by the real binary, traced into a real OTLP receiver.

use polytrace_tests::postgres::Postgres;
use polytrace_tests::*;
use std::path::Path;

/// examples/sql-orders' manifest in `dir` (so its database file is
/// there): the Python orders service, the JavaScript reports service, the
/// Go audit service and the Rust stock service, all granted the database
/// `orders`.
fn up(dir: &Path, receiver: &Receiver) -> Polytrace {
    up_on(dir, receiver, "sqlite:orders.db", &[])
}

/// examples/sql-orders with the database `orders` at `url`, the host
/// given `env`.
fn up_on(dir: &Path, receiver: &Receiver, url: &str, env: &[(&str, &str)]) -> Polytrace {
    let manifest = format!(
        "app = \"sql-orders\"\nversion = \"0.1.0\"\n\n[[component]]\nid = \"orders\"\n\
         source = \"{}\"\nroute = \"/...\"\nlanguage = \"python\"\n\
         sql = {{ orders = \"{url}\" }}\nlimits = {{ memory_mb = 128 }}\n\n\
         [[component]]\nid = \"reports\"\nsource = \"{}\"\nroute = \"/reports/...\"\n\
         language = \"javascript\"\nsql = {{ orders = \"{url}\" }}\n\
         limits = {{ memory_mb = 128 }}\n\n\
         [[component]]\nid = \"audit\"\nsource = \"{}\"\nroute = \"/audit/...\"\n\
         language = \"go\"\nsql = {{ orders = \"{url}\" }}\n\
         limits = {{ memory_mb = 128 }}\n\n\
         [[component]]\nid = \"stock\"\nsource = \"{}\"\nroute = \"/stock/...\"\n\
         language = \"rust\"\nsql = {{ orders = \"{url}\" }}\n",
        component("sql_orders").display(),
        component("sql_reports").display(),
        component("sql_audit").display(),
        component("sql_stock").display()
    );
    std::fs::write(dir.join("polytrace.toml"), manifest).unwrap();
    Polytrace::up_dir(dir, receiver, "http/protobuf", env)
}

fn find<'a>(spans: &'a [FlatSpan], name: &str) -> &'a FlatSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
}

async fn post(host: &Polytrace, body: &str) -> Response {
    request(
        "POST",
        &host.url("/orders"),
        &[("content-type", "application/json")],
        body,
    )
    .await
}

/// Every statement is a CLIENT span under the guest's current span with
/// the database conventions' attributes and no literal; a failed
/// statement is an Error span with the database's code and a DB-API
/// exception the view handles; a database the manifest does not grant is
/// refused; the duration histogram is recorded; what was committed is
/// still there after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn statements_are_client_spans_with_the_database_conventions() {
    let receiver = Receiver::start().await;
    let dir = scratch_dir("sql-orders");
    let host = up(&dir, &receiver);

    let order = r#"{"id": "o-1", "item": "earl grey", "quantity": 2}"#;
    let created = post(&host, order).await;
    assert_eq!(created.status, 201, "{}", created.body);
    // SERVER, the schema's CREATE, save_order, BEGIN, INSERT, COMMIT.
    let spans = receiver.trace(&created.trace_id(), 6).await;
    let server = find(&spans, "POST /orders");
    let save = find(&spans, "save_order");
    let insert = find(&spans, "INSERT orders");
    assert_eq!(insert.kind, KIND_CLIENT);
    assert_eq!(insert.parent_span_id, save.span_id);
    assert_eq!(find(&spans, "COMMIT").parent_span_id, save.span_id);
    assert_eq!(find(&spans, "CREATE orders").parent_span_id, server.span_id);
    for (key, value) in [
        ("db.system.name", "sqlite"),
        ("db.namespace", "orders.db"),
        ("db.operation.name", "INSERT"),
        ("db.collection.name", "orders"),
        ("db.query.summary", "INSERT orders"),
        (
            "db.query.text",
            "INSERT INTO orders (id, item, quantity) VALUES (?, ?, ?)",
        ),
    ] {
        assert_eq!(insert.attributes[key], value, "{key}: {insert:#?}");
    }
    assert_eq!(insert.status_code, STATUS_UNSET);
    // The values never reach the trace.
    let everything = format!("{spans:?}");
    assert!(!everything.contains("earl grey"), "{everything}");

    let read = get(&host.url("/orders/o-1")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["item"], "earl grey");
    assert_eq!(read.json()["quantity"], 2);
    let spans = receiver.trace(&read.trace_id(), 2).await;
    let select = find(&spans, "SELECT orders");
    assert_eq!(select.attributes["db.response.returned_rows"], 1);
    assert_eq!(
        select.parent_span_id,
        find(&spans, "GET /orders/<order_id>").span_id
    );
    // A read begins no transaction.
    assert!(!spans.iter().any(|s| s.name == "BEGIN"), "{spans:#?}");

    // A constraint: an Error span with SQLite's code; the view answers 409.
    let duplicate = post(&host, order).await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
    assert_eq!(duplicate.json()["sqlstate"], "1555");
    let spans = receiver.trace(&duplicate.trace_id(), 5).await;
    let insert = find(&spans, "INSERT orders");
    assert_eq!(insert.status_code, STATUS_ERROR);
    assert!(
        insert.status_message.contains("UNIQUE constraint failed"),
        "{insert:#?}"
    );
    assert_eq!(insert.attributes["db.response.status_code"], "1555");
    assert_eq!(insert.attributes["error.type"], "1555");
    assert!(spans.iter().any(|s| s.name == "ROLLBACK"));
    assert_eq!(find(&spans, "POST /orders").status_code, STATUS_UNSET);

    // A syntax error the view does not catch: Flask's 500, the exception on
    // the SERVER span, the statement's span an error.
    let broken = get(&host.url("/orders/broken")).await;
    assert_eq!(broken.status, 500);
    let spans = receiver.trace(&broken.trace_id(), 2).await;
    let statement = find(&spans, "SELEC");
    assert_eq!(statement.status_code, STATUS_ERROR);
    assert_eq!(statement.attributes["error.type"], "1");
    let server = find(&spans, "GET /orders/broken");
    assert_eq!(
        server.event("exception").unwrap()["exception.type"],
        "polytrace.dbapi.ProgrammingError"
    );

    // Not granted: refused before any database, with an Error span.
    let reports = get(&host.url("/orders/ungranted")).await;
    assert_eq!(reports.status, 503, "{}", reports.body);
    assert_eq!(reports.json()["kind"], "not-granted");
    let spans = receiver.trace(&reports.trace_id(), 2).await;
    let refused = find(&spans, "open analytics");
    assert_eq!(refused.status_code, STATUS_ERROR);
    assert_eq!(refused.attributes["error.type"], "not-granted");

    // The JavaScript service reads what the Python one wrote; its
    // statements are traced the same way, under its own current span.
    let second = post(&host, r#"{"id": "o-2", "item": "sencha", "quantity": 3}"#).await;
    assert_eq!(second.status, 201, "{}", second.body);
    let summary = get(&host.url("/reports/summary")).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(summary.json()["orders"], 2);
    assert_eq!(summary.json()["items"], 5);
    let items = get(&host.url("/reports/items/sencha")).await;
    assert_eq!(items.status, 200, "{}", items.body);
    assert_eq!(items.json()["count"], 1);
    assert_eq!(items.json()["orders"][0]["id"], "o-2");
    let spans = receiver.trace(&items.trace_id(), 2).await;
    let select = find(&spans, "SELECT orders");
    assert_eq!(select.service(), "reports");
    assert_eq!(
        select.parent_span_id,
        find(&spans, "GET /reports/items/:item").span_id
    );
    for (key, value) in [
        ("db.system.name", "sqlite"),
        ("db.namespace", "orders.db"),
        ("db.operation.name", "SELECT"),
        ("db.collection.name", "orders"),
        (
            "db.query.text",
            "SELECT id, quantity FROM orders WHERE item = $1 ORDER BY id",
        ),
    ] {
        assert_eq!(select.attributes[key], value, "{key}: {select:#?}");
    }
    assert_eq!(select.attributes["db.response.returned_rows"], 1);

    // Go's database/sql through the driver: the same span, under the
    // handler's own span.
    let audit = get(&host.url("/audit/orders/o-2")).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert_eq!(audit.json()["item"], "sencha");
    assert_eq!(audit.json()["quantity"], 3);
    let spans = receiver.trace(&audit.trace_id(), 3).await;
    let select = find(&spans, "SELECT orders");
    assert_eq!(select.service(), "audit");
    assert_eq!(select.parent_span_id, find(&spans, "audit_order").span_id);
    assert_eq!(
        select.attributes["db.query.text"],
        "SELECT item, quantity FROM orders WHERE id = $1"
    );
    assert_eq!(select.attributes["db.collection.name"], "orders");
    let missing = get(&host.url("/audit/orders/o-404")).await;
    assert_eq!(missing.status, 404, "{}", missing.body);

    // Rust through polytrace_guest::sql: the same span again.
    let stock = get(&host.url("/stock/sencha")).await;
    assert_eq!(stock.status, 200, "{}", stock.body);
    assert_eq!(stock.json()["quantity"], 3);
    let spans = receiver.trace(&stock.trace_id(), 3).await;
    let select = find(&spans, "SELECT orders");
    assert_eq!(select.service(), "stock");
    assert_eq!(select.parent_span_id, find(&spans, "count_stock").span_id);
    assert_eq!(select.attributes["db.operation.name"], "SELECT");
    assert_eq!(select.attributes["db.response.returned_rows"], 1);

    receiver
        .wait_metric("orders", "db.client.operation.duration", |points| {
            points.iter().any(|p| {
                p.kind == "histogram"
                    && p.unit == "s"
                    && p.attr("db.operation.name").is_some_and(|v| v == "INSERT")
                    && p.attr("error.type").is_some_and(|v| v == "1555")
                    && p.bounds.first() == Some(&0.001)
            })
        })
        .await;
    host.terminate();

    // What was committed survives the host.
    let host = up(&dir, &receiver);
    let again = get(&host.url("/orders/o-1")).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["item"], "earl grey");
    host.terminate();
}

/// What the issue lists as bad input, on the SQLite backend: a statement
/// past the request's deadline is interrupted inside SQLite (504, an Error
/// span); a result past the host's cap is refused, not held; TEXT with a
/// NUL, or that is not UTF-8, comes back unchanged; a wrong parameter count
/// is a DataError. The host keeps serving after each.
#[tokio::test(flavor = "multi_thread")]
async fn bad_statements_fail_alone_and_the_host_keeps_serving() {
    let receiver = Receiver::start().await;
    // A small value cap: the statement text read from the guest obeys it.
    let host = probe(
        &receiver,
        "sqlite:bench.db",
        1500,
        &[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "32")],
    );
    let healthy = || async {
        let r = get(&host.url("/sql-cost?n=3")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    };
    healthy().await;

    let started = std::time::Instant::now();
    let slow = get(&host.url("/slow")).await;
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let spans = receiver.trace(&slow.trace_id(), 2).await;
    let statement = find(&spans, "SELECT c");
    assert_eq!(statement.status_code, STATUS_ERROR, "{statement:#?}");
    // SQLITE_INTERRUPT.
    assert_eq!(statement.attributes["error.type"], "9");
    assert_eq!(
        statement.attributes["db.query.text"],
        "WITH RECURSIVE c(x) AS (SELECT ?"
    );
    assert_eq!(
        find(&spans, "GET /*").attributes["polytrace.attributes.truncated"],
        1
    );
    healthy().await;

    let huge = get(&host.url("/huge")).await;
    assert_eq!(huge.status, 200, "{}", huge.body);
    assert_eq!(huge.json()["error"], "DataError");
    assert_eq!(huge.json()["kind"], "too-large");
    let spans = receiver.trace(&huge.trace_id(), 2).await;
    assert_eq!(
        find(&spans, "SELECT c").attributes["error.type"],
        "too-large"
    );
    healthy().await;

    let text = get(&host.url("/text")).await;
    assert_eq!(text.status, 200, "{}", text.body);
    assert_eq!(
        text.json()["rows"],
        serde_json::json!([[2, "a\u{0}b", "str"], [3, "ff00fe", "bytes"]])
    );

    let mismatch = get(&host.url("/mismatch")).await;
    assert_eq!(mismatch.json()["error"], "DataError", "{}", mismatch.body);
    assert!(
        mismatch.json()["message"]
            .as_str()
            .unwrap()
            .contains("1 parameter(s), 2 given")
    );
    healthy().await;
    host.terminate();
}

/// Writers from many instances at once: each waits for the write lock off
/// the host's worker threads, so the one holding it can commit; every
/// order is stored, none is lost or doubled, and a request that leaves
/// nothing open leaves no lock behind.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_all_commit() {
    let receiver = Receiver::start().await;
    let dir = scratch_dir("sql-writers");
    let host = up(&dir, &receiver);
    let writers = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..writers {
        let url = host.url("/orders");
        tasks.spawn(async move {
            let body = format!(r#"{{"id": "w-{i}", "item": "oolong", "quantity": 1}}"#);
            request("POST", &url, &[("content-type", "application/json")], &body).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let response = done.unwrap();
        assert_eq!(response.status, 201, "{}\n{}", response.body, host.log());
    }
    let summary = get(&host.url("/reports/summary")).await;
    assert_eq!(summary.json()["orders"], writers, "{}", summary.body);
    host.terminate();
}

/// The environment variable the manifests below take the server's
/// password from: it is in no manifest, span or log line.
const PASSWORD_VAR: &str = "POLYTRACE_TEST_PG_PASSWORD";

fn pg_url(pg: &Postgres, database: &str) -> String {
    format!(
        "postgres://polytrace:${{{PASSWORD_VAR}}}@127.0.0.1:{}/{database}",
        pg.port
    )
}

/// The same four services on a real PostgreSQL server: the same spans as
/// on SQLite, with `db.system.name` = postgresql, the server's address
/// and port, SQLSTATE as `db.response.status_code`; the password in no
/// span or log line; the server stopped mid-run → an `unavailable` error
/// span and a 500 while the host keeps serving, and everything the
/// server acknowledged there after it is back.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_statements_are_traced_the_same_way() {
    let pg = Postgres::start("orders");
    pg.psql("postgres", "CREATE DATABASE orders");
    let receiver = Receiver::start().await;
    let dir = scratch_dir("sql-orders-pg");
    let env = [(PASSWORD_VAR, pg.password.as_str())];
    let host = up_on(&dir, &receiver, &pg_url(&pg, "orders"), &env);

    let order = r#"{"id": "o-1", "item": "earl grey", "quantity": 2}"#;
    let created = post(&host, order).await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, host.log());
    let spans = receiver.trace(&created.trace_id(), 6).await;
    let save = find(&spans, "save_order");
    let insert = find(&spans, "INSERT orders");
    assert_eq!(insert.kind, KIND_CLIENT);
    assert_eq!(insert.parent_span_id, save.span_id);
    assert_eq!(find(&spans, "COMMIT").parent_span_id, save.span_id);
    for (key, value) in [
        ("db.system.name", "postgresql"),
        ("db.namespace", "orders"),
        ("db.operation.name", "INSERT"),
        ("db.collection.name", "orders"),
        ("db.query.summary", "INSERT orders"),
        (
            "db.query.text",
            "INSERT INTO orders (id, item, quantity) VALUES (?, ?, ?)",
        ),
        ("server.address", "127.0.0.1"),
    ] {
        assert_eq!(insert.attributes[key], value, "{key}: {insert:#?}");
    }
    assert_eq!(insert.attributes["server.port"], pg.port, "{insert:#?}");
    assert_eq!(insert.status_code, STATUS_UNSET);
    // Committed on the server, as the guest was told.
    assert_eq!(
        pg.psql(
            "orders",
            "SELECT item || ':' || quantity FROM orders WHERE id = 'o-1'"
        ),
        "earl grey:2"
    );

    let read = get(&host.url("/orders/o-1")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["item"], "earl grey");
    assert_eq!(read.json()["quantity"], 2);

    // A unique violation: SQLSTATE 23505 on the span; the view answers 409.
    let duplicate = post(&host, order).await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
    assert_eq!(duplicate.json()["sqlstate"], "23505");
    let spans = receiver.trace(&duplicate.trace_id(), 5).await;
    let insert = find(&spans, "INSERT orders");
    assert_eq!(insert.status_code, STATUS_ERROR);
    assert!(
        insert
            .status_message
            .contains("duplicate key value violates unique constraint"),
        "{insert:#?}"
    );
    assert_eq!(insert.attributes["db.response.status_code"], "23505");
    assert_eq!(insert.attributes["error.type"], "23505");
    assert!(spans.iter().any(|s| s.name == "ROLLBACK"));
    // A CHECK constraint: 23514, also a 409.
    let negative = post(&host, r#"{"id": "o-9", "item": "tea", "quantity": 0}"#).await;
    assert_eq!(negative.status, 409, "{}", negative.body);
    assert_eq!(negative.json()["sqlstate"], "23514");

    // A syntax error: 42601, Flask's 500.
    let broken = get(&host.url("/orders/broken")).await;
    assert_eq!(broken.status, 500);
    let spans = receiver.trace(&broken.trace_id(), 2).await;
    assert_eq!(find(&spans, "SELEC").attributes["error.type"], "42601");

    // JavaScript, Go and Rust read what Python wrote, through the same pool.
    let second = post(&host, r#"{"id": "o-2", "item": "sencha", "quantity": 3}"#).await;
    assert_eq!(second.status, 201, "{}", second.body);
    let summary = get(&host.url("/reports/summary")).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(summary.json()["orders"], 2);
    assert_eq!(summary.json()["items"], 5);
    let items = get(&host.url("/reports/items/sencha")).await;
    assert_eq!(items.json()["orders"][0]["id"], "o-2", "{}", items.body);
    let spans = receiver.trace(&items.trace_id(), 2).await;
    let select = find(&spans, "SELECT orders");
    assert_eq!(select.service(), "reports");
    assert_eq!(select.attributes["db.system.name"], "postgresql");
    assert_eq!(select.attributes["db.response.returned_rows"], 1);
    let audit = get(&host.url("/audit/orders/o-2")).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert_eq!(audit.json()["quantity"], 3);
    let stock = get(&host.url("/stock/sencha")).await;
    assert_eq!(stock.status, 200, "{}", stock.body);
    assert_eq!(stock.json()["quantity"], 3);
    let spans = receiver.trace(&stock.trace_id(), 3).await;
    assert_eq!(
        find(&spans, "SELECT orders").attributes["db.namespace"],
        "orders"
    );

    // The server goes away: each statement fails alone, as `unavailable`.
    pg.stop();
    let down = get(&host.url("/orders/o-1")).await;
    assert_eq!(down.status, 500, "{}", down.body);
    let spans = receiver.trace(&down.trace_id(), 2).await;
    let select = find(&spans, "SELECT orders");
    assert_eq!(select.status_code, STATUS_ERROR);
    assert_eq!(select.attributes["error.type"], "unavailable");
    let down = get(&host.url("/reports/summary")).await;
    assert_eq!(down.status, 500, "{}", down.body);
    // The host still serves what needs no database.
    let refused = get(&host.url("/orders/ungranted")).await;
    assert_eq!(refused.status, 503, "{}", refused.body);

    // Back: new connections; what was acknowledged is all there.
    pg.start_server();
    let again = get(&host.url("/orders/o-2")).await;
    assert_eq!(again.status, 200, "{}\n{}", again.body, host.log());
    assert_eq!(again.json()["item"], "sencha");
    let summary = get(&host.url("/reports/summary")).await;
    assert_eq!(summary.json()["orders"], 2, "{}", summary.body);

    receiver
        .wait_metric("orders", "db.client.operation.duration", |points| {
            points.iter().any(|p| {
                p.attr("db.system.name").is_some_and(|v| v == "postgresql")
                    && p.attr("error.type").is_some_and(|v| v == "23505")
                    && p.attr("server.address").is_some_and(|v| v == "127.0.0.1")
            })
        })
        .await;
    let (_, log) = host.terminate();
    let everything = format!("{:?}\n{log}", receiver.spans());
    assert!(!everything.contains(&pg.password), "the password leaked");
    assert!(!everything.contains("earl grey"), "a value reached a span");
}

/// The probe guest (tests/guests/sql-probe) in a fresh directory, its
/// database `bench` at `url`, requests cut at `timeout_ms`.
fn probe(receiver: &Receiver, url: &str, timeout_ms: u32, env: &[(&str, &str)]) -> Polytrace {
    let dir = scratch_dir("sql-probe");
    let manifest = format!(
        "app = \"sql-probe\"\n[[component]]\nid = \"probe\"\nsource = \"{}\"\nroute = \"/...\"\n\
         language = \"python\"\nsql = {{ bench = \"{url}\" }}\n\
         limits = {{ request_timeout_ms = {timeout_ms}, memory_mb = 128 }}\n",
        component("sql_probe").display()
    );
    std::fs::write(dir.join("polytrace.toml"), manifest).unwrap();
    Polytrace::up_dir(&dir, receiver, "http/protobuf", env)
}

/// Bad input on PostgreSQL: a statement past the deadline is cancelled on
/// the server (504, SQLSTATE 57014 on the span, nothing left running);
/// a result past the caps is refused; a NUL in TEXT is the server's data
/// error (PostgreSQL text cannot hold one); a wrong parameter count is a
/// DataError; a transaction left open by a failed request is rolled back.
/// The host keeps serving after each.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_bad_statements_fail_alone() {
    let pg = Postgres::start("probe");
    let receiver = Receiver::start().await;
    let host = probe(
        &receiver,
        &pg_url(&pg, "postgres"),
        1500,
        &[(PASSWORD_VAR, &pg.password)],
    );
    let healthy = || async {
        let r = get(&host.url("/sql-cost?n=3")).await;
        assert_eq!(r.status, 200, "{}\n{}", r.body, host.log());
    };
    healthy().await;

    let started = std::time::Instant::now();
    let slow = get(&host.url("/slow")).await;
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let spans = receiver.trace(&slow.trace_id(), 2).await;
    let statement = find(&spans, "SELECT c");
    assert_eq!(statement.status_code, STATUS_ERROR, "{statement:#?}");
    assert_eq!(statement.attributes["error.type"], "57014");
    // Cancelled on the server, not left running there.
    settles(
        &pg,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'WITH RECURSIVE%' AND state = 'active'",
        "0",
    )
    .await;
    healthy().await;

    let huge = get(&host.url("/huge")).await;
    assert_eq!(huge.json()["kind"], "too-large", "{}", huge.body);
    healthy().await;

    let text = get(&host.url("/text")).await;
    assert_eq!(text.json()["error"], "DataError", "{}", text.body);
    assert_eq!(text.json()["sqlstate"], "22021", "{}", text.body);
    // The failed request's transaction was rolled back, not left holding
    // its server connection.
    healthy().await;
    settles(
        &pg,
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
        "0",
    )
    .await;

    let mismatch = get(&host.url("/mismatch")).await;
    assert_eq!(mismatch.json()["error"], "DataError", "{}", mismatch.body);
    assert!(
        mismatch.json()["message"]
            .as_str()
            .unwrap()
            .contains("1 parameter(s), 2 given")
    );
    healthy().await;
    host.terminate();
}

/// Wait (5 s at most) until `sql` answers `want` on the server.
async fn settles(pg: &Postgres, sql: &str, want: &str) {
    let mut got = pg.psql("postgres", sql);
    for _ in 0..50 {
        if got == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        got = pg.psql("postgres", sql);
    }
    assert_eq!(got, want, "{sql}");
}

/// The statements of `batch` ([statement, parameters] pairs) in one
/// request on the probe's connection: each one's result or error.
async fn statements(host: &Polytrace, batch: serde_json::Value) -> Vec<serde_json::Value> {
    let r = request(
        "POST",
        &host.url("/statements"),
        &[("content-type", "application/json")],
        &batch.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, host.log());
    r.json().as_array().unwrap().clone()
}

/// Transactions as the server has them, whatever the statement's form:
/// a COMMIT of a failed transaction is an error (the server rolled it
/// back); a COMMIT after the connection was lost is an error, not a
/// success; savepoint and chained forms leave no connection in a
/// transaction for the next request; session settings do not outlive
/// their request; values of the awkward types come back exact; a data
/// error's value stays out of the span.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_transactions_follow_the_server() {
    use serde_json::json;
    let pg = Postgres::start("tx");
    let receiver = Receiver::start().await;
    let host = probe(
        &receiver,
        &pg_url(&pg, "postgres"),
        5000,
        &[(PASSWORD_VAR, &pg.password)],
    );
    pg.psql("postgres", "CREATE TABLE k (n integer PRIMARY KEY)");
    let count = |n: &str| pg.psql("postgres", &format!("SELECT count(*) FROM k WHERE n = {n}"));

    // A failed transaction's COMMIT: an error, and nothing committed.
    let out = statements(
        &host,
        json!([
            ["BEGIN", []],
            ["INSERT INTO k VALUES (10)", []],
            ["INSERT INTO k VALUES (10)", []],
            ["COMMIT", []]
        ]),
    )
    .await;
    assert_eq!(out[2]["sqlstate"], "23505", "{out:?}");
    assert_eq!(out[3]["sqlstate"], "25P02", "{out:?}");
    assert_eq!(count("10"), "0");

    // The connection lost inside a transaction (a result past the cap
    // closes it): the COMMIT fails, nothing committed.
    let out = statements(
        &host,
        json!([
            ["BEGIN", []],
            ["INSERT INTO k VALUES (-5)", []],
            ["SELECT generate_series(1, 200000)", []],
            ["COMMIT", []],
            ["SELECT 1", []]
        ]),
    )
    .await;
    assert_eq!(out[2]["kind"], "too-large", "{out:?}");
    assert_eq!(out[3]["sqlstate"], "08006", "{out:?}");
    assert_eq!(out[4]["rows"], json!([[1]]), "{out:?}");
    assert_eq!(count("-5"), "0");

    // Forms the host cannot read as plain BEGIN/COMMIT/ROLLBACK: the
    // server says where the transaction is, and a request that leaves one
    // open has it rolled back.
    let out = statements(
        &host,
        json!([
            ["BEGIN", []],
            ["SAVEPOINT a", []],
            ["INSERT INTO k VALUES (1)", []],
            ["/* c */ ROLLBACK TO SAVEPOINT a", []],
            ["COMMIT /* x */ AND CHAIN", []],
            ["INSERT INTO k VALUES (2)", []]
        ]),
    )
    .await;
    assert!(out.iter().all(|r| r.get("error").is_none()), "{out:?}");
    settles(
        &pg,
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
        "0",
    )
    .await;
    assert_eq!(
        count("2"),
        "0",
        "the chained transaction was left open, then rolled back"
    );
    // A session setting lasts for the request that made it: the host
    // keeps its server connection for the request, then resets it before
    // another request gets it.
    let out = statements(
        &host,
        json!([["SET search_path TO nowhere", []], ["SHOW search_path", []]]),
    )
    .await;
    assert_eq!(out[1]["rows"], json!([["nowhere"]]), "{out:?}");
    for _ in 0..3 {
        let out = statements(
            &host,
            json!([
                ["SHOW search_path", []],
                ["BEGIN", []],
                ["INSERT INTO k VALUES (3) ON CONFLICT DO NOTHING", []],
                ["COMMIT", []]
            ]),
        )
        .await;
        assert_eq!(out[0]["rows"], json!([["\"$user\", public"]]), "{out:?}");
        assert!(out[3].get("error").is_none(), "{out:?}");
    }
    assert_eq!(count("3"), "1");

    // Awkward values, exactly.
    let out = statements(
        &host,
        json!([[
            "SELECT 1e-30::numeric, 'NaN'::numeric, '24:00:00'::time, 'infinity'::date, pg_sleep(0), 12345678901234567890123456789012.5::numeric",
            []
        ]]),
    )
    .await;
    assert_eq!(
        out[0]["rows"],
        json!([[
            "0.000000000000000000000000000001",
            "NaN",
            "24:00:00",
            "infinity",
            null,
            "12345678901234567890123456789012.5"
        ]]),
        "{out:?}"
    );

    // A data error: the guest gets the value, the span does not.
    let r = request(
        "POST",
        &host.url("/statements"),
        &[("content-type", "application/json")],
        &json!([["SELECT $1::integer", ["card 4111"]]]).to_string(),
    )
    .await;
    assert_eq!(r.json()[0]["sqlstate"], "22P02", "{}", r.body);
    assert!(
        r.json()[0]["message"]
            .as_str()
            .unwrap()
            .contains("card 4111")
    );
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let select = find(&spans, "SELECT");
    assert_eq!(
        select.status_message,
        "invalid input syntax for type integer: ?"
    );
    host.terminate();
}

/// TLS to PostgreSQL: with `sslmode=require` and the server's CA as
/// `sslrootcert`, statements run over TLS (the server refuses anything
/// else); without that CA the certificate is not trusted and every
/// statement fails as `unavailable`, with the reason, while the host keeps
/// serving.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_verifies_the_server() {
    let pki_dir = scratch_dir("pg-pki");
    let pki = pki::Pki::generate(&pki_dir, "postgres");
    let pg = Postgres::start_tls("tls", &pki);
    let receiver = Receiver::start().await;
    let url = |extra: &str| {
        format!(
            "postgres://polytrace:${{{PASSWORD_VAR}}}@localhost:{}/postgres?sslmode=require{extra}",
            pg.port
        )
    };
    let trusted = probe(
        &receiver,
        &url(&format!("&sslrootcert={}", pki.ca.display())),
        5000,
        &[(PASSWORD_VAR, &pg.password)],
    );
    let r = get(&trusted.url("/sql-cost?n=3")).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, trusted.log());
    let encrypted = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND usename = 'polytrace' AND pid <> pg_backend_pid()",
    );
    assert_ne!(encrypted, "0", "no TLS connection from the host");
    trusted.terminate();

    let untrusted = probe(&receiver, &url(""), 5000, &[(PASSWORD_VAR, &pg.password)]);
    let r = get(&untrusted.url("/sql-cost?n=3")).await;
    assert_eq!(r.status, 500, "{}", r.body);
    let spans = receiver.trace(&r.trace_id(), 2).await;
    let failed = spans
        .iter()
        .find(|s| s.kind == KIND_CLIENT)
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(failed.attributes["error.type"], "unavailable");
    assert!(failed.status_message.contains("certificate"), "{failed:#?}");
    untrusted.terminate();
}

/// `polytrace up` on `dir`'s manifest, expected to stop before serving:
/// its exit status and everything it wrote (fails if it is still running
/// after 60 s, which would mean it served).
fn up_fails(dir: &Path) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(polytrace_bin())
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--no-ui",
            "--store",
            "none",
        ])
        .arg(dir)
        .env("POLYTRACE_CACHE_DIR", target_dir().join("test-cache"))
        .env("OTEL_SDK_DISABLED", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("`polytrace up` kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status, text)
}

/// A grant's `schema` file runs once at start, before the first request,
/// and again at every start (re-runnable statements); a missing file is a
/// `check` error; a failing statement or a server that refuses stops `up`
/// with the grant, the file and the database's message, and no password.
#[tokio::test(flavor = "multi_thread")]
async fn schema_files_run_at_start() {
    use serde_json::json;
    let dir = scratch_dir("sql-schema");
    let manifest = |url: &str| {
        format!(
            "app = \"sql-schema\"\n[[component]]\nid = \"probe\"\nsource = \"{}\"\nroute = \"/...\"\n\
             language = \"python\"\nsql = {{ bench = {{ url = \"{url}\", schema = \"db/schema.sql\" }} }}\n\
             limits = {{ memory_mb = 128 }}\n",
            component("sql_probe").display()
        )
    };
    std::fs::write(dir.join("polytrace.toml"), manifest("sqlite:bench.db")).unwrap();

    // No file yet: `check` names it.
    let out = std::process::Command::new(polytrace_bin())
        .arg("check")
        .arg(dir.join("polytrace.toml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("sql.bench: schema") && text.contains("db/schema.sql"),
        "{text}"
    );

    // A statement that fails: `up` stops with SQLite's message.
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(
        dir.join("db/schema.sql"),
        "CREATE TABLE IF NOT EXISTS early (x);\nCREAT TABLE oops (x);\n",
    )
    .unwrap();
    let (status, text) = up_fails(&dir);
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("component `probe`: sql.bench: schema"),
        "{text}"
    );
    assert!(text.contains("syntax error"), "{text}");

    // A good schema: the table is there for the first request, and a
    // second start runs it again harmlessly.
    std::fs::write(
        dir.join("db/schema.sql"),
        "-- re-runnable\nCREATE TABLE IF NOT EXISTS seeded (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n\
         INSERT OR IGNORE INTO seeded (id, name) VALUES (1, 'seeded');\n",
    )
    .unwrap();
    let receiver = Receiver::start().await;
    for _ in 0..2 {
        let host = Polytrace::up_dir(&dir, &receiver, "http/protobuf", &[]);
        let out = statements(&host, json!([["SELECT id, name FROM seeded", []]])).await;
        assert_eq!(out[0]["rows"], json!([[1, "seeded"]]), "{out:?}");
        assert!(host.log().contains("ran the schema"), "{}", host.log());
        // The failed schema left nothing behind: all or nothing.
        let out = statements(&host, json!([["SELECT x FROM early", []]])).await;
        assert!(
            out[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("no such table"),
            "{out:?}"
        );
        host.terminate();
    }

    // A server that refuses: `up` stops, naming it without the password.
    std::fs::write(
        dir.join("polytrace.toml"),
        manifest("postgres://app:${SCHEMA_TEST_PW}@127.0.0.1:1/app"),
    )
    .unwrap();
    // SAFETY: read by the child process only.
    unsafe { std::env::set_var("SCHEMA_TEST_PW", "hunter2-schema") };
    let (status, text) = up_fails(&dir);
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("sql.bench: schema")
            && text.contains("cannot connect to postgres://app@127.0.0.1:1/app"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// A Go guest whose host calls copy data in (SQL results, request bodies)
/// while its garbage collector runs: Go's collector reads the clock,
/// polls and runs cleanups that drop resources, each an import call,
/// which the component model forbids inside `cabi_realloc` ("cannot leave
/// component instance"). Thousands of queries and 4 MiB bodies, request
/// after request on one warm instance, all answered.
#[tokio::test(flavor = "multi_thread")]
async fn go_guests_survive_collections_during_host_calls() {
    let dir = scratch_dir("sql-go-gc");
    let manifest = format!(
        "app = \"sql-go-gc\"\n[[component]]\nid = \"probe\"\nsource = \"{}\"\nroute = \"/...\"\n\
         language = \"go\"\nsql = {{ bench = \"sqlite:bench.db\" }}\n\
         limits = {{ request_timeout_ms = 60000, memory_mb = 128 }}\n",
        component("sql_probe_go").display()
    );
    std::fs::write(dir.join("polytrace.toml"), manifest).unwrap();
    let receiver = Receiver::start().await;
    let host = Polytrace::up_dir(&dir, &receiver, "http/protobuf", &[]);
    // Without the fix, one run in this loop trapped at the 17th request.
    for i in 0..60 {
        let r = get(&host.url("/sql-cost?n=2000")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let body = "x".repeat(4 << 20);
    for i in 0..10 {
        let r = request("POST", &host.url("/sql-cost?n=10"), &[], &body).await;
        assert_eq!(r.status, 200, "body {i}: {}", r.body);
    }
    let (_, log) = host.terminate();
    assert!(!log.contains("Trap::"), "{log}");
}

/// JavaScript's client sends and reads back the values JSON numbers cannot
/// carry (it uses the host's JSON form of a statement): integers past
/// 2^53 (as strings when read, as node-postgres gives them), Infinity,
/// bytes, text with a NUL, and TEXT that is not UTF-8 (bytes).
#[tokio::test(flavor = "multi_thread")]
async fn javascript_values_cross_exactly() {
    use serde_json::json;
    let dir = scratch_dir("sql-js-values");
    let manifest = format!(
        "app = \"sql-js-values\"\n[[component]]\nid = \"probe\"\nsource = \"{}\"\nroute = \"/...\"\n\
         language = \"javascript\"\nsql = {{ bench = \"sqlite:bench.db\" }}\n",
        component("sql_probe_js").display()
    );
    std::fs::write(dir.join("polytrace.toml"), manifest).unwrap();
    let receiver = Receiver::start().await;
    let host = Polytrace::up_dir(&dir, &receiver, "http/protobuf", &[]);
    let r = get(&host.url("/values")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut got = r.json();
    // 2^60 sent as a float comes back as one (JSON writes it as digits).
    let float = got.as_object_mut().unwrap().remove("bigfloat").unwrap();
    assert_eq!(float["type"], "number");
    assert_eq!(float["value"].as_f64(), Some(2f64.powi(60)));
    assert_eq!(
        got,
        json!({
            "big": {"type": "string", "value": "1152921504606846976"},
            "neg": {"type": "string", "value": "-4611686018427387904"},
            "inf": {"type": "number", "value": "Infinity"},
            "bytes": {"type": "bytes", "value": [0, 255, 1]},
            "text": {"type": "string", "value": "é\u{0}x"},
            "nil": {"type": "object", "value": null},
            "yes": {"type": "number", "value": 1},
            "half": {"type": "number", "value": 1.5},
            "bad": {"type": "bytes", "value": [255, 0, 254]},
        })
    );
    host.terminate();
}
