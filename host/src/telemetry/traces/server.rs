//! What a guest's web framework tells the host about the request's SERVER
//! span (the `polytrace:telemetry/server` interface): the matched route
//! template, attributes, exceptions. Kept on the [`RequestTrace`] while the
//! guest runs and applied to the SERVER span when its run is settled.

use super::{RequestTrace, exception_attributes};
use opentelemetry::KeyValue;

/// Attribute keys a guest may not set on the SERVER span: the host's own
/// HTTP semantic-convention attributes and its `polytrace.*` namespace.
const HOST_OWNED_PREFIXES: [&str; 7] = [
    "http.",
    "url.",
    "server.",
    "client.",
    "network.",
    "user_agent.",
    "polytrace.",
];

/// At most this many guest attributes on the SERVER span.
pub const MAX_SERVER_ATTRIBUTES: usize = 64;

/// At most this many exception events recorded on the SERVER span.
pub const MAX_SERVER_EXCEPTIONS: usize = 8;

/// What the guest said about its SERVER span during one request.
#[derive(Debug, Default)]
pub struct ServerNotes {
    /// The framework's route template (`/orders/<id>`), capped.
    pub route: Option<String>,
    /// Guest attributes, keys unique, in the order first set.
    pub attributes: Vec<KeyValue>,
    /// Each exception's event attributes (`exception.*`).
    pub exceptions: Vec<Vec<KeyValue>>,
}

/// Whether `key` belongs to the host on a SERVER span.
pub fn host_owned(key: &str) -> bool {
    key == "error.type" || HOST_OWNED_PREFIXES.iter().any(|p| key.starts_with(p))
}

impl RequestTrace {
    /// The route template the guest's framework matched; empty is ignored.
    pub fn set_route(&mut self, route: String) {
        if !route.is_empty() {
            self.server_notes.route = Some(self.cap_str(route));
        }
    }

    /// Attributes for the SERVER span; host-owned keys are left out and
    /// counted as invalid, keys past [`MAX_SERVER_ATTRIBUTES`] as cut.
    pub fn set_server_attributes(&mut self, attrs: Vec<KeyValue>) {
        for kv in attrs {
            if host_owned(kv.key.as_str()) {
                self.adjustments.invalid_values += 1;
                continue;
            }
            let kv = self.cap(kv);
            let notes = &mut self.server_notes.attributes;
            if let Some(old) = notes.iter_mut().find(|old| old.key == kv.key) {
                *old = kv;
            } else if notes.len() < MAX_SERVER_ATTRIBUTES {
                notes.push(kv);
            } else {
                self.adjustments.truncated_values += 1;
            }
        }
    }

    /// An exception for the SERVER span; past [`MAX_SERVER_EXCEPTIONS`]
    /// counted as cut.
    pub fn record_server_exception(
        &mut self,
        ty: String,
        message: String,
        stacktrace: Option<String>,
    ) {
        if self.server_notes.exceptions.len() >= MAX_SERVER_EXCEPTIONS {
            self.adjustments.truncated_values += 1;
            return;
        }
        let attrs = exception_attributes(ty, message, stacktrace)
            .into_iter()
            .map(|kv| self.cap(kv))
            .collect();
        self.server_notes.exceptions.push(attrs);
    }

    /// Take what the guest said about the SERVER span in this request.
    pub fn take_server_notes(&mut self) -> ServerNotes {
        std::mem::take(&mut self.server_notes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{start_span, tests::test_sink};
    use super::*;
    use opentelemetry::trace::{Span as _, SpanKind, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    fn request_trace(value_cap: usize) -> RequestTrace {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("t");
        let server = start_span(&tracer, "s".into(), SpanKind::Server, vec![], None);
        let cx = server.span_context().clone();
        RequestTrace::new(
            tracer,
            test_sink(),
            cx,
            String::new(),
            String::new(),
            true,
            value_cap,
        )
    }

    #[test]
    fn server_notes_keep_the_guests_and_count_what_they_refuse() {
        let mut rt = request_trace(32);
        rt.set_route(String::new());
        assert_eq!(rt.server_notes.route, None, "an empty route is ignored");
        rt.set_route("/orders/<order_id>".into());
        rt.set_route("/orders/<order_id>/items/<item_id>".into());
        // The last route wins, cut at the value cap.
        assert_eq!(
            rt.server_notes.route.as_deref(),
            Some("/orders/<order_id>/items/<item_i")
        );
        rt.set_server_attributes(vec![
            KeyValue::new("order.id", "o-1"),
            KeyValue::new("http.response.status_code", 200),
            KeyValue::new("error.type", "x"),
            KeyValue::new("order.id", "o-2"),
        ]);
        let many = (0..MAX_SERVER_ATTRIBUTES + 3).map(|i| KeyValue::new(format!("k{i}"), 1));
        rt.set_server_attributes(many.collect());
        for _ in 0..MAX_SERVER_EXCEPTIONS + 2 {
            rt.record_server_exception("E".into(), "m".into(), None);
        }
        let adjustments = rt.adjustments();
        let notes = rt.take_server_notes();
        assert_eq!(notes.attributes.len(), MAX_SERVER_ATTRIBUTES);
        assert_eq!(notes.attributes[0], KeyValue::new("order.id", "o-2"));
        assert_eq!(notes.exceptions.len(), MAX_SERVER_EXCEPTIONS);
        assert_eq!(adjustments.invalid_values, 2, "the two host-owned keys");
        // 1 cut route, 4 attributes past the cap, 2 exceptions past theirs.
        assert_eq!(adjustments.truncated_values, 1 + 4 + 2);
        assert!(rt.take_server_notes().route.is_none(), "taken once");
    }

    #[test]
    fn the_hosts_own_attributes_are_not_the_guests() {
        for key in [
            "http.route",
            "http.response.status_code",
            "url.path",
            "server.address",
            "client.address",
            "network.protocol.version",
            "user_agent.original",
            "polytrace.attributes.invalid",
            "error.type",
        ] {
            assert!(host_owned(key), "{key}");
        }
        for key in [
            "order.id",
            "user.id",
            "error",
            "http",
            "httpx.thing",
            "urls",
        ] {
            assert!(!host_owned(key), "{key}");
        }
    }
}
