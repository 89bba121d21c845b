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
    use super::*;

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
