//! The OTLP exporter of every signal, built one way: protocol (gRPC or
//! HTTP/protobuf), endpoint, headers, timeout, compression and TLS from the
//! signal's resolved [`Otlp`] target (see [`super::config`] and
//! [`super::tls`]).

use super::config::{LogsSettings, MetricsSettings, Otlp, Protocol};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};

/// An OTLP exporter of any signal: `$builder` is the signal's
/// `Exporter::builder()`, `$otlp` its [`Otlp`] target (protocol, endpoint,
/// headers, timeout, compression, TLS).
macro_rules! otlp_exporter {
    ($builder:expr, $otlp:expr) => {{
        let otlp: &Otlp = $otlp;
        match otlp.protocol {
            Protocol::Grpc => {
                let mut b = $builder
                    .with_tonic()
                    .with_timeout(otlp.timeout)
                    .with_endpoint(otlp.endpoint.clone());
                // tonic sets TLS up (loading the system roots) whatever the
                // scheme: only an https endpoint gets it, so plaintext
                // export works on a machine without a CA bundle.
                if otlp.endpoint.starts_with("https://") {
                    b = b.with_tls_config(otlp.tls.grpc());
                }
                if let Some(c) = otlp.compression {
                    b = b.with_compression(c);
                }
                b.with_metadata(grpc_metadata(&otlp.headers)?)
                    .build()
                    .map_err(|e| anyhow::anyhow!("OTLP exporter for {}: {e}", otlp.endpoint))?
            }
            Protocol::HttpProtobuf => {
                let client = otlp
                    .tls
                    .http_client(otlp.timeout, otlp.errors.clone())
                    .map_err(|e| anyhow::anyhow!(e))?;
                let mut b = $builder
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(otlp.timeout)
                    .with_endpoint(otlp.endpoint.clone())
                    .with_http_client(client);
                if let Some(c) = otlp.compression {
                    b = b.with_compression(c);
                }
                b.with_headers(otlp.headers.clone().into_iter().collect())
                    .build()
                    .map_err(|e| anyhow::anyhow!("OTLP exporter for {}: {e}", otlp.endpoint))?
            }
        }
    }};
}

fn grpc_metadata(
    headers: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<tonic::metadata::MetadataMap> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| anyhow::anyhow!("export header name `{k}` is not valid"))?;
        let value = v
            .parse()
            .map_err(|_| anyhow::anyhow!("export header `{k}` has a value that is not valid"))?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// The OTLP/gRPC span exporter of one component (opentelemetry-otlp's;
/// OTLP/HTTP spans use polytrace's encoder, [`super::traces::otlp_http`]).
pub fn grpc_span_exporter(
    otlp: &Otlp,
    resource: &opentelemetry_sdk::Resource,
) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let mut exporter = otlp_exporter!(opentelemetry_otlp::SpanExporter::builder(), otlp);
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, resource);
    Ok(exporter)
}

/// The OTLP metric exporter of one component.
pub fn metric_exporter(s: &MetricsSettings) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
    Ok(otlp_exporter!(
        opentelemetry_otlp::MetricExporter::builder().with_temporality(s.temporality),
        &s.otlp
    ))
}

/// The OTLP log exporter of one component.
pub fn log_exporter(s: &LogsSettings) -> anyhow::Result<opentelemetry_otlp::LogExporter> {
    Ok(otlp_exporter!(
        opentelemetry_otlp::LogExporter::builder(),
        &s.otlp
    ))
}
