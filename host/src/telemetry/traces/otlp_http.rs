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

    /// Send a body made by [`HttpSpanExporter::body`]. Errors: the
    /// transport failed, the timeout passed, or the backend answered
    /// other than 2xx (the message has the status and the start of the
    /// body).
    pub fn send(&self, body: Bytes) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let mut request = http::Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            request = request.header(http::header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        let request = request.body(body);
        let client = self.client.clone();
        let timeout = self.timeout;
        async move {
            let request = request.map_err(|e| e.to_string())?;
            let response = tokio::time::timeout(timeout, client.send_bytes(request))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                let body = String::from_utf8_lossy(response.body());
                let body: String = body.chars().take(200).collect();
                Err(format!("HTTP {}: {body}", response.status()))
            }
        }
    }
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
