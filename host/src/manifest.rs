//! The application manifest (`polytrace.toml`): model, parsing and validation.
//!
//! Every problem is reported as a [`Diagnostic`] with the file, line and
//! column it comes from, and all problems are collected before giving up so
//! a user fixes a broken manifest in one pass.

use crate::telemetry::propagation::Share;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The file name `polytrace up DIR` looks for.
pub const MANIFEST_FILE: &str = "polytrace.toml";

/// Default per-request timeout of a component.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default linear-memory limit of a component instance.
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// The largest memory limit a component may ask for.
pub const MAX_MEMORY_MB: u64 = 4096;
/// Default for how many requests one reused instance serves before it is
/// replaced by a fresh one (bounds slow leaks in guest code).
pub const DEFAULT_REQUESTS_PER_INSTANCE: u32 = 10_000;
/// Default for how long a warm instance may sit idle before it is dropped
/// (its memory returned).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a component's instances are used across requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Warm instances serve requests one after another (module globals
    /// persist, as in any long-running service). The default.
    #[default]
    Reuse,
    /// A fresh instance for every request: nothing survives a request
    /// (for code that must not share state between requests).
    PerRequest,
}

impl Isolation {
    /// The manifest spelling: `reuse` or `per-request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Reuse => "reuse",
            Isolation::PerRequest => "per-request",
        }
    }
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file, as given.
    pub path: PathBuf,
    /// The directory relative paths are resolved against.
    pub dir: PathBuf,
    /// The application name: `service.namespace` of every component.
    pub app: String,
    /// The application version: the default `service.version`.
    pub version: Option<String>,
    pub telemetry: TelemetryConfig,
    pub components: Vec<Component>,
}

/// The `[telemetry]` section (defined with the settings it resolves into).
pub use crate::telemetry::config::TelemetryConfig;

/// One component of the application.
#[derive(Debug, Clone)]
pub struct Component {
    /// Its `service.name` and the host name other components call it by.
    pub id: String,
    /// The `.wasm` file, resolved against the manifest's directory.
    pub source: PathBuf,
    /// The route on the shared listener, if any.
    pub route: Option<Route>,
    /// A listener of its own (every path goes to this component), if any.
    pub listen: Option<std::net::SocketAddr>,
    pub language: Option<String>,
    pub version: Option<String>,
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    /// Which propagation headers go to which network destinations.
    pub propagation: Propagation,
    pub env: BTreeMap<String, String>,
    /// The SQL databases it may open, by the name it opens them by.
    pub sql: BTreeMap<String, crate::data::sql::Database>,
    /// SQL files the host runs on granted databases when it starts,
    /// before the first request (`schema` in a grant), by grant name,
    /// resolved against the manifest's directory.
    pub sql_schema: BTreeMap<String, PathBuf>,
    /// The key-value stores it may open (`wasi:keyvalue` `store.open`),
    /// by the identifier it opens them by.
    pub keyvalue: BTreeMap<String, crate::data::kv::Store>,
    pub build: Option<String>,
    pub timeout: Duration,
    pub memory_bytes: u64,
    /// Reuse warm instances, or one fresh instance per request.
    pub isolation: Isolation,
    /// Requests one reused instance serves before it is replaced.
    pub requests_per_instance: u32,
    /// How long a warm instance may sit idle before it is dropped.
    pub idle_timeout: Duration,
    /// Where the component is declared, for messages about it.
    pub location: Location,
}

/// A route pattern: `/exact/path` or `/prefix/...` (everything below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pattern: String,
    prefix: Option<String>,
}

