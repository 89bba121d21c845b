//! Waiting for a request body before a guest runs. A guest reads its body
//! from inside an instance, so a client that sends its body slowly would
//! hold an instance (and its share of `--max-instances`) for as long as it
//! likes. [`ready`] holds the request in the host instead, until
//! [`READY_BYTES`] of its body (or all of it) have arrived, and gives the
//! guest a body that replays them and then goes on streaming.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error, WasiBody};

/// Body bytes a request must have sent (unless its body is shorter)
/// before it takes an instance. At most this much per request waiting is
/// buffered by the host.
pub const READY_BYTES: usize = 32 << 10;

/// Why a request never became ready.
#[derive(Debug)]
pub enum NotReady {
    /// `deadline` passed with the body still arriving.
    TimedOut {
        /// Body bytes received until then.
        received: usize,
    },
    /// The body failed (the client reset the connection, sent a malformed
    /// chunk, or ended it early).
    Failed(Error),
}

/// `request`, once its body has sent [`READY_BYTES`] or ended, or
/// [`NotReady`] at `deadline`. A request without a body is ready at once.
pub async fn ready(
    request: http::Request<WasiBody>,
    deadline: Instant,
) -> Result<http::Request<WasiBody>, NotReady> {
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let (parts, mut body) = request.into_parts();
    let mut frames = VecDeque::new();
    let mut received = 0;
    let deadline = tokio::time::Instant::from_std(deadline);
    let rest = loop {
        if received >= READY_BYTES {
            break Some(body);
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(NotReady::TimedOut { received }),
            Ok(None) => break None,
            Ok(Some(Err(e))) => return Err(NotReady::Failed(e)),
            Ok(Some(Ok(frame))) => {
                received += frame.data_ref().map_or(0, Bytes::len);
                frames.push_back(frame);
            }
        }
    };
    let replay = Replay { frames, rest };
    Ok(http::Request::from_parts(parts, replay.boxed_unsync()))
}

/// The frames already received, then the rest of the body.
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<WasiBody>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + buffered);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + buffered);
                }
                sum
            }
        }
    }
}

/// A response body that ends in an error, not a clean end, when its guest
/// failed (trapped, timed out, panicked the host) before finishing it.
///
/// wasmtime-wasi-http ends a response body cleanly when the instance that
/// writes it is dropped without calling `outgoing-body.finish`: a chunked
/// body cut by a trap would reach the client as if it were whole. With this
/// body the connection is aborted instead (no last chunk, or short of its
/// `Content-Length`), so the client sees the failure. `failed` must be set
/// before the instance is dropped.
pub struct Guarded {
    inner: HyperOutgoingBody,
    failed: Arc<AtomicBool>,
}

impl Guarded {
    /// `inner`, failing at its end once `failed` is set.
    pub fn new(inner: HyperOutgoingBody, failed: Arc<AtomicBool>) -> Guarded {
        Guarded { inner, failed }
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None if this.failed.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(Error::InternalError(Some(
                    "the component failed before finishing its response body".into(),
                )))))
            }
            frame => Poll::Ready(frame),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::time::Duration;

    fn request(body: WasiBody) -> http::Request<WasiBody> {
        http::Request::builder().uri("/x").body(body).unwrap()
    }

    async fn collect(r: http::Request<WasiBody>) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_short_body_is_buffered_whole_and_replayed() {
        let body = Full::new(Bytes::from_static(b"hello"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let r = ready(request(body), Instant::now() + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r.body().size_hint().exact(), Some(5));
        assert_eq!(collect(r).await, b"hello");
    }

    #[tokio::test]
    async fn a_long_body_is_ready_after_its_first_bytes_and_streams_the_rest() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Error>>(4);
        let body = Chan(rx).boxed_unsync();
        let chunk = Bytes::from(vec![7u8; READY_BYTES]);
        tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
        // Ready with the first chunk, while the client is still sending.
        let r = ready(request(body), Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"tail"))))
            .await
            .unwrap();
        drop(tx);
        let all = collect(r).await;
        assert_eq!(all.len(), READY_BYTES + 4);
        assert!(all.ends_with(b"tail"));
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_not_ready_at_the_deadline() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Error>>(4);
        let body = Chan(rx).boxed_unsync();
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let got = ready(request(body), Instant::now() + Duration::from_millis(100)).await;
        assert!(
            matches!(got, Err(NotReady::TimedOut { received: 1 })),
            "{got:?}"
        );
        drop(tx);
    }

    /// A body whose frames come from a channel, as a client sends them.
    struct Chan(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Error>>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            self.0.poll_recv(cx)
        }
    }
}
