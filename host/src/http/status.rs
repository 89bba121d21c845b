//! Status codes a guest may not send as they are (RFC 9110). A guest's
//! response is the *final* response to a plain request, so:
//!
//! - `1xx` (interim responses; `101` would switch protocols on a connection
//!   that never asked to) and codes outside `100..=599` (RFC 9110 §15: the
//!   first digit is the class; hyper would put `999` on the wire) are
//!   replaced by `500` with a JSON body naming the problem;
//! - `204`, `205` and `304` never carry content (§15.3.5, §15.3.6,
//!   §15.4.5): the guest's body is drained and not sent; `204` gets no
//!   `Content-Length`, `205` gets `Content-Length: 0`.
//!
//! Either way the guest runs to its end as usual (its body is read and
//! discarded), and the SERVER span and metrics record what the client
//! received, with Error status when the host had to step in.

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// `error.type` when the host replaced or cut a guest's response.
pub const INVALID_RESPONSE: &str = "InvalidResponseStatus";

/// What the host did to a guest's response.
#[derive(Debug)]
pub enum Enforced {
    /// The guest's status cannot be a final response: `500` was sent.
    Replaced {
        original: u16,
        /// Bytes of the guest's body, read and discarded.
        drained: tokio::task::JoinHandle<u64>,
    },
    /// The status forbids content: whatever body the guest wrote (counted
    /// when the drain ends) was discarded.
    NoContent {
        status: u16,
        drained: tokio::task::JoinHandle<u64>,
    },
}

impl Enforced {
    /// Wait (until `deadline` at most) for the guest's body to be drained;
    /// returns what the host must record: the message, or `None` when
    /// nothing had to change after all (a 204 whose guest wrote no content).
    pub async fn settle(self, deadline: tokio::time::Instant) -> Option<String> {
        match self {
            Enforced::Replaced { original, drained } => {
                drain_until(drained, deadline).await;
                Some(replaced(original))
            }
            Enforced::NoContent { status, drained } => {
                let bytes = drain_until(drained, deadline).await;
                (bytes > 0).then(|| {
                    format!(
                        "the guest wrote {bytes} bytes of content in a {status} response, \
                         which has none (RFC 9110); they were not sent"
                    )
                })
            }
        }
    }
}

/// The drained byte count; a body that has not ended by `deadline` (a guest
/// that never finished it) stops being read then.
async fn drain_until(
    mut drained: tokio::task::JoinHandle<u64>,
    deadline: tokio::time::Instant,
) -> u64 {
    match tokio::time::timeout_at(deadline, &mut drained).await {
        Ok(bytes) => bytes.unwrap_or(0),
        Err(_) => {
            drained.abort();
            0
        }
    }
}

/// Why a guest's `original` status was replaced by 500.
pub fn replaced(original: u16) -> String {
    format!(
        "the guest answered {original}, which cannot be a final response \
         (RFC 9110: {}); 500 was sent instead",
        if (100..200).contains(&original) {
            "1xx responses are interim"
        } else {
            "status codes are 100 to 599"
        }
    )
}

/// Read `body` to its end, discarding it; returns its length in bytes.
fn drain(mut body: HyperOutgoingBody) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut bytes = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
            }
        }
        bytes
    })
}

fn empty() -> HyperOutgoingBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Apply the rules above to a guest's response. Must run within a tokio
/// runtime (a replaced body is drained by a task).
pub fn enforce(
    response: http::Response<HyperOutgoingBody>,
    replacement: impl FnOnce(u16) -> http::Response<HyperOutgoingBody>,
) -> (http::Response<HyperOutgoingBody>, Option<Enforced>) {
    let status = response.status().as_u16();
    match status {
        100..=199 | 600.. => {
            let drained = drain(response.into_body());
            (
                replacement(status),
                Some(Enforced::Replaced {
                    original: status,
                    drained,
                }),
            )
        }
        204 | 205 | 304 => {
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            match status {
                204 => {
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                }
                205 => {
                    parts
                        .headers
                        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(0));
                }
                // A 304's Content-Length describes the selected representation.
                _ => {}
            }
            let drained = drain(body);
            (
                http::Response::from_parts(parts, empty()),
                Some(Enforced::NoContent { status, drained }),
            )
        }
        _ => (response, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(status: u16, body: &'static str) -> http::Response<HyperOutgoingBody> {
        let mut r = http::Response::new(
            http_body_util::Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, body.len().into());
        r
    }

    fn five_hundred(_: u16) -> http::Response<HyperOutgoingBody> {
        let mut r = http::Response::new(empty());
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    }

    fn later() -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_secs(5)
    }

    async fn body(r: http::Response<HyperOutgoingBody>) -> Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn interim_and_out_of_range_statuses_become_500() {
        for status in [100, 101, 103, 199, 600, 999] {
            let (r, enforced) = enforce(guest(status, "hello"), five_hundred);
            assert_eq!(r.status(), 500, "{status}");
            let why = enforced.unwrap().settle(later()).await.unwrap();
            assert!(why.contains(&status.to_string()), "{why}");
        }
    }

    #[tokio::test]
    async fn no_content_statuses_send_no_content() {
        let (r, enforced) = enforce(guest(205, "hello"), five_hundred);
        assert_eq!(r.status(), 205);
        assert_eq!(r.headers()[http::header::CONTENT_LENGTH], "0");
        assert!(body(r).await.is_empty());
        let why = enforced.unwrap().settle(later()).await.unwrap();
        assert!(why.contains("5 bytes") && why.contains("205"), "{why}");

        let (r, enforced) = enforce(guest(204, "x"), five_hundred);
        assert!(!r.headers().contains_key(http::header::CONTENT_LENGTH));
        assert!(body(r).await.is_empty());
        assert!(enforced.unwrap().settle(later()).await.is_some());

        // Nothing written: nothing to record.
        let (r, enforced) = enforce(guest(304, ""), five_hundred);
        assert_eq!(r.status(), 304);
        assert_eq!(enforced.unwrap().settle(later()).await, None);
    }

    /// A body whose end never comes (a guest that never finishes it).
    struct Endless;

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_stops_being_drained_at_the_deadline() {
        let mut r = http::Response::new(Endless.map_err(|never| match never {}).boxed_unsync());
        *r.status_mut() = http::StatusCode::from_u16(205).unwrap();
        let (_, enforced) = enforce(r, five_hundred);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        assert_eq!(enforced.unwrap().settle(soon).await, None);
    }

    #[tokio::test]
    async fn other_statuses_pass_unchanged() {
        for status in [200, 201, 206, 301, 404, 418, 500, 599] {
            let (r, enforced) = enforce(guest(status, "hello"), five_hundred);
            assert_eq!(r.status(), status);
            assert!(enforced.is_none());
            assert_eq!(body(r).await, "hello");
        }
    }
}