impl Route {
    /// Parse a route pattern.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("route `{pattern}` must start with `/`"));
        }
        if pattern.contains(['?', '#', ' ']) {
            return Err(format!(
                "route `{pattern}` may not contain `?`, `#` or spaces"
            ));
        }
        let prefix = match pattern.strip_suffix("/...") {
            Some(p) => Some(p.to_string()),
            None if pattern.contains("...") => {
                return Err(format!(
                    "route `{pattern}`: `...` is only allowed as the last segment, as in `/api/...`"
                ));
            }
            None => None,
        };
        Ok(Route {
            pattern: pattern.to_string(),
            prefix,
        })
    }

    /// The pattern as written in the manifest.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The low-cardinality `http.route` value: `/api/*` for `/api/...`.
    pub fn http_route(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/*"),
            None => self.pattern.clone(),
        }
    }

    /// Whether `path` is served by this route; longer matches win in [`Router`].
    pub fn matches(&self, path: &str) -> Option<usize> {
        match &self.prefix {
            None => (path == self.pattern).then_some(usize::MAX),
            Some(p) => {
                let rest = path.strip_prefix(p.as_str())?;
                (rest.is_empty() || rest.starts_with('/') || p.is_empty()).then_some(p.len())
            }
        }
    }
}

/// Which trace-context headers a component sends to network destinations
/// (`[component.propagation]`). Another component always gets
/// `traceparent`, `tracestate` and `baggage`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Propagation {
    /// Hosts that are part of the system (`internal_hosts`, same patterns as
    /// `allowed_outbound_hosts`): they get all three headers, as a component does.
    pub internal_hosts: Vec<AllowedHost>,
    /// What every other host gets (`external`): `none` (the default),
    /// `traceparent`, or `trace-context` (`traceparent` and `tracestate`).
    /// `baggage` never goes to a host not listed as internal.
    pub external: Share,
}

impl Propagation {
    /// The headers a request to `scheme://host:port` may carry.
    pub fn share(&self, scheme: &str, host: &str, port: u16) -> Share {
        if self
            .internal_hosts
            .iter()
            .any(|h| h.allows(scheme, host, port))
        {
            Share::All
        } else {
            self.external
        }
    }
}

/// An entry of `allowed_outbound_hosts`: `scheme://host[:port]`, where any
/// part may be `*` and the host may be `*.domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
    any_port: bool,
}

impl AllowedHost {
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "allowed outbound host `{s}` is not `scheme://host[:port]` \
                 (for example `http://127.0.0.1:8080`, `https://*.example.com`, `*://*:*`)"
            )
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(err)?;
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_string()),
            _ => return Err(err()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(err());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let (port, any_port) = match port {
            None => (None, false),
            Some("*") => (None, true),
            Some(p) => (Some(p.parse::<u16>().map_err(|_| err())?), false),
        };
        if host.is_empty() {
            return Err(err());
        }
        Ok(AllowedHost {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            any_port,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if let Some(s) = &self.scheme
            && s != scheme
        {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host_ok = if self.host == "*" {
            true
        } else if let Some(domain) = self.host.strip_prefix("*.") {
            host.strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
        } else {
            self.host == host
        };
        let port_ok = self.any_port
            || match self.port {
                Some(p) => p == port,
                None => match &self.scheme {
                    Some(s) => port == default_port(s),
                    None => port == 80 || port == 443,
                },
            };
        host_ok && port_ok
    }
}

/// The port a scheme implies.
pub fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// Where something is declared in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem in a manifest or one of its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub location: Location,
    pub component: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.file.display(),
            self.location.line,
            self.location.column
        )?;
        if let Some(c) = &self.component {
            write!(f, "component `{c}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a manifest.
#[derive(Debug, thiserror::Error)]
pub struct ManifestError(pub Vec<Diagnostic>);

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the manifest:",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.0 {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    app: Spanned<String>,
    version: Option<String>,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    component: Vec<Spanned<RawComponent>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPropagation {
    #[serde(default)]
    internal_hosts: Vec<Spanned<String>>,
    external: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    id: Spanned<String>,
    source: Spanned<String>,
    route: Option<Spanned<String>>,
    language: Option<Spanned<String>>,
    version: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    propagation: RawPropagation,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `NAME = "URL"` or `NAME = { url = "URL", schema = "FILE" }`.
    #[serde(default)]
    sql: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    keyvalue: BTreeMap<String, Spanned<String>>,
    build: Option<String>,
    listen: Option<Spanned<String>>,
    isolation: Option<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    request_timeout_ms: Option<Spanned<u64>>,
    memory_mb: Option<Spanned<u64>>,
    requests_per_instance: Option<Spanned<u64>>,
    instance_idle_timeout_ms: Option<Spanned<u64>>,
}

/// Languages polytrace knows how to label; others are accepted with a warning-free
/// pass-through so new toolchains need no host change.
pub const KNOWN_LANGUAGES: &[&str] = &["rust", "python", "javascript", "go", "c"];

impl Manifest {
    /// Find the manifest: `path` itself, or `path/polytrace.toml` for a directory.
    pub fn locate(path: &Path) -> PathBuf {
        if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        }
    }

    /// Read, parse and validate a manifest file (or a directory holding one).
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let file = Self::locate(path);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            ManifestError(vec![Diagnostic {
                file: file.clone(),
                location: Location { line: 0, column: 0 },
                component: None,
                message: format!(
                    "cannot read the manifest: {e} (pass a `{MANIFEST_FILE}` file or the directory holding one)"
                ),
            }])
        })?;
        Self::parse(&file, &text)
    }

    /// Parse and validate manifest text; `file` names it in diagnostics and
    /// anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let at = |span: std::ops::Range<usize>| location(text, span.start);
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let location = e.span().map(&at).unwrap_or_default();
            ManifestError(vec![Diagnostic {
                file: file.to_path_buf(),
                location,
                component: None,
                message: e.message().trim().to_string(),
            }])
        })?;

        let mut problems = Vec::new();
        let mut problem = |loc: Location, component: Option<&str>, message: String| {
            problems.push(Diagnostic {
                file: file.to_path_buf(),
                location: loc,
                component: component.map(str::to_string),
                message,
            })
        };

        if raw.app.get_ref().trim().is_empty() {
            problem(at(raw.app.span()), None, "`app` must not be empty".into());
        }
        if raw.component.is_empty() {
            problem(
                Location { line: 1, column: 1 },
                None,
                "no components: add a `[[component]]` table with `id`, `source` and `route`".into(),
            );
        }
        validate_telemetry(&raw.telemetry)
            .map_err(|(key, m)| problem(telemetry_location(text, key), None, m))
            .ok();

        let mut components: Vec<Component> = Vec::new();
        for spanned in &raw.component {
            let loc = at(spanned.span());
            let c = spanned.get_ref();
            let id = c.id.get_ref().clone();
            if let Err(m) = validate_id(&id) {
                problem(at(c.id.span()), Some(&id), m);
            }
            if components.iter().any(|o| o.id == id) {
                problem(
                    at(c.id.span()),
                    Some(&id),
                    format!("duplicate component id `{id}`: ids must be unique"),
                );
            }
            let route = match &c.route {
                None => None,
                Some(r) => match Route::parse(r.get_ref()) {
                    Ok(route) => {
                        if let Some(other) = components.iter().find(|o| {
                            o.route
                                .as_ref()
                                .is_some_and(|or| or.pattern == route.pattern)
                        }) {
                            problem(
                                at(r.span()),
                                Some(&id),
                                format!(
                                    "route `{}` is already served by component `{}`",
                                    route.pattern, other.id
                                ),
                            );
                        }
                        Some(route)
                    }
                    Err(m) => {
                        problem(at(r.span()), Some(&id), m);
                        None
                    }
                },
            };
            let source = c.source.get_ref();
            if source.trim().is_empty() {
                problem(
                    at(c.source.span()),
                    Some(&id),
                    "`source` must name a .wasm file".into(),
                );
            }
            if let Some(lang) = &c.language
                && !KNOWN_LANGUAGES.contains(&lang.get_ref().as_str())
            {
                problem(
                    at(lang.span()),
                    Some(&id),
                    format!(
                        "unknown language `{}`: use one of {}",
                        lang.get_ref(),
                        KNOWN_LANGUAGES.join(", ")
                    ),
                );
            }
            let mut allowed = Vec::new();
            for h in &c.allowed_outbound_hosts {
                match AllowedHost::parse(h.get_ref()) {
                    Ok(a) => allowed.push(a),
                    Err(m) => problem(at(h.span()), Some(&id), m),
                }
            }
            let mut propagation = Propagation::default();
            for h in &c.propagation.internal_hosts {
                match AllowedHost::parse(h.get_ref()) {
                    Ok(a) => propagation.internal_hosts.push(a),
                    Err(m) => problem(
                        at(h.span()),
                        Some(&id),
                        format!("propagation.internal_hosts: {m}"),
                    ),
                }
            }
            if let Some(e) = &c.propagation.external {
                propagation.external = match e.get_ref().as_str() {
                    "none" => Share::Nothing,
                    "traceparent" => Share::Traceparent,
                    "trace-context" => Share::TraceContext,
                    other => {
                        problem(
                            at(e.span()),
                            Some(&id),
                            format!(
                                "propagation.external = `{other}`: use `none`, `traceparent` or \
                                 `trace-context` (baggage goes only to internal_hosts)"
                            ),
                        );
                        Share::Nothing
                    }
                };
            }
            let listen = c.listen.as_ref().and_then(|l| match l.get_ref().parse::<std::net::SocketAddr>() {
                Ok(addr) => {
                    // Port 0 is a fresh port each time; any other can be
                    // bound once.
                    if let Some(other) = components
                        .iter()
                        .find(|o| addr.port() != 0 && o.listen == Some(addr))
                    {
                        problem(
                            at(l.span()),
                            Some(&id),
                            format!(
                                "`listen` = `{addr}` is already the listener of component `{}`: \
                                 each component's own listener needs an address of its own",
                                other.id
                            ),
                        );
                    }
                    Some(addr)
                }
                Err(_) => {
                    problem(
                        at(l.span()),
                        Some(&id),
                        format!(
                            "`listen` = `{}` is not an address: use `IP:PORT`, as in `127.0.0.1:8081`",
                            l.get_ref()
                        ),
                    );
                    None
                }
            });
            // Limits that must be above 0: the value, or `None` when absent
            // or reported as wrong.
            let mut above_zero = |limit: &Option<Spanned<u64>>, name: &str| {
                let l = limit.as_ref()?;
                if *l.get_ref() == 0 {
                    problem(at(l.span()), Some(&id), format!("`{name}` must be above 0"));
                    return None;
                }
                Some(*l.get_ref())
            };
            let timeout = above_zero(&c.limits.request_timeout_ms, "request_timeout_ms")
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
            let requests_per_instance =
                above_zero(&c.limits.requests_per_instance, "requests_per_instance")
                    .map_or(DEFAULT_REQUESTS_PER_INSTANCE, |n| {
                        u32::try_from(n).unwrap_or(u32::MAX)
                    });
            let idle_timeout = above_zero(
                &c.limits.instance_idle_timeout_ms,
                "instance_idle_timeout_ms",
            )
            .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis);
            let memory_mb = match &c.limits.memory_mb {
                Some(m) if *m.get_ref() == 0 || *m.get_ref() > MAX_MEMORY_MB => {
                    problem(
                        at(m.span()),
                        Some(&id),
                        format!("`memory_mb` must be between 1 and {MAX_MEMORY_MB}"),
                    );
                    DEFAULT_MEMORY_MB
                }
                Some(m) => *m.get_ref(),
                None => DEFAULT_MEMORY_MB,
            };
            let isolation = match c.isolation.as_ref().map(|i| (i, i.get_ref().as_str())) {
                None | Some((_, "reuse")) => Isolation::Reuse,
                Some((_, "per-request")) => Isolation::PerRequest,
                Some((i, other)) => {
                    problem(
                        at(i.span()),
                        Some(&id),
                        format!(
                            "`isolation` = `{other}`: use `reuse` (warm instances serve request after request) \
                             or `per-request` (a fresh instance for every request)"
                        ),
                    );
                    Isolation::Reuse
                }
            };
            let mut sql = BTreeMap::new();
            let mut sql_schema = BTreeMap::new();
            for (name, grant) in &c.sql {
                if !is_grant_name(name) {
                    problem(
                        at(grant.span()),
                        Some(&id),
                        format!(
                            "sql: `{name}` is not a database name: use letters, digits, `_` and `-`"
                        ),
                    );
                    continue;
                }
                let (url, schema) = match sql_grant(grant.get_ref()) {
                    Ok(parts) => parts,
                    Err(m) => {
                        problem(at(grant.span()), Some(&id), format!("sql.{name}: {m}"));
                        continue;
                    }
                };
                match crate::data::sql::Database::parse(url, &dir) {
                    Ok(db) => {
                        sql.insert(name.clone(), db);
                    }
                    Err(m) => problem(at(grant.span()), Some(&id), format!("sql.{name}: {m}")),
                }
                if let Some(schema) = schema {
                    sql_schema.insert(name.clone(), dir.join(schema));
                }
            }
            let mut keyvalue = BTreeMap::new();
            for (name, value) in &c.keyvalue {
                if !is_grant_name(name) {
                    problem(
                        at(value.span()),
                        Some(&id),
                        format!(
                            "keyvalue: `{name}` is not a store name: use letters, digits, `_` and `-`"
                        ),
                    );
                    continue;
                }
                match crate::data::kv::Store::parse(value.get_ref(), &dir) {
                    Ok(store) => {
                        keyvalue.insert(name.clone(), store);
                    }
                    Err(m) => problem(at(value.span()), Some(&id), format!("keyvalue.{name}: {m}")),
                }
            }
            components.push(Component {
                id,
                source: dir.join(source),
                route,
                listen,
                language: c.language.as_ref().map(|l| l.get_ref().clone()),
                version: c.version.clone(),
                allowed_outbound_hosts: allowed,
                propagation,
                env: c.env.clone(),
                sql,
                sql_schema,
                keyvalue,
                build: c.build.clone(),
                timeout,
                memory_bytes: memory_mb * 1024 * 1024,
                isolation,
                requests_per_instance,
                idle_timeout,
                location: loc,
            });
        }
        if !problems.is_empty() {
            return Err(ManifestError(problems));
        }
        Ok(Manifest {
            path: file.to_path_buf(),
            dir,
            app: raw.app.into_inner(),
            version: raw.version,
            telemetry: raw.telemetry,
            components,
        })
    }

    /// A diagnostic about one component, anchored at its declaration.
    pub fn component_problem(&self, c: &Component, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.path.clone(),
            location: c.location.clone(),
            component: Some(c.id.clone()),
            message: message.into(),
        }
    }
}

fn validate_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.as_bytes()[0].is_ascii_lowercase()
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "id `{id}` must be a DNS label: lowercase letters, digits and `-`, starting with a letter \
             (other components call it as http://{id}/...)"
        ))
    }
}

/// The `[telemetry]` values that are not what they may be: the key of the
/// first wrong one and what is wrong with it.
fn validate_telemetry(t: &TelemetryConfig) -> Result<(), (&'static str, String)> {
    if let Some(e) = &t.exporter {
        crate::telemetry::config::parse_exporters(e)
            .map_err(|m| ("exporter", format!("[telemetry] {m}")))?;
    }
    for (key, value) in [
        ("metrics_exporter", &t.metrics_exporter),
        ("logs_exporter", &t.logs_exporter),
    ] {
        if let Some(v) = value {
            crate::telemetry::config::parse_signal_exporter(v)
                .map_err(|m| (key, format!("[telemetry] {key}: {m}")))?;
        }
    }
    if let Some(p) = &t.protocol
        && !matches!(p.as_str(), "grpc" | "http/protobuf")
    {
        return Err((
            "protocol",
            format!("[telemetry] protocol `{p}`: use `http/protobuf` or `grpc`"),
        ));
    }
    Ok(())
}

/// Where `key` of the `[telemetry]` table is written in `text` (the
/// table's header when the key is not found on a line of its own; the
/// first line when there is no such header either).
fn telemetry_location(text: &str, key: &str) -> Location {
    let mut offset = 0;
    let mut in_table = false;
    let mut header = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_table = trimmed.starts_with("[telemetry]");
            if in_table {
                header = Some(offset + line.len() - trimmed.len());
            }
        } else if in_table
            && trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return location(text, offset + line.len() - trimmed.len());
        }
        offset += line.len();
    }
    header.map_or(Location { line: 1, column: 1 }, |h| location(text, h))
}

fn location(text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    Location { line, column }
}

/// Whether `name` may name a granted database or key-value store: ASCII
/// letters, digits, `_` and `-`, at least one.
/// A `sql` grant's URL and schema file: `"URL"` or
/// `{ url = "URL", schema = "FILE" }`.
fn sql_grant(value: &toml::Value) -> Result<(&str, Option<&str>), String> {
    const SHAPE: &str =
        "write `\"sqlite:FILE\"`, `\"postgres://…\"` or `{ url = \"…\", schema = \"FILE.sql\" }`";
    match value {
        toml::Value::String(url) => Ok((url, None)),
        toml::Value::Table(table) => {
            if let Some(key) = table.keys().find(|k| *k != "url" && *k != "schema") {
                return Err(format!("unknown key `{key}`: {SHAPE}"));
            }
            let url = match table.get("url") {
                Some(toml::Value::String(url)) => url,
                _ => return Err(format!("`url` must be a string: {SHAPE}")),
            };
            match table.get("schema") {
                None => Ok((url, None)),
                Some(toml::Value::String(f)) if !f.is_empty() => Ok((url, Some(f))),
                _ => Err(format!("`schema` must name a file: {SHAPE}")),
            }
        }
        _ => Err(SHAPE.to_string()),
    }
}

fn is_grant_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("app/polytrace.toml"), text)
    }

    #[test]
    fn a_valid_manifest() {
        let m = parse(
            r#"
app = "shop"
[telemetry]
headers = { "uptrace-dsn" = "http://x@localhost:14318/1" }

[[component]]
id = "api-gateway"
source = "gw.wasm"
route = "/api/..."
language = "python"
allowed_outbound_hosts = ["http://127.0.0.1:8080"]
env = { MODE = "demo" }
limits = { request_timeout_ms = 500, memory_mb = 64 }
"#,
        )
        .unwrap();
        let c = &m.components[0];
        assert_eq!(m.app, "shop");
        assert_eq!(c.source, Path::new("app/gw.wasm"));
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.memory_bytes, 64 << 20);
        assert_eq!(c.route.as_ref().unwrap().http_route(), "/api/*");
        assert_eq!(c.location.line, 6);
        assert_eq!(
            m.telemetry.headers["uptrace-dsn"],
            "http://x@localhost:14318/1"
        );
    }

    #[test]
    fn sql_grants_resolve_beside_the_manifest_and_are_checked() {
        let m = parse(
            r#"
app = "shop"
[[component]]
id = "orders"
source = "o.wasm"
sql = { orders = "sqlite:data/orders.db" }
"#,
        )
        .unwrap();
        assert_eq!(
            m.components[0].sql["orders"],
            crate::data::sql::Database::Sqlite {
                path: "app/data/orders.db".into(),
                namespace: "data/orders.db".into()
            }
        );
        let err = parse(
            r#"
app = "shop"
[[component]]
id = "orders"
source = "o.wasm"
sql = { orders = "mysql://db/orders", "my db" = "sqlite:x.db" }
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sql.orders: `mysql://db/orders` is not a database"),
            "{err}"
        );
        assert!(err.contains("`my db` is not a database name"), "{err}");
        assert!(err.contains(":6:"), "errors point at the line: {err}");
        // The table form, with a schema the host runs at start.
        let m = parse(
            r#"
app = "shop"
[[component]]
id = "orders"
source = "o.wasm"
sql = { orders = { url = "sqlite:o.db", schema = "schema/orders.sql" }, plain = "sqlite:p.db" }
"#,
        )
        .unwrap();
        let c = &m.components[0];
        assert_eq!(c.sql.len(), 2);
        assert_eq!(c.sql_schema.len(), 1);
        assert_eq!(c.sql_schema["orders"], Path::new("app/schema/orders.sql"));
        for (grant, says) in [
            (
                r#"{ url = "sqlite:o.db", schema = 3 }"#,
                "`schema` must name a file",
            ),
            (r#"{ schema = "s.sql" }"#, "`url` must be a string"),
            (
                r#"{ url = "sqlite:o.db", migrations = "m" }"#,
                "unknown key `migrations`",
            ),
            ("42", "write `\"sqlite:FILE\"`"),
        ] {
            let err = parse(&format!(
                "app = \"shop\"\n[[component]]\nid = \"o\"\nsource = \"o.wasm\"\nsql = {{ orders = {grant} }}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(says), "{grant}: {err}");
            assert!(err.contains("sql.orders"), "{grant}: {err}");
        }
    }

    #[test]
    fn isolation_defaults_to_reuse_and_is_checked() {
        let m = parse(
            r#"
app = "shop"
[[component]]
id = "a"
source = "a.wasm"

[[component]]
id = "b"
source = "b.wasm"
isolation = "per-request"
limits = { requests_per_instance = 50, instance_idle_timeout_ms = 1500 }
"#,
        )
        .unwrap();
        assert_eq!(m.components[0].isolation, Isolation::Reuse);
        assert_eq!(
            m.components[0].requests_per_instance,
            DEFAULT_REQUESTS_PER_INSTANCE
        );
        assert_eq!(m.components[1].isolation, Isolation::PerRequest);
        assert_eq!(m.components[1].requests_per_instance, 50);
        assert_eq!(m.components[1].idle_timeout, Duration::from_millis(1500));
        assert_eq!(m.components[0].idle_timeout, DEFAULT_IDLE_TIMEOUT);

        let err = parse(
            r#"app = "shop"
[[component]]
id = "a"
source = "a.wasm"
isolation = "fresh"
limits = { requests_per_instance = 0 }
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "app/polytrace.toml:5:13: component `a`: `isolation` = `fresh`: use `reuse`"
            ),
            "{err}"
        );
        assert!(
            err.contains("`requests_per_instance` must be above 0"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let err = parse(
            r#"app = "shop"
[[component]]
id = "Bad_Id"
source = "a.wasm"
route = "nope"

[[component]]
id = "b"
source = "b.wasm"
allowed_outbound_hosts = ["ftp://x"]
limits = { memory_mb = 0 }
"#,
        )
        .unwrap_err();
        let lines: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with(
            "app/polytrace.toml:3:6: component `Bad_Id`: id `Bad_Id` must be a DNS label"
        ));
        assert!(lines[1].starts_with(
            "app/polytrace.toml:5:9: component `Bad_Id`: route `nope` must start with `/`"
        ));
        assert!(lines[2].starts_with(
            "app/polytrace.toml:10:27: component `b`: allowed outbound host `ftp://x`"
        ));
        assert!(
            lines[3].starts_with(
                "app/polytrace.toml:11:24: component `b`: `memory_mb` must be between"
            )
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_the_line() {
        let err =
            parse("app = \"x\"\n[[component]]\nid = \"a\"\nsource = \"a.wasm\"\nrout = \"/\"\n")
                .unwrap_err();
        let d = &err.0[0];
        assert_eq!(d.location.line, 5);
        assert!(d.message.contains("unknown field `rout`"), "{}", d.message);
        let err = parse("app = \n").unwrap_err();
        assert_eq!(err.0[0].location.line, 1);
    }

    #[test]
    fn duplicate_ids_and_routes() {
        let err = parse(
            "app = \"x\"\n[[component]]\nid = \"a\"\nsource = \"a.wasm\"\nroute = \"/\"\n\
             [[component]]\nid = \"a\"\nsource = \"b.wasm\"\nroute = \"/\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert!(err.0[0].message.contains("duplicate component id"));
        assert!(err.0[1].message.contains("already served by component `a`"));
    }

    #[test]
    fn a_wrong_telemetry_value_is_located_at_its_key() {
        let err = parse(
            "app = \"x\"\n[telemetry]\nprotocol = \"grpc\"\n  exporter = \"carrier-pigeon\"\n\
             [[component]]\nid = \"a\"\nsource = \"a.wasm\"\nroute = \"/\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].message.contains("carrier-pigeon"));
        assert_eq!((err.0[0].location.line, err.0[0].location.column), (4, 3));
    }

    #[test]
    fn two_components_cannot_share_a_listen_address() {
        let err = parse(
            "app = \"x\"\n[[component]]\nid = \"a\"\nsource = \"a.wasm\"\nlisten = \"127.0.0.1:8081\"\n\
             [[component]]\nid = \"b\"\nsource = \"b.wasm\"\nlisten = \"127.0.0.1:8081\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(
            err.0[0]
                .message
                .contains("already the listener of component `a`")
        );
        assert_eq!(err.0[0].location.line, 9);
        // Port 0: a fresh port for each.
        parse(
            "app = \"x\"\n[[component]]\nid = \"a\"\nsource = \"a.wasm\"\nlisten = \"127.0.0.1:0\"\n\
             [[component]]\nid = \"b\"\nsource = \"b.wasm\"\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
    }

    #[test]
    fn routes() {
        let r = Route::parse("/api/...").unwrap();
        assert_eq!(r.matches("/api"), Some(4));
        assert_eq!(r.matches("/api/x/y"), Some(4));
        assert_eq!(r.matches("/apix"), None);
        let all = Route::parse("/...").unwrap();
        assert_eq!(all.matches("/anything"), Some(0));
        assert_eq!(all.http_route(), "/*");
        let exact = Route::parse("/hello").unwrap();
        assert_eq!(exact.matches("/hello"), Some(usize::MAX));
        assert_eq!(exact.matches("/hello/x"), None);
        assert!(Route::parse("/a/.../b").is_err());
    }

    #[test]
    fn allowed_hosts() {
        let a = AllowedHost::parse("http://127.0.0.1:8080").unwrap();
        assert!(a.allows("http", "127.0.0.1", 8080));
        assert!(!a.allows("http", "127.0.0.1", 8081));
        assert!(!a.allows("https", "127.0.0.1", 8080));
        let w = AllowedHost::parse("https://*.example.com").unwrap();
        assert!(w.allows("https", "api.example.com", 443));
        assert!(!w.allows("https", "example.com", 443));
        assert!(!w.allows("https", "evilexample.com", 443));
        let any = AllowedHost::parse("*://*:*").unwrap();
        assert!(any.allows("http", "x", 1));
        assert!(AllowedHost::parse("localhost").is_err());
        assert!(AllowedHost::parse("http://a/b").is_err());
    }

    #[test]
    fn propagation_policy() {
        let dir = std::env::temp_dir().join(format!("polytrace-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |component_extra: &str| {
            let file = dir.join("polytrace.toml");
            std::fs::write(
                &file,
                format!(
                    "app = \"a\"\n[[component]]\nid = \"c\"\nsource = \"c.wasm\"\nroute = \"/...\"\n{component_extra}\n"
                ),
            )
            .unwrap();
            Manifest::load(&file)
        };
        // Default: only components (and nothing listed) get trace context.
        let p = &load("").unwrap().components[0].propagation;
        assert_eq!(p.share("https", "api.stripe.com", 443), Share::Nothing);
        let p = &load(
            "propagation = { internal_hosts = [\"http://*.internal:*\"], external = \"traceparent\" }",
        )
        .unwrap()
        .components[0]
            .propagation;
        assert_eq!(p.share("http", "billing.internal", 8080), Share::All);
        assert_eq!(
            p.share("https", "billing.internal", 443),
            Share::Traceparent
        );
        assert_eq!(p.share("https", "api.stripe.com", 443), Share::Traceparent);
        let p = &load("propagation = { external = \"trace-context\" }")
            .unwrap()
            .components[0]
            .propagation;
        assert_eq!(p.share("https", "x.example", 443), Share::TraceContext);
        let e = load("propagation = { external = \"baggage\" }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("propagation.external = `baggage`"), "{e}");
        let e = load("propagation = { internal_hosts = [\"nope\"] }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("propagation.internal_hosts"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
