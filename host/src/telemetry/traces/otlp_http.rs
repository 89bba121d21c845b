//! OTLP/HTTP span export without intermediate structs: a batch of
//! [`EncodedSpan`]s (each already its `Span` message) is framed into the
//! bytes of an `ExportTraceServiceRequest` (opentelemetry-proto's
//! `collector/trace/v1/trace_service.proto`, protobuf binary encoding) and
//! POSTed as `application/x-protobuf`, as the OTLP/HTTP specification
//! describes.
//!
//! opentelemetry-otlp's exporter first converts every span into
//! opentelemetry-proto structs (a second copy of every string) and needs
//! the batch by value; here the spans were encoded once when they ended,
//! the request only copies their bytes, and the batch then goes to the
//! trace store. The resource and each instrumentation scope are encoded
//! once, by opentelemetry-proto itself. A unit test checks the request is
//! byte for byte the message opentelemetry-proto makes of the same spans.

use super::encoded::{
    EncodedSpan, Scopes, message_field_len, put_bytes, put_len, put_string, string_field_len,
};
use crate::telemetry::tls::ExportHttpClient;
use bytes::Bytes;
use opentelemetry_http::HttpClient;
use opentelemetry_sdk::Resource;
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;

/// Encodes batches of one component's spans as `ExportTraceServiceRequest`
/// bytes.
pub struct SpanEncoder {
    /// The component's `Resource` message and schema URL, encoded once.
    resource: Vec<u8>,
    schema_url: String,
    /// By scope index: the `InstrumentationScope` message and schema URL.
    scopes: Vec<Option<(Vec<u8>, String)>>,
}

impl SpanEncoder {
    /// An encoder for spans of `resource`.
    pub fn new(resource: &Resource) -> SpanEncoder {
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        let r = ResourceAttributesWithSchema::from(resource);
        let message = opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: r.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: vec![],
        };
        SpanEncoder {
            resource: message.encode_to_vec(),
            schema_url: r.schema_url.unwrap_or_default(),
            scopes: Vec::new(),
        }
    }

    /// The request carrying `spans`: one `ResourceSpans` with one
    /// `ScopeSpans` per instrumentation scope (entries of `scopes`), in
    /// order of first use. Each span's bytes are copied as they are.
    pub fn encode(&mut self, spans: &[EncodedSpan], scopes: &Scopes) -> Vec<u8> {
        // Group by scope, keeping first-use order.
        let mut groups: Vec<(u32, Vec<&EncodedSpan>)> = Vec::new();
        for s in spans {
            match groups.iter_mut().find(|(scope, _)| *scope == s.scope()) {
                Some((_, members)) => members.push(s),
                None => groups.push((s.scope(), vec![s])),
            }
        }
        for (scope, _) in &groups {
            let i = *scope as usize;
            if self.scopes.len() <= i {
                self.scopes.resize_with(i + 1, || None);
            }
            if self.scopes[i].is_none() {
                let scope = scopes.get(*scope);
                let schema = scope.schema_url().unwrap_or_default().to_string();
                let message: opentelemetry_proto::tonic::common::v1::InstrumentationScope =
                    (scope, None).into();
                self.scopes[i] = Some((message.encode_to_vec(), schema));
            }
        }
        let scope_of = |i: u32| self.scopes[i as usize].as_ref().expect("encoded above");
        let scope_lens: Vec<usize> = groups
            .iter()
            .map(|(scope, members)| {
                let (message, schema) = scope_of(*scope);
                message_field_len(1, message.len())
                    + members
                        .iter()
                        .map(|s| message_field_len(2, s.bytes().len()))
                        .sum::<usize>()
                    + string_field_len(3, schema)
            })
            .collect();
        let resource_spans_len = message_field_len(1, self.resource.len())
            + scope_lens
                .iter()
                .map(|len| message_field_len(2, *len))
                .sum::<usize>()
            + string_field_len(3, &self.schema_url);
        let mut buf = Vec::with_capacity(message_field_len(1, resource_spans_len));
        put_len(&mut buf, 1, resource_spans_len);
        put_bytes(&mut buf, 1, &self.resource);
        for ((scope, members), len) in groups.iter().zip(scope_lens) {
            let (message, schema) = scope_of(*scope);
            put_len(&mut buf, 2, len);
            put_bytes(&mut buf, 1, message);
            for s in members {
                put_bytes(&mut buf, 2, s.bytes());
            }
            put_string(&mut buf, 3, schema);
        }
        put_string(&mut buf, 3, &self.schema_url);
        buf
    }
}

