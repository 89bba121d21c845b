//! How OTLP exports reach their endpoint: TLS (rustls with the ring
//! provider), client certificates and compression, per signal, as the
//! OpenTelemetry exporter specification's `OTEL_EXPORTER_OTLP_*` variables
//! configure them.
//!
//! - `https://` endpoints are verified against the system's roots (the
//!   platform verifier for OTLP/HTTP, the native root store for gRPC; both
//!   honour `SSL_CERT_FILE` / `SSL_CERT_DIR`), unless
//!   `OTEL_EXPORTER_OTLP[_<SIGNAL>]_CERTIFICATE` names a PEM file of trusted
//!   CA certificates, which then *replace* the system roots (as the Go and
//!   Java SDKs do).
//! - `OTEL_EXPORTER_OTLP[_<SIGNAL>]_CLIENT_CERTIFICATE` and `_CLIENT_KEY`
//!   (PEM) are presented for mutual TLS; one without the other is an error.
//! - Files are read and parsed once at start: a missing or unparsable file
//!   stops `polytrace up` with the variable and the path in the message.
//! - A failure on the wire (an untrusted certificate, a refused handshake)
//!   is a counted, logged export failure; [`TransportErrors`] keeps its full
//!   cause so the warning can say *why* (the OTLP/HTTP exporter itself only
//!   says "network error").

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A PEM file read at start: where it came from and its bytes.
#[derive(Debug, Clone)]
pub struct PemFile {
    /// The variable that named it, for error messages.
    pub variable: String,
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// TLS settings of one signal's exporter.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Trusted CA certificates replacing the system roots.
    pub ca: Option<PemFile>,
    /// Client certificate chain and its private key, for mutual TLS.
    pub identity: Option<(PemFile, PemFile)>,
}

impl ClientTls {
    /// Resolve `OTEL_EXPORTER_OTLP_<SIGNAL>_{CERTIFICATE,CLIENT_CERTIFICATE,CLIENT_KEY}`,
    /// each falling back to the variable without the signal. Reads and
    /// checks the files. `signal` is `TRACES`, `METRICS` or `LOGS`.
    ///
    /// Errors: a file that cannot be read, holds no certificate (or no
    /// private key), or a client certificate without its key (or the reverse).
    pub fn resolve(signal: &str, env: &impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let file = |suffix: &str| -> Result<Option<PemFile>, String> {
            let own = format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}");
            let general = format!("OTEL_EXPORTER_OTLP_{suffix}");
            let (variable, path) = match (env(&own), env(&general)) {
                (Some(p), _) => (own, p),
                (None, Some(p)) => (general, p),
                (None, None) => return Ok(None),
            };
            let path = PathBuf::from(path.trim());
            let pem = std::fs::read(&path)
                .map_err(|e| format!("{variable}={}: cannot read it: {e}", path.display()))?;
            Ok(Some(PemFile {
                variable,
                path,
                pem,
            }))
        };
        let ca = file("CERTIFICATE")?;
        if let Some(ca) = &ca {
            certificates(ca)?;
        }
        let identity = match (file("CLIENT_CERTIFICATE")?, file("CLIENT_KEY")?) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                certificates(&cert)?;
                PrivateKeyDer::from_pem_slice(&key.pem).map_err(|e| {
                    format!(
                        "{}={}: no PEM private key in it ({e})",
                        key.variable,
                        key.path.display()
                    )
                })?;
                Some((cert, key))
            }
            (Some(only), None) | (None, Some(only)) => {
                return Err(format!(
                    "{}={} is set but not its pair: mutual TLS needs both \
                     OTEL_EXPORTER_OTLP[_{signal}]_CLIENT_CERTIFICATE and _CLIENT_KEY",
                    only.variable,
                    only.path.display()
                ));
            }
        };
        Ok(ClientTls { ca, identity })
    }

    /// The tonic TLS configuration: the CA file's certificates, else the
    /// system roots; the client identity if any. For `https://` endpoints
    /// only: tonic loads the roots even for `http://` ones.
    pub fn grpc(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(&ca.pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(&cert.pem, &key.pem));
        }
        config
    }

    /// The OTLP/HTTP client: reqwest over rustls, verifying against the CA
    /// file or the system roots, presenting the client identity if any,
    /// giving up after `timeout`.
    pub fn http_client(
        &self,
        timeout: Duration,
        errors: TransportErrors,
    ) -> Result<ExportHttpClient, String> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&ca.pem)
                .map_err(|e| format!("{}={}: {e}", ca.variable, ca.path.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some((cert, key)) = &self.identity {
            // rustls reqwest takes the chain and the key as one PEM buffer.
            let mut both = cert.pem.clone();
            both.push(b'\n');
            both.extend_from_slice(&key.pem);
            let identity = reqwest::Identity::from_pem(&both).map_err(|e| {
                format!(
                    "{}={} with {}={}: {e}",
                    cert.variable,
                    cert.path.display(),
                    key.variable,
                    key.path.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the OTLP/HTTP client: {}", chain(&e)))?;
        Ok(ExportHttpClient { client, errors })
    }
}

/// Check that `file` holds at least one PEM certificate.
fn certificates(file: &PemFile) -> Result<(), String> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&file.pem) {
        cert.map_err(|e| {
            format!(
                "{}={}: not a PEM certificate file ({e})",
                file.variable,
                file.path.display()
            )
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "{}={}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            file.variable,
            file.path.display()
        ));
    }
    Ok(())
}

/// Make ring the process's rustls provider (idempotent): reqwest is built
/// without a provider of its own so only one crypto library is linked.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `e` and its sources, joined with `: ` — TLS errors say what failed
/// (`invalid peer certificate: UnknownIssuer`) only deep in the chain.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The last transport failure of one signal's exporter, with its causes;
/// shared between the HTTP client that sees it and the worker that reports
/// the failed export.
#[derive(Debug, Clone, Default)]
pub struct TransportErrors(Arc<Mutex<Option<String>>>);

impl TransportErrors {
    fn record(&self, what: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
    }

    /// Forget the recorded cause (an export succeeded).
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// `why` (the exporter's own message) with the recorded cause, if any;
    /// clears it.
    pub fn explain(&self, why: &str) -> String {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(cause) => format!("{why}: {cause}"),
            None => why.to_string(),
        }
    }
}

/// The OTLP/HTTP client of one exporter: reqwest, remembering the cause of
/// each transport failure in [`TransportErrors`].
#[derive(Debug, Clone)]
pub struct ExportHttpClient {
    client: reqwest::Client,
    errors: TransportErrors,
}

#[async_trait::async_trait]
impl HttpClient for ExportHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match self.client.send_bytes(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.errors.record(chain(e.as_ref()));
                Err(e)
            }
        }
    }
}

/// OTLP payload compression as `OTEL_EXPORTER_OTLP[_<SIGNAL>]_COMPRESSION`
/// spells it: `gzip`, or `none` (`Ok(None)`).
pub fn parse_compression(value: &str) -> Result<Option<opentelemetry_otlp::Compression>, String> {
    match value.to_ascii_lowercase().as_str() {
        "gzip" => Ok(Some(opentelemetry_otlp::Compression::Gzip)),
        "none" => Ok(None),
        _ => Err("use `gzip` or `none`".to_string()),
    }
}
