//! Attribute limits shared by every signal (value length, array length,
//! attributes per record), the [`Adjustments`] they cause in one request's
//! guest telemetry, and the conversion of WIT attributes into
//! OpenTelemetry ones.

use crate::bindings::types::{KeyValue as WitKeyValue, Value as WitValue};
use opentelemetry::{Array, KeyValue, Value};
use std::borrow::Cow;

/// Arrays longer than this are cut; strings are cut at the configured
/// `max_attribute_value_length`.
pub const MAX_ARRAY_LENGTH: usize = 128;

/// Attributes kept on one metric measurement or log record (spans keep the
/// SDK's 128 and count the rest as dropped).
pub const MAX_RECORD_ATTRIBUTES: usize = 128;

/// SERVER span attribute: guest spans not recorded because of the cap.
pub const DROPPED_SPANS: &str = "polytrace.spans.dropped";

/// SERVER span attribute: attribute values, names and messages a guest sent
/// longer than the limits, and cut to them.
pub const TRUNCATED_VALUES: &str = "polytrace.attributes.truncated";

/// SERVER span attribute: attributes a guest sent with a value that is not
/// an attribute value (null, an object, a mixed array), left out.
pub const INVALID_VALUES: &str = "polytrace.attributes.invalid";

/// SERVER span attribute: guest spans started with an empty name.
pub const UNNAMED_SPANS: &str = "polytrace.spans.unnamed";

/// What the host changed or dropped in one request's guest telemetry so
/// that bad input never fails the request; reported on the SERVER span.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adjustments {
    pub dropped_spans: u64,
    pub truncated_values: u64,
    pub unnamed_spans: u64,
    pub invalid_values: u64,
}

impl Adjustments {
    /// The SERVER span attributes for the non-zero counts.
    pub fn attributes(&self) -> Vec<KeyValue> {
        [
            (DROPPED_SPANS, self.dropped_spans),
            (TRUNCATED_VALUES, self.truncated_values),
            (UNNAMED_SPANS, self.unnamed_spans),
            (INVALID_VALUES, self.invalid_values),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| KeyValue::new(k, n as i64))
        .collect()
    }
}

/// Cut `s` to at most `cap` bytes, on a character boundary.
pub(crate) fn cap_string(mut s: String, cap: usize) -> String {
    if s.len() > cap {
        let mut end = cap;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Cut string values to `cap` bytes (on a character boundary) and arrays to
/// [`MAX_ARRAY_LENGTH`] elements; also says whether anything was cut.
pub fn cap_value(kv: KeyValue, cap: usize) -> (KeyValue, bool) {
    use opentelemetry::Array;
    let mut cut_any = false;
    let mut cut = |s: opentelemetry::StringValue| -> opentelemetry::StringValue {
        if s.as_str().len() > cap {
            cut_any = true;
            cap_string(s.as_str().to_string(), cap).into()
        } else {
            s
        }
    };
    fn cut_array<T>(mut v: Vec<T>, cut_any: &mut bool) -> Vec<T> {
        if v.len() > MAX_ARRAY_LENGTH {
            *cut_any = true;
            v.truncate(MAX_ARRAY_LENGTH);
        }
        v
    }
    let value = match kv.value {
        Value::String(s) => Value::String(cut(s)),
        Value::Array(Array::String(v)) => {
            let v: Vec<_> = v.into_iter().map(&mut cut).collect();
            Value::Array(Array::String(cut_array(v, &mut cut_any)))
        }
        Value::Array(Array::Bool(v)) => Value::Array(Array::Bool(cut_array(v, &mut cut_any))),
        Value::Array(Array::I64(v)) => Value::Array(Array::I64(cut_array(v, &mut cut_any))),
        Value::Array(Array::F64(v)) => Value::Array(Array::F64(cut_array(v, &mut cut_any))),
        other => other,
    };
    let key = if kv.key.as_str().len() > cap {
        cut_any = true;
        opentelemetry::Key::new(Cow::<'static, str>::Owned(cap_string(
            kv.key.as_str().to_string(),
            cap,
        )))
    } else {
        kv.key
    };
    (KeyValue::new(key, value), cut_any)
}

/// A WIT attribute as an OpenTelemetry one (no limits applied).
pub fn to_key_value(kv: WitKeyValue) -> KeyValue {
    KeyValue::new(kv.key, to_value(kv.value))
}

/// A WIT attribute value as an OpenTelemetry one: types map one to one.
pub fn to_value(v: WitValue) -> Value {
    match v {
        WitValue::String(s) => Value::from(s),
        WitValue::Bool(b) => Value::Bool(b),
        WitValue::S64(i) => Value::I64(i),
        WitValue::F64(f) => Value::F64(f),
        WitValue::StringArray(v) => {
            Value::Array(Array::String(v.into_iter().map(Into::into).collect()))
        }
        WitValue::BoolArray(v) => Value::Array(Array::Bool(v)),
        WitValue::S64Array(v) => Value::Array(Array::I64(v)),
        WitValue::F64Array(v) => Value::Array(Array::F64(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_capped() {
        let (kv, cut) = cap_value(KeyValue::new("k", "é".repeat(10)), 5);
        assert_eq!(kv.value.as_str(), "éé");
        assert!(cut);
        let (kv, cut) = cap_value(KeyValue::new("k", "short"), 5);
        assert_eq!(kv.value.as_str(), "short");
        assert!(!cut);
        let (kv, cut) = cap_value(
            KeyValue::new("k", Value::Array(Array::I64((0..1000).collect()))),
            5,
        );
        assert!(cut);
        match kv.value {
            Value::Array(Array::I64(v)) => assert_eq!(v.len(), MAX_ARRAY_LENGTH),
            other => panic!("{other:?}"),
        }
    }
}
