//! The JSON form of a statement's parameters and outcome
//! (`connection.execute-json` in the WIT `sql` interface), for guest
//! engines that lift a nested `outcome` slowly and parse JSON natively
//! (componentize-js: lifting a row of five values cost ~200 µs, one
//! `list<u8>` is one copy and `JSON.parse`). Same statements, spans,
//! limits and errors as `execute`; only the encoding differs.
//!
//! Values, both ways:
//! - `null`, `true`/`false`, strings (TEXT), numbers: an integer is
//!   `int64`, any other number `float64`;
//! - `{"int64": "DIGITS"}`: an integer past ±(2^53 − 1), which a JSON
//!   number would round in JavaScript (the host writes these; a guest may);
//! - `{"float64": "NaN" | "Infinity" | "-Infinity"}`: what JSON has no
//!   number for;
//! - `{"blob": "BASE64"}`: bytes (standard alphabet, padded); TEXT that is
//!   not UTF-8 comes back this way, as it comes back as `blob` from
//!   `execute`.
//!
//! Parameters are a JSON array of values. The outcome is
//! `{"columns": [NAME, ...], "rows": [[VALUE, ...], ...], "rows_affected": N}`.

use crate::bindings::sql as wit;
use base64::Engine as _;
use serde_json::Value as Json;

/// The largest integer a JavaScript number holds exactly.
const SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Parse a JSON array of parameter values. Errors say which parameter
/// (1-based) and why.
pub fn parameters(bytes: &[u8]) -> Result<Vec<wit::Value>, String> {
    let json: Json =
        serde_json::from_slice(bytes).map_err(|e| format!("the parameters are not JSON: {e}"))?;
    let Json::Array(items) = json else {
        return Err("the parameters are not a JSON array".into());
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| value(v).map_err(|why| format!("parameter {}: {why}", i + 1)))
        .collect()
}

fn value(v: Json) -> Result<wit::Value, String> {
    Ok(match v {
        Json::Null => wit::Value::Null,
        Json::Bool(b) => wit::Value::Boolean(b),
        Json::String(s) => wit::Value::Text(s),
        Json::Number(n) => match n.as_i64() {
            Some(i) => wit::Value::Int64(i),
            None => wit::Value::Float64(n.as_f64().ok_or("a number out of range")?),
        },
        Json::Object(map) if map.len() == 1 => {
            let (tag, inner) = map.into_iter().next().expect("one entry");
            let Json::String(text) = inner else {
                return Err(format!("`{tag}` takes a string"));
            };
            match tag.as_str() {
                "int64" => wit::Value::Int64(
                    text.parse()
                        .map_err(|_| format!("`{text}` is not a 64-bit integer"))?,
                ),
                "float64" => wit::Value::Float64(match text.as_str() {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    _ => text
                        .parse()
                        .map_err(|_| format!("`{text}` is not a number"))?,
                }),
                "blob" => wit::Value::Blob(
                    base64::engine::general_purpose::STANDARD
                        .decode(&text)
                        .map_err(|e| format!("a blob that is not base64: {e}"))?,
                ),
                other => return Err(format!("`{other}` is not a value type")),
            }
        }
        other => {
            return Err(format!(
                "{other} is not a value (null, a boolean, a number, a string, or {{\"int64\"|\"float64\"|\"blob\": \"…\"}})"
            ));
        }
    })
}

/// An outcome as JSON bytes.
pub fn outcome(o: &wit::Outcome) -> Vec<u8> {
    let rows: Vec<Json> = o
        .rows
        .iter()
        .map(|row| Json::Array(row.iter().map(to_json).collect()))
        .collect();
    let doc = serde_json::json!({
        "columns": o.columns,
        "rows": rows,
        "rows_affected": o.rows_affected,
    });
    serde_json::to_vec(&doc).expect("JSON values always serialize")
}

fn to_json(v: &wit::Value) -> Json {
    let tagged = |tag: &str, text: String| serde_json::json!({ tag: text });
    match v {
        wit::Value::Null => Json::Null,
        wit::Value::Boolean(b) => Json::Bool(*b),
        wit::Value::Int64(i) if (-SAFE_INTEGER..=SAFE_INTEGER).contains(i) => Json::from(*i),
        wit::Value::Int64(i) => tagged("int64", i.to_string()),
        wit::Value::Float64(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None if f.is_nan() => tagged("float64", "NaN".into()),
            None if *f > 0.0 => tagged("float64", "Infinity".into()),
            None => tagged("float64", "-Infinity".into()),
        },
        wit::Value::Text(s) => Json::String(s.clone()),
        wit::Value::Blob(b) => tagged("blob", base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_take_every_value_type() {
        let got = parameters(
            br#"[null, true, 42, 2.5, "tea", {"int64": "9007199254740993"},
                {"float64": "-Infinity"}, {"blob": "AP8="}]"#,
        )
        .unwrap();
        assert_eq!(got.len(), 8);
        assert!(matches!(got[0], wit::Value::Null));
        assert!(matches!(got[1], wit::Value::Boolean(true)));
        assert!(matches!(got[2], wit::Value::Int64(42)));
        assert!(matches!(got[3], wit::Value::Float64(f) if f == 2.5));
        assert!(matches!(&got[4], wit::Value::Text(s) if s == "tea"));
        assert!(matches!(got[5], wit::Value::Int64(9_007_199_254_740_993)));
        assert!(matches!(got[6], wit::Value::Float64(f) if f == f64::NEG_INFINITY));
        assert!(matches!(&got[7], wit::Value::Blob(b) if b == &[0, 255]));
        for (bad, says) in [
            (&b"{}"[..], "not a JSON array"),
            (b"[1,", "not JSON"),
            (b"[[1]]", "parameter 1"),
            (
                b"[1, {\"int64\": \"x\"}]",
                "parameter 2: `x` is not a 64-bit integer",
            ),
            (b"[{\"blob\": \"!!\"}]", "not base64"),
            (b"[{\"date\": \"2026\"}]", "`date` is not a value type"),
        ] {
            let e = parameters(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn outcomes_keep_what_json_numbers_cannot() {
        let o = wit::Outcome {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![wit::Value::Int64(7), wit::Value::Int64(i64::MAX)],
                vec![
                    wit::Value::Float64(f64::NAN),
                    wit::Value::Blob(vec![0xff, 0]),
                ],
                vec![wit::Value::Null, wit::Value::Text("\u{0}é".into())],
            ],
            rows_affected: 3,
        };
        let json: Json = serde_json::from_slice(&outcome(&o)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "columns": ["a", "b"],
                "rows": [
                    [7, {"int64": "9223372036854775807"}],
                    [{"float64": "NaN"}, {"blob": "/wA="}],
                    [null, "\u{0}é"],
                ],
                "rows_affected": 3,
            })
        );
        // What the host writes, it reads back.
        let back = parameters(serde_json::to_vec(&json["rows"][0]).unwrap().as_slice()).unwrap();
        assert!(matches!(back[1], wit::Value::Int64(i64::MAX)));
    }
}
