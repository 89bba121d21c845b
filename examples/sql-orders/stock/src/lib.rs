//! stock: a Rust wasi:http handler reading the orders database through the
//! host's SQL (`polytrace_guest::sql`). Its statements are traced by the
//! host exactly as the Python, JavaScript and Go services' are.
//!
//! `GET /stock/{item}` → `{"item", "orders", "quantity"}` for that item.

use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond};
use polytrace_guest::sql::{Connection, Value};
use polytrace_guest::{Span, kv};

struct Stock;

fn count(item: &str) -> Result<(i64, i64), polytrace_guest::sql::Error> {
    let db = Connection::open("orders")?;
    let out = db.execute(
        "SELECT count(*) AS orders, coalesce(sum(quantity), 0) AS quantity FROM orders WHERE item = ?1",
        &[item.into()],
    )?;
    let int = |v: &Value| match v {
        Value::Int64(i) => *i,
        _ => 0,
    };
    Ok((int(&out.rows[0][0]), int(&out.rows[0][1])))
}

impl Guest for Stock {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = match Request::read(request) {
            Ok(request) => request,
            Err(e) => return respond(out, 400, "text/plain", e.to_string().as_bytes()),
        };
        let item = request.path().trim_start_matches("/stock/").to_string();
        let span = Span::start("count_stock", [kv("stock.item", item.clone())]);
        let result = count(&item);
        drop(span);
        match result {
            Ok((orders, quantity)) => {
                let body = format!("{{\"item\":{item:?},\"orders\":{orders},\"quantity\":{quantity}}}");
                respond(out, 200, "application/json", body.as_bytes())
            }
            Err(e) => {
                let body = format!("{{\"error\":{:?}}}", e.to_string());
                respond(out, 500, "application/json", body.as_bytes())
            }
        }
    }
}

polytrace_guest::http::wasip2::http::proxy::export!(Stock with_types_in polytrace_guest::http::wasip2);