/// An OTLP/HTTP span exporter for one component: encodes with
/// [`SpanEncoder`] and POSTs to the traces endpoint, with the configured
/// headers, gzip compression and timeout (the client's TLS settings and
/// error recording are [`ExportHttpClient`]'s).
pub struct HttpSpanExporter {
    encoder: SpanEncoder,
    client: ExportHttpClient,
    endpoint: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    gzip: bool,
    timeout: Duration,
}

impl HttpSpanExporter {
    /// An exporter of `resource`'s spans to `endpoint` (the full traces URL,
    /// e.g. `http://localhost:4318/v1/traces`).
    ///
    /// Errors: the endpoint is not a URL, or a header is not valid HTTP.
    pub fn new(
        resource: &Resource,
        client: ExportHttpClient,
        endpoint: &str,
        headers: &BTreeMap<String, String>,
        gzip: bool,
        timeout: Duration,
    ) -> anyhow::Result<HttpSpanExporter> {
        let endpoint: http::Uri = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("OTLP traces endpoint `{endpoint}`: {e}"))?;
        let headers = headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| anyhow::anyhow!("export header name `{k}` is not valid"))?,
                    http::HeaderValue::from_str(v).map_err(|_| {
                        anyhow::anyhow!("export header `{k}` has a value that is not valid")
                    })?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(HttpSpanExporter {
            encoder: SpanEncoder::new(resource),
            client,
            endpoint,
            headers,
            gzip,
            timeout,
        })
    }

    /// The request body for `spans` (compressed when configured).
    pub fn body(&mut self, spans: &[EncodedSpan], scopes: &Scopes) -> Bytes {
        let raw = self.encoder.encode(spans, scopes);
        if !self.gzip {
            return raw.into();
        }
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::default(),
        );
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or(raw).into()
    }

    /// Send a body made by [`HttpSpanExporter::body`], retrying what the
    /// OTLP/HTTP specification calls retryable (429, 502, 503, 504): after
    /// the wait the response's `Retry-After` asks for, else an exponential
    /// backoff with jitter, while the exporter's timeout (the whole send's
    /// budget) allows. Errors: the transport failed, the timeout passed, or
    /// the backend answered other than 2xx (the message has the status and
    /// the start of the body).
    pub fn send(&self, body: Bytes) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        if self.gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
        }
        for (k, v) in &self.headers {
            headers.append(k, v.clone());
        }
        let endpoint = self.endpoint.clone();
        let client = self.client.clone();
        let timeout = self.timeout;
        async move {
            // The budget starts when the export does, not while it waits
            // for a slot in the export stage.
            let deadline = tokio::time::Instant::now() + timeout;
            let mut backoff = FIRST_BACKOFF;
            loop {
                let mut request = http::Request::new(body.clone());
                *request.method_mut() = http::Method::POST;
                *request.uri_mut() = endpoint.clone();
                *request.headers_mut() = headers.clone();
                let response = tokio::time::timeout_at(deadline, client.send_bytes(request))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(response.body());
                let failed = format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                );
                if !retryable(status) {
                    return Err(failed);
                }
                let wait = retry_wait(
                    retry_after(response.headers(), std::time::SystemTime::now()),
                    backoff,
                );
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if wait >= left {
                    return Err(format!(
                        "{failed} (retryable, but the wait of {wait:?} before a retry is past \
                         what is left of OTEL_EXPORTER_OTLP_TIMEOUT)"
                    ));
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The first wait before retrying a retryable answer without `Retry-After`;
/// doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether an OTLP/HTTP answer may be retried: 429, 502, 503 and 504, the
/// OTLP specification's retryable response codes (others are final).
fn retryable(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The wait a `Retry-After` header asks for (RFC 9110 §10.2.3:
/// delay-seconds, or an HTTP-date, counted from `now`); `None` when there
/// is none or it cannot be read.
fn retry_after(headers: &http::HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before retrying: what `Retry-After` asks for, but never less
/// than the jittered backoff, so that `Retry-After: 0` (or a date in the
/// past) cannot turn the retries into a flood.
fn retry_wait(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    let backoff = jittered(backoff);
    retry_after.map_or(backoff, |asked| asked.max(backoff))
}

/// `backoff` with full jitter: a uniform wait between half of it and all of
/// it, so exporters that failed together do not retry together.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::super::encoded::tests::span;
    use super::*;
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::SpanData;

    #[test]
    fn retryable_answers_and_the_wait_they_ask_for() {
        use http::StatusCode;
        for code in [429, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 404, 408, 413, 500, 501] {
            assert!(!retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_str(v).unwrap(),
            );
            retry_after(&h, now)
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(with(" 0 "), Some(Duration::ZERO));
        // 2023-11-14T22:13:20Z is `now`; an HTTP-date 90 s later, and one past.
        assert_eq!(
            with("Tue, 14 Nov 2023 22:14:50 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(with("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(with("-3"), None);
        assert_eq!(retry_after(&http::HeaderMap::new(), now), None);
        for _ in 0..100 {
            let w = jittered(Duration::from_secs(2));
            assert!(
                w >= Duration::from_secs(1) && w <= Duration::from_secs(2),
                "{w:?}"
            );
        }
        // The wait: Retry-After, but never under the backoff (0 and past
        // dates would retry at once, in a loop); absurd values stay values.
        let backoff = Duration::from_secs(2);
        assert!(retry_wait(Some(Duration::ZERO), backoff) >= Duration::from_secs(1));
        assert_eq!(
            retry_wait(Some(Duration::from_secs(7)), backoff),
            Duration::from_secs(7)
        );
        assert!(retry_wait(None, backoff) >= Duration::from_secs(1));
        assert_eq!(
            with("18446744073709551615"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            retry_wait(Some(Duration::from_secs(u64::MAX)), backoff),
            Duration::from_secs(u64::MAX)
        );
    }

    #[test]
    fn the_encoding_is_the_message_opentelemetry_proto_makes() {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "hello"),
                KeyValue::new("telemetry.sdk.language", "rust"),
            ])
            .with_schema_url(
                Vec::<KeyValue>::new(),
                "https://opentelemetry.io/schemas/1.30.0",
            )
            .build();
        let scopes = [
            InstrumentationScope::builder("polytrace").build(),
            InstrumentationScope::builder("guest")
                .with_version("1.2")
                .with_schema_url("https://example.com/s")
                .with_attributes([KeyValue::new("a", 1i64)])
                .build(),
        ];
        let spans: Vec<SpanData> = (0..12).map(|i| span(i, &scopes[i as usize % 2])).collect();
        let table = Scopes::default();
        let encoded: Vec<EncodedSpan> = spans
            .iter()
            .map(|s| EncodedSpan::encode(s, table.index(&s.instrumentation_scope)))
            .collect();
        let mut encoder = SpanEncoder::new(&resource);
        let ours =
            ExportTraceServiceRequest::decode(encoder.encode(&encoded, &table).as_slice()).unwrap();
        let theirs = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.clone(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(ours, theirs);
        // Byte for byte too (field order, omitted defaults).
        assert_eq!(encoder.encode(&encoded, &table), theirs.encode_to_vec());
        // An empty batch is a valid, empty request.
        let empty =
            ExportTraceServiceRequest::decode(encoder.encode(&[], &table).as_slice()).unwrap();
        assert_eq!(empty.resource_spans[0].scope_spans.len(), 0);
    }
}
