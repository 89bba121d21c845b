//! OpenTelemetry HTTP semantic conventions (stable), applied to every
//! SERVER and CLIENT span the host makes, whatever the guest's language.

use opentelemetry::KeyValue;
use opentelemetry::trace::Status;

/// The methods the HTTP semantic conventions know; others become `_OTHER`.
const KNOWN_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY",
];

/// `http.request.method` for `method`, and `http.request.method_original`
/// when the method is not a known one.
pub fn method_attributes(method: &str) -> (String, Option<KeyValue>) {
    if KNOWN_METHODS.contains(&method) {
        (method.to_string(), None)
    } else {
        (
            "_OTHER".to_string(),
            Some(KeyValue::new(
                "http.request.method_original",
                method.to_string(),
            )),
        )
    }
}

/// What the host knows about an inbound request when its SERVER span starts.
pub struct ServerRequest<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The matched low-cardinality route (`http.route`), if any.
    pub route: Option<&'a str>,
    pub server_address: Option<&'a str>,
    pub server_port: Option<u16>,
    pub client_address: Option<String>,
    pub protocol_version: &'a str,
    pub user_agent: Option<&'a str>,
}

impl ServerRequest<'_> {
    /// The span name: `{method} {route}`, or `{method}` without a route.
    pub fn span_name(&self) -> String {
        let (method, _) = method_attributes(self.method);
        let method = if method == "_OTHER" {
            "HTTP".to_string()
        } else {
            method
        };
        match self.route {
            Some(route) => format!("{method} {route}"),
            None => method,
        }
    }

    pub fn attributes(&self) -> Vec<KeyValue> {
        let (method, original) = method_attributes(self.method);
        let mut attrs = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", self.path.to_string()),
            KeyValue::new("url.scheme", self.scheme.to_string()),
            KeyValue::new(
                "network.protocol.version",
                self.protocol_version.to_string(),
            ),
        ];
        attrs.extend(original);
        if let Some(q) = self.query.filter(|q| !q.is_empty()) {
            attrs.push(KeyValue::new("url.query", q.to_string()));
        }
        if let Some(r) = self.route {
            attrs.push(KeyValue::new("http.route", r.to_string()));
        }
        if let Some(a) = self.server_address {
            attrs.push(KeyValue::new("server.address", a.to_string()));
        }
        if let Some(p) = self.server_port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
        if let Some(c) = &self.client_address {
            attrs.push(KeyValue::new("client.address", c.clone()));
        }
        if let Some(ua) = self.user_agent {
            attrs.push(KeyValue::new("user_agent.original", ua.to_string()));
        }
        attrs
    }
}

/// Attributes and status once a SERVER span's response is known: Error on
/// 5xx only (a 4xx is the client's problem, not the server's).
pub fn server_response(status: u16) -> (Vec<KeyValue>, Status) {
    let mut attrs = vec![KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    )];
    if status >= 500 {
        attrs.push(KeyValue::new("error.type", status.to_string()));
        (attrs, Status::error(""))
    } else {
        (attrs, Status::Unset)
    }
}

/// Attributes and status once a CLIENT span's response is known: Error on
/// 4xx and 5xx.
pub fn client_response(status: u16) -> (Vec<KeyValue>, Status) {
    let mut attrs = vec![KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    )];
    if status >= 400 {
        attrs.push(KeyValue::new("error.type", status.to_string()));
        (attrs, Status::error(""))
    } else {
        (attrs, Status::Unset)
    }
}

/// The CLIENT span name and its request attributes. `url.full` never
/// carries credentials.
pub fn client_request(method: &str, uri: &http::Uri) -> (String, Vec<KeyValue>) {
    let (m, original) = method_attributes(method);
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or_default();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut attrs = vec![
        KeyValue::new("http.request.method", m.clone()),
        KeyValue::new(
            "url.full",
            format!("{scheme}://{authority}{path_and_query}"),
        ),
        KeyValue::new("server.address", host.to_string()),
        KeyValue::new("server.port", i64::from(port)),
    ];
    attrs.extend(original);
    let name = if m == "_OTHER" { "HTTP".to_string() } else { m };
    (name, attrs)
}

/// The attributes of `http.client.request.duration` known before the
/// response: method, server address and port, scheme (no URL: metrics keep
/// to low-cardinality attributes).
pub fn client_metric_attributes(method: &str, uri: &http::Uri) -> Vec<KeyValue> {
    let (m, _) = method_attributes(method);
    let scheme = uri.scheme_str().unwrap_or("http");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    vec![
        KeyValue::new("http.request.method", m),
        KeyValue::new("server.address", uri.host().unwrap_or_default().to_string()),
        KeyValue::new("server.port", i64::from(port)),
        KeyValue::new("url.scheme", scheme.to_string()),
    ]
}

/// The attributes of `http.server.active_requests`: method and scheme.
pub fn server_active_attributes(method: &str, scheme: &str) -> Vec<KeyValue> {
    let (m, _) = method_attributes(method);
    vec![
        KeyValue::new("http.request.method", m),
        KeyValue::new("url.scheme", scheme.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_become_other() {
        let (m, orig) = method_attributes("FETCH");
        assert_eq!(m, "_OTHER");
        assert_eq!(orig.unwrap().value.as_str(), "FETCH");
        assert_eq!(method_attributes("GET"), ("GET".to_string(), None));
    }

    #[test]
    fn status_rules_differ_for_server_and_client() {
        assert_eq!(server_response(404).1, Status::Unset);
        assert!(matches!(server_response(503).1, Status::Error { .. }));
        assert!(matches!(client_response(404).1, Status::Error { .. }));
        assert_eq!(client_response(200).1, Status::Unset);
        assert_eq!(
            server_response(500).0[1],
            KeyValue::new("error.type", "500")
        );
    }

    #[test]
    fn client_url_has_no_credentials() {
        let uri: http::Uri = "http://user:pw@example.com:8080/a?b=1".parse().unwrap();
        let (name, attrs) = client_request("GET", &uri);
        assert_eq!(name, "GET");
        assert!(attrs.contains(&KeyValue::new("url.full", "http://example.com:8080/a?b=1")));
        assert!(attrs.contains(&KeyValue::new("server.port", 8080i64)));
    }

    #[test]
    fn server_span_name() {
        let r = ServerRequest {
            method: "GET",
            scheme: "http",
            path: "/hello/x",
            query: None,
            route: Some("/hello/*"),
            server_address: None,
            server_port: None,
            client_address: None,
            protocol_version: "1.1",
            user_agent: None,
        };
        assert_eq!(r.span_name(), "GET /hello/*");
    }
}
