//! OpenTelemetry HTTP semantic conventions (stable), applied to every
//! SERVER and CLIENT span the host makes, whatever the guest's language.

use opentelemetry::KeyValue;
use opentelemetry::trace::Status;
use std::borrow::Cow;

/// Query-string keys whose values the HTTP semantic conventions say to
/// replace with `REDACTED` in `url.query` and `url.full` by default (signed
/// URLs of AWS, Azure and Google Cloud).
const REDACTED_QUERY_KEYS: &[&str] = &["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// `query` with the values of [`REDACTED_QUERY_KEYS`] replaced by `REDACTED`
/// (keys compared exactly, as the conventions list them).
pub fn redact_query(query: &str) -> Cow<'_, str> {
    let sensitive = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(k, v)| !v.is_empty() && REDACTED_QUERY_KEYS.contains(&k))
    };
    if !query.split('&').any(sensitive) {
        return Cow::Borrowed(query);
    }
    Cow::Owned(
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if sensitive(pair) => format!("{k}=REDACTED"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// A value taken from the network, cut to `cap` bytes.
fn capped(value: &str, cap: usize) -> String {
    super::attributes::cap_string(value.to_string(), cap)
}

/// `http.request.method` of a request whose method is not one the HTTP
/// semantic conventions know.
pub const OTHER_METHOD: &str = "_OTHER";

/// The values `http.request.method` takes: the methods the HTTP semantic
/// conventions know, then [`OTHER_METHOD`] for every other.
pub const METHOD_VALUES: [&str; 11] = [
    "CONNECT",
    "DELETE",
    "GET",
    "HEAD",
    "OPTIONS",
    "PATCH",
    "POST",
    "PUT",
    "TRACE",
    "QUERY",
    OTHER_METHOD,
];

/// Where `method`'s `http.request.method` is in [`METHOD_VALUES`]
/// (methods are case-sensitive: `get` is not `GET`).
pub fn method_index(method: &str) -> usize {
    let known = &METHOD_VALUES[..METHOD_VALUES.len() - 1];
    known
        .iter()
        .position(|&m| m == method)
        .unwrap_or(known.len())
}

/// `http.request.method` for `method`: the known method, or
/// [`OTHER_METHOD`].
pub fn known_method(method: &str) -> &'static str {
    METHOD_VALUES[method_index(method)]
}

/// `http.request.method` for `method`, and `http.request.method_original`
/// when the method is not a known one.
pub fn method_attributes(method: &str) -> (&'static str, Option<KeyValue>) {
    let known = known_method(method);
    let original = (known == OTHER_METHOD)
        .then(|| KeyValue::new("http.request.method_original", method.to_string()));
    (known, original)
}

/// `url.scheme` as an attribute value: `http` and `https` without an
/// allocation.
pub fn scheme_value(scheme: &str) -> opentelemetry::Value {
    match scheme {
        "http" => "http".into(),
        "https" => "https".into(),
        other => other.to_string().into(),
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
    /// `network.protocol.version`: `1.1`, `2`, ….
    pub protocol_version: &'static str,
    pub user_agent: Option<&'a str>,
    /// Cap in bytes on every value taken from the client (path, query,
    /// user agent, `Host`, an unknown method): the same cap guests get.
    pub value_cap: usize,
}

impl ServerRequest<'_> {
    /// The method as a span name has it: the known method, or `HTTP` for
    /// any other (HTTP semantic conventions).
    pub fn span_method(&self) -> &'static str {
        match known_method(self.method) {
            OTHER_METHOD => "HTTP",
            method => method,
        }
    }

    /// The span name: `{method} {route}`, or `{method}` without a route.
    pub fn span_name(&self) -> String {
        let method = self.span_method();
        match self.route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        }
    }

    /// The SERVER span's request attributes. Values from the client are
    /// capped at `value_cap`; `url.query` has signed-URL secrets redacted.
    pub fn attributes(&self) -> Vec<KeyValue> {
        let cap = self.value_cap;
        let (method, original) = method_attributes(self.method);
        let original =
            original.map(|kv| KeyValue::new(kv.key, capped(kv.value.as_str().as_ref(), cap)));
        let mut attrs = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", capped(self.path, cap)),
            KeyValue::new("url.scheme", scheme_value(self.scheme)),
            KeyValue::new("network.protocol.version", self.protocol_version),
        ];
        attrs.extend(original);
        if let Some(q) = self.query.filter(|q| !q.is_empty()) {
            attrs.push(KeyValue::new("url.query", capped(&redact_query(q), cap)));
        }
        if let Some(r) = self.route {
            attrs.push(KeyValue::new("http.route", r.to_string()));
        }
        if let Some(a) = self.server_address {
            attrs.push(KeyValue::new("server.address", capped(a, cap)));
        }
        if let Some(p) = self.server_port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
        if let Some(c) = &self.client_address {
            attrs.push(KeyValue::new("client.address", c.clone()));
        }
        if let Some(ua) = self.user_agent {
            attrs.push(KeyValue::new("user_agent.original", capped(ua, cap)));
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
/// carries credentials (user and password become `REDACTED`), has
/// signed-URL secrets in the query redacted, and like every value from the
/// guest's URL is capped at `value_cap` bytes.
pub fn client_request(method: &str, uri: &http::Uri, value_cap: usize) -> (String, Vec<KeyValue>) {
    let (m, original) = method_attributes(method);
    let original =
        original.map(|kv| KeyValue::new(kv.key, capped(kv.value.as_str().as_ref(), value_cap)));
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or_default();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let userinfo = uri
        .authority()
        .and_then(|a| a.as_str().rsplit_once('@'))
        .map(|(info, _)| {
            if info.contains(':') {
                "REDACTED:REDACTED@"
            } else {
                "REDACTED@"
            }
        })
        .unwrap_or_default();
    let authority = match uri.port_u16() {
        Some(p) => format!("{userinfo}{host}:{p}"),
        None => format!("{userinfo}{host}"),
    };
    let path = uri.path();
    let query = uri
        .query()
        .map(|q| format!("?{}", redact_query(q)))
        .unwrap_or_default();
    let mut attrs = vec![
        KeyValue::new("http.request.method", m),
        KeyValue::new(
            "url.full",
            capped(&format!("{scheme}://{authority}{path}{query}"), value_cap),
        ),
        KeyValue::new("server.address", capped(host, value_cap)),
        KeyValue::new("server.port", i64::from(port)),
    ];
    attrs.extend(original);
    let name = if m == OTHER_METHOD { "HTTP" } else { m }.to_string();
    (name, attrs)
}

/// The attributes of `http.client.request.duration` known before the
/// response: method, server address and port, scheme (no URL: metrics keep
/// to low-cardinality attributes).
pub fn client_metric_attributes(method: &str, uri: &http::Uri, value_cap: usize) -> Vec<KeyValue> {
    let (m, _) = method_attributes(method);
    let scheme = uri.scheme_str().unwrap_or("http");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    vec![
        KeyValue::new("http.request.method", m),
        KeyValue::new(
            "server.address",
            capped(uri.host().unwrap_or_default(), value_cap),
        ),
        KeyValue::new("server.port", i64::from(port)),
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
        assert_eq!(method_attributes("GET"), ("GET", None));
        assert_eq!(
            method_attributes("get").0,
            "_OTHER",
            "methods are case-sensitive"
        );
        assert_eq!(known_method("QUERY"), "QUERY");
        assert_eq!(known_method(""), OTHER_METHOD);
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

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| match &kv.value {
                opentelemetry::Value::String(s) => s.as_str(),
                _ => panic!("{key} is not a string"),
            })
    }

    #[test]
    fn client_url_has_no_credentials() {
        let uri: http::Uri = "http://user:pw@example.com:8080/a?b=1".parse().unwrap();
        let (name, attrs) = client_request("GET", &uri, 4096);
        assert_eq!(name, "GET");
        // MUST NOT contain credentials; SHOULD be REDACTED:REDACTED.
        assert_eq!(
            attr(&attrs, "url.full"),
            Some("http://REDACTED:REDACTED@example.com:8080/a?b=1")
        );
        let uri: http::Uri = "https://token@example.com/".parse().unwrap();
        let (_, attrs) = client_request("GET", &uri, 4096);
        assert_eq!(
            attr(&attrs, "url.full"),
            Some("https://REDACTED@example.com/")
        );
        let uri: http::Uri = "http://example.com/a".parse().unwrap();
        let (_, attrs) = client_request("GET", &uri, 4096);
        assert_eq!(attr(&attrs, "url.full"), Some("http://example.com/a"));
        assert!(attrs.contains(&KeyValue::new("server.port", 80i64)));
    }

    #[test]
    fn signed_url_secrets_are_redacted() {
        assert_eq!(
            redact_query("a=1&AWSAccessKeyId=AKIA&Signature=abc&sig=x&X-Goog-Signature=y&b="),
            "a=1&AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&X-Goog-Signature=REDACTED&b="
        );
        // Exact keys only; other values untouched and borrowed.
        assert!(matches!(
            redact_query("signature=1&q=Signature"),
            Cow::Borrowed(_)
        ));
        let uri: http::Uri = "https://bucket.s3.amazonaws.com/o?X-Amz-Date=1&Signature=s3cr3t"
            .parse()
            .unwrap();
        let (_, attrs) = client_request("GET", &uri, 4096);
        assert_eq!(
            attr(&attrs, "url.full"),
            Some("https://bucket.s3.amazonaws.com/o?X-Amz-Date=1&Signature=REDACTED")
        );
        let r = ServerRequest {
            query: Some("sig=abc&x=1"),
            ..request()
        };
        assert_eq!(attr(&r.attributes(), "url.query"), Some("sig=REDACTED&x=1"));
    }

    #[test]
    fn values_from_the_network_are_capped() {
        let long_query = format!("q={}", "x".repeat(60_000));
        let long_path = format!("/{}", "é".repeat(100));
        let ua = "u".repeat(9000);
        let host = "h".repeat(5000);
        let r = ServerRequest {
            method: "FETCHFETCHFETCH",
            path: &long_path,
            query: Some(&long_query),
            user_agent: Some(&ua),
            server_address: Some(&host),
            value_cap: 64,
            ..request()
        };
        let attrs = r.attributes();
        for key in [
            "url.query",
            "url.path",
            "user_agent.original",
            "server.address",
            "http.request.method_original",
        ] {
            let v = attr(&attrs, key).unwrap_or_else(|| panic!("{key}"));
            assert!(v.len() <= 64, "{key}: {} bytes", v.len());
        }
        // Cut on a character boundary.
        assert_eq!(attr(&attrs, "url.path").unwrap().len(), 63);
        let uri: http::Uri = format!("http://example.com/?{long_query}").parse().unwrap();
        let (_, attrs) = client_request("GET", &uri, 64);
        assert_eq!(attr(&attrs, "url.full").unwrap().len(), 64);
    }

    fn request() -> ServerRequest<'static> {
        ServerRequest {
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
            value_cap: 4096,
        }
    }

    #[test]
    fn server_span_name() {
        assert_eq!(request().span_name(), "GET /hello/*");
    }
}
