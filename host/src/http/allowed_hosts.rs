//! Which `Host` names a listener answers to: the defence against DNS
//! rebinding. A web page on `evil.example` whose DNS answer is switched to
//! 127.0.0.1 can make the browser send requests to the viewer that the
//! same-origin policy lets the page read — but they carry
//! `Host: evil.example`. Refusing names the listener was not bound to (nor
//! configured with) stops that, whatever CORS says.
//!
//! The names a listener bound to `addr` answers to:
//! - its address as an IP literal (`127.0.0.1:16686`, `[::1]:16686`);
//! - `localhost` (and `*.localhost`, RFC 6761) when `addr` is loopback or
//!   unspecified;
//! - when `addr` is unspecified (`0.0.0.0`, `[::]`), any IP literal: a
//!   rebinding attack needs a name, never an address;
//! - each configured name (`--ui-allowed-hosts`), or any name with `*`.
//!
//! The port is not compared (a proxy may change it). A request without a
//! `Host` header (HTTP/1.0) is not from a browser and is let through.

use std::net::{IpAddr, SocketAddr};

/// The `Host` names one listener answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// The listener's address.
    bound: IpAddr,
    /// Configured names, lowercased, without a trailing dot.
    names: Vec<String>,
    /// `*` was configured: any name.
    any: bool,
}

impl AllowedHosts {
    /// The names a listener bound to `addr` answers to, plus `extra`
    /// (host names as typed in a browser's address bar; `*` allows any).
    pub fn new(addr: SocketAddr, extra: &[String]) -> AllowedHosts {
        let mut names = Vec::new();
        let mut any = false;
        for name in extra.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if name == "*" {
                any = true;
            } else {
                names.push(normalize(name));
            }
        }
        AllowedHosts {
            bound: addr.ip(),
            names,
            any,
        }
    }

    /// Whether a request whose `Host` header is `host` (`name`,
    /// `name:port`, `[v6]:port`) is for this listener.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = normalize(strip_port(host));
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return self.bound.is_unspecified() || ip == self.bound;
        }
        if (self.bound.is_loopback() || self.bound.is_unspecified())
            && (name == "localhost" || name.ends_with(".localhost"))
        {
            return true;
        }
        self.names.contains(&name)
    }
}

/// `host` without its `:port`; an IPv6 literal keeps its brackets.
fn strip_port(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(addr: &str, extra: &[&str]) -> AllowedHosts {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        AllowedHosts::new(addr.parse().unwrap(), &extra)
    }

    #[test]
    fn a_loopback_listener_answers_to_its_address_and_localhost_only() {
        let h = hosts("127.0.0.1:16686", &[]);
        for ok in [
            "127.0.0.1:16686",
            "127.0.0.1",
            "localhost:16686",
            "LOCALHOST",
            "localhost.",
            "app.localhost:16686",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example:16686",
            "evil.example",
            "127.0.0.2:16686",
            "[::1]:16686",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!h.allows(refused), "{refused}");
        }
    }

    #[test]
    fn an_unspecified_listener_answers_to_any_address_but_only_configured_names() {
        let h = hosts("0.0.0.0:16686", &["traces.internal", " Viewer.Example. "]);
        for ok in [
            "10.1.2.3:16686",
            "[fe80::1]:16686",
            "localhost",
            "traces.internal:16686",
            "viewer.example",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for refused in ["evil.example", "traces.internal.evil.example", "internal"] {
            assert!(!h.allows(refused), "{refused}");
        }
        let v6 = hosts("[::]:16686", &[]);
        assert!(v6.allows("[::1]:16686") && v6.allows("192.168.0.1"));
        assert!(!v6.allows("evil.example"));
    }

    #[test]
    fn a_specific_address_is_not_localhost_and_a_star_allows_all() {
        let h = hosts("10.0.0.5:16686", &[]);
        assert!(h.allows("10.0.0.5:16686"));
        assert!(!h.allows("localhost:16686"));
        assert!(!h.allows("10.0.0.6:16686"));
        assert!(hosts("127.0.0.1:1", &["*"]).allows("anything.example"));
        let v6 = hosts("[::1]:16686", &[]);
        assert!(v6.allows("[::1]:16686") && v6.allows("localhost"));
        assert!(!v6.allows("127.0.0.1"));
    }
}
