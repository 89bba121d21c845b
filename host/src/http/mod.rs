//! HTTP in and out: the inbound listener and outbound dispatch.

pub mod allowed_hosts;
pub mod body;
pub mod listener;
pub mod outbound;
pub mod server;
pub mod status;

use std::net::SocketAddr;

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// The peer of a network request.
    pub client: Option<SocketAddr>,
    /// The listener address that accepted it.
    pub local: Option<SocketAddr>,
    /// Hops so far: in-process calls, or for a network request its
    /// [`outbound::HOPS_HEADER`] (0 without one).
    pub depth: u32,
    /// The calling component of an in-process request.
    pub caller: Option<String>,
}

impl Inbound {
    /// The hop count a network request carries in
    /// [`outbound::HOPS_HEADER`]: 0 when absent or not a number; capped
    /// just past [`outbound::MAX_HOPS`].
    pub fn hops(headers: &http::HeaderMap) -> u32 {
        headers
            .get(outbound::HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map_or(0, |h| h.min(outbound::MAX_HOPS + 1))
    }

    /// A request one component sends another in-process, `depth` hops deep.
    pub fn in_process(depth: u32, caller: String) -> Self {
        Inbound {
            depth,
            caller: Some(caller),
            ..Default::default()
        }
    }
}

/// Apply RFC 9112 §3.2's rules for the Host header field to a request
/// that reached a listener: at most one Host field, whose value is a host
/// and optional port (or empty); an HTTP/1.1 request whose target has no
/// authority must carry one. An HTTP/1.0 request may omit it; it then
/// gets `local` (the listener's address) as its Host, because a guest's
/// `wasi:http` request always has an authority.
///
/// Errors: the reason for the 400 answer the rules require.
pub fn check_host<B>(
    request: &mut http::Request<B>,
    local: Option<SocketAddr>,
) -> Result<(), &'static str> {
    let mut fields = request.headers().get_all(http::header::HOST).iter();
    let host = fields.next();
    if fields.next().is_some() {
        return Err("the request has more than one Host header field (RFC 9112, section 3.2)");
    }
    match host {
        Some(v) if v.is_empty() || http::uri::Authority::try_from(v.as_bytes()).is_ok() => Ok(()),
        Some(_) => {
            Err("the request's Host header field is not a host and port (RFC 9112, section 3.2)")
        }
        None if request.uri().authority().is_some() => Ok(()),
        None if request.version() <= http::Version::HTTP_10 => {
            if let Some(local) = local
                && let Ok(v) = http::HeaderValue::try_from(local.to_string())
            {
                request.headers_mut().insert(http::header::HOST, v);
            }
            Ok(())
        }
        None => Err("an HTTP/1.1 request must have a Host header field (RFC 9112, section 3.2)"),
    }
}

/// The scheme of a request that reached one of polytrace's listeners,
/// which speak plain HTTP (no TLS): a target in absolute form (RFC 9112,
/// section 3.2.2) or an HTTP/2 `:scheme` must name `http`. Any other would
/// be taken as the request's `url.scheme` on the SERVER span and the
/// request metrics (RFC 9110, section 4.2), so a client could claim
/// `https` it did not use, or fill the metrics with schemes of its own.
///
/// Errors: the reason for the 400 answer.
pub fn check_scheme(uri: &http::Uri) -> Result<(), &'static str> {
    match uri.scheme_str() {
        None | Some("http") => Ok(()),
        Some(_) => Err(
            "the request's target names a scheme other than http, which this listener does not \
             serve (RFC 9112, section 3.2.2)",
        ),
    }
}

/// RFC 9112, section 6.1: the transfer codings of a request, which hyper
/// decodes only when they are `chunked`. Any other (`gzip, chunked`) would
/// reach the guest still encoded, as if it were the body; a server that
/// does not understand a transfer coding answers 501.
///
/// Errors: the reason for that 501 answer.
pub fn check_transfer_coding(headers: &http::HeaderMap) -> Result<(), &'static str> {
    for value in headers.get_all(http::header::TRANSFER_ENCODING) {
        let codings = value
            .to_str()
            .map_err(|_| "the request's Transfer-Encoding is not text (RFC 9112, section 6.1)")?;
        for coding in codings.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked") {
                return Err(
                    "the request's Transfer-Encoding has a coding other than chunked, \
                            which polytrace does not decode (RFC 9112, section 6.1)",
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_host, check_scheme, check_transfer_coding};

    #[test]
    fn only_chunked_is_a_transfer_coding_the_host_decodes() {
        let with = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::TRANSFER_ENCODING, v.parse().unwrap());
            }
            check_transfer_coding(&h)
        };
        assert_eq!(with(&[]), Ok(()));
        assert_eq!(with(&["chunked"]), Ok(()));
        assert_eq!(with(&["Chunked"]), Ok(()));
        assert!(
            with(&["gzip, chunked"])
                .unwrap_err()
                .contains("other than chunked")
        );
        assert!(with(&["gzip", "chunked"]).is_err());
        assert!(with(&["identity"]).is_err());
    }

    #[test]
    fn a_listener_serves_only_the_http_scheme() {
        let check = |uri: &str| check_scheme(&uri.parse().unwrap());
        assert_eq!(check("/a"), Ok(()));
        assert_eq!(check("http://example.com/a"), Ok(()));
        assert!(
            check("https://example.com/a")
                .unwrap_err()
                .contains("other than http")
        );
        assert!(check("foo://example.com/a").is_err());
    }

    fn request(version: http::Version, uri: &str, hosts: &[&str]) -> http::Request<()> {
        let mut b = http::Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(http::header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_fields_follow_rfc_9112() {
        use http::Version;
        let local = Some("127.0.0.1:3000".parse().unwrap());
        let ok = |v, uri, hosts: &[&str]| check_host(&mut request(v, uri, hosts), local);
        assert_eq!(ok(Version::HTTP_11, "/a", &["example.com:8080"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/a", &[""]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/a", &["[::1]:3000"]), Ok(()));
        assert_eq!(ok(Version::HTTP_2, "http://example.com/a", &[]), Ok(()));
        // In-process calls carry their authority in the target.
        assert_eq!(ok(Version::HTTP_11, "http://orders/a", &[]), Ok(()));
        assert!(
            ok(Version::HTTP_11, "/a", &[])
                .unwrap_err()
                .contains("must have")
        );
        assert!(
            ok(Version::HTTP_11, "/a", &["a.example", "b.example"])
                .unwrap_err()
                .contains("more than one")
        );
        assert!(
            ok(Version::HTTP_11, "/a", &["a b"])
                .unwrap_err()
                .contains("not a host")
        );
        assert!(
            ok(Version::HTTP_11, "/a", &["a/b"])
                .unwrap_err()
                .contains("not a host")
        );
        // HTTP/1.0 may leave it out: the listener's address stands in.
        let mut r = request(Version::HTTP_10, "/a", &[]);
        assert_eq!(check_host(&mut r, local), Ok(()));
        assert_eq!(r.headers()[http::header::HOST], "127.0.0.1:3000");
    }
}
