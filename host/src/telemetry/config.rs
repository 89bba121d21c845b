//! Telemetry settings: the manifest's `[telemetry]` section overridden by the
//! standard `OTEL_*` environment variables, resolved once at start-up.

use crate::manifest::TelemetryConfig;
use opentelemetry_sdk::trace::Sampler;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where spans go over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    Otlp,
    None,
}

/// Parse an exporter list as `OTEL_TRACES_EXPORTER` spells it: `otlp`,
/// `console`, `none`, or several separated by commas (`otlp,console`).
/// Returns the network exporter and whether spans also print on stdout.
pub fn parse_exporters(value: &str) -> Result<(Exporter, bool), String> {
    let mut otlp = false;
    let mut console = false;
    let mut none = false;
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "otlp" => otlp = true,
            "console" => console = true,
            "none" => none = true,
            other => {
                return Err(format!(
                    "trace exporter `{other}` is not supported: use `otlp`, `console`, `none` \
                     or a comma-separated list such as `otlp,console`"
                ));
            }
        }
    }
    if none && (otlp || console) {
        return Err(format!(
            "trace exporter `{value}`: `none` cannot be combined with others"
        ));
    }
    let network = if otlp || !(console || none) {
        Exporter::Otlp
    } else {
        Exporter::None
    };
    Ok((network, console))
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Resolved export settings.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub exporter: Exporter,
    /// Also print every span on stdout, one line each (the `console` exporter).
    pub console: bool,
    pub protocol: Protocol,
    /// An explicit endpoint; `None` lets opentelemetry-otlp apply the
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables and the spec's defaults.
    pub endpoint: Option<String>,
    /// Headers from the manifest; `OTEL_EXPORTER_OTLP_*HEADERS` are merged
    /// in by opentelemetry-otlp.
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
}

impl ExportSettings {
    /// The endpoint as a user would recognise it in a log line.
    pub fn endpoint_for_humans(&self) -> String {
        match (&self.endpoint, self.protocol) {
            (Some(e), _) => e.clone(),
            (None, Protocol::Grpc) => std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .unwrap_or_else(|_| "http://localhost:4317".into()),
            (None, Protocol::HttpProtobuf) => std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|_| {
                    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| format!("{e}/v1/traces"))
                })
                .unwrap_or_else(|_| "http://localhost:4318/v1/traces".into()),
        }
    }
}

/// Everything telemetry needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub export: ExportSettings,
    pub sampler: Sampler,
    /// Cap on any string attribute value a guest sets, in bytes.
    pub max_attribute_value_length: usize,
}

/// Default cap on guest attribute values (the SDK default is unlimited).
pub const DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH: usize = 4096;

impl Settings {
    /// Resolve from the manifest and the process environment.
    pub fn from_env(manifest: &TelemetryConfig) -> Result<Settings, String> {
        Self::resolve(manifest, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// Resolve from the manifest and an environment lookup.
    pub fn resolve(
        m: &TelemetryConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, String> {
        let disabled =
            env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let (exporter, console) = parse_exporters(
            env("OTEL_TRACES_EXPORTER")
                .or_else(|| m.exporter.clone())
                .as_deref()
                .unwrap_or("otlp"),
        )?;
        let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .or_else(|| m.protocol.clone())
            .as_deref()
        {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "OTLP protocol `{other}` is not supported: use `http/protobuf` or `grpc`"
                ));
            }
        };
        let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let endpoint = match (&m.endpoint, env_endpoint) {
            (Some(base), false) => Some(match protocol {
                Protocol::Grpc => base.clone(),
                Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            }),
            _ => None,
        };
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            match env(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name}=`{v}` is not a number of milliseconds")),
            }
        };
        let count = |name: &str, default: usize| -> Result<usize, String> {
            match env(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name}=`{v}` is not a positive number")),
                },
            }
        };
        let timeout = match env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(_) => millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 10_000)?,
            None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
        };
        let max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
        let export = ExportSettings {
            exporter,
            console,
            protocol,
            endpoint,
            headers: m.headers.clone(),
            timeout: timeout.min(millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?),
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000)?.max(Duration::from_millis(1)),
            max_queue_size,
            max_export_batch_size: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?
                .min(max_queue_size),
        };
        let sampler_name = env("OTEL_TRACES_SAMPLER").or_else(|| m.sampler.clone());
        let ratio = match env("OTEL_TRACES_SAMPLER_ARG") {
            Some(v) => Some(
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG=`{v}` is not a ratio between 0 and 1")
                    })?,
            ),
            None => m.sampler_arg,
        }
        .unwrap_or(1.0);
        let sampler = match sampler_name.as_deref() {
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::TraceIdRatioBased(ratio),
            None | Some("parentbased_always_on") => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
            }
            Some("parentbased_always_off") => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Some("parentbased_traceidratio") => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
            Some(other) => {
                return Err(format!(
                    "sampler `{other}` is not supported: use always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ));
            }
        };
        Ok(Settings {
            export,
            sampler: if disabled {
                Sampler::AlwaysOff
            } else {
                sampler
            },
            max_attribute_value_length: m
                .max_attribute_value_length
                .unwrap_or(DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(m: &TelemetryConfig, vars: &[(&str, &str)]) -> Result<Settings, String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(m, |k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = resolve(&TelemetryConfig::default(), &[]).unwrap();
        assert_eq!(s.export.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.export.endpoint, None);
        assert_eq!(s.export.schedule_delay, Duration::from_millis(5000));
        assert_eq!(s.export.max_queue_size, 2048);
        assert_eq!(s.export.max_export_batch_size, 512);
        assert_eq!(s.export.timeout, Duration::from_secs(10));
        assert!(matches!(s.sampler, Sampler::ParentBased(_)));
    }

    #[test]
    fn environment_overrides_the_manifest() {
        let m = TelemetryConfig {
            endpoint: Some("http://collector:4318/".into()),
            protocol: Some("http/protobuf".into()),
            ..Default::default()
        };
        let s = resolve(&m, &[]).unwrap();
        assert_eq!(
            s.export.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let s = resolve(
            &m,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4317"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
        )
        .unwrap();
        assert_eq!(s.export.protocol, Protocol::Grpc);
        assert_eq!(
            s.export.endpoint, None,
            "the env endpoint is left to opentelemetry-otlp"
        );
        assert_eq!(s.export.schedule_delay, Duration::from_millis(100));
        assert!(matches!(s.sampler, Sampler::TraceIdRatioBased(r) if r == 0.25));
    }

    #[test]
    fn sdk_disabled_and_bad_values() {
        let s = resolve(
            &TelemetryConfig::default(),
            &[("OTEL_SDK_DISABLED", "TRUE")],
        )
        .unwrap();
        // OTEL_SDK_DISABLED=true: spans are not recorded; context still propagates.
        assert!(matches!(s.sampler, Sampler::AlwaysOff));
        assert!(
            resolve(
                &TelemetryConfig::default(),
                &[("OTEL_TRACES_SAMPLER", "sometimes")]
            )
            .is_err()
        );
        assert!(
            resolve(
                &TelemetryConfig::default(),
                &[("OTEL_TRACES_SAMPLER_ARG", "2")]
            )
            .is_err()
        );
        assert!(
            resolve(
                &TelemetryConfig::default(),
                &[("OTEL_BSP_MAX_QUEUE_SIZE", "x")]
            )
            .is_err()
        );
        assert!(
            resolve(
                &TelemetryConfig::default(),
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]
            )
            .is_err()
        );
    }

    #[test]
    fn exporter_lists() {
        assert_eq!(parse_exporters("otlp"), Ok((Exporter::Otlp, false)));
        assert_eq!(parse_exporters("console"), Ok((Exporter::None, true)));
        assert_eq!(parse_exporters("otlp, console"), Ok((Exporter::Otlp, true)));
        assert_eq!(parse_exporters("none"), Ok((Exporter::None, false)));
        assert_eq!(parse_exporters(""), Ok((Exporter::Otlp, false)));
        assert!(
            parse_exporters("none,console")
                .unwrap_err()
                .contains("cannot be combined")
        );
        assert!(
            parse_exporters("otlp,jaeger")
                .unwrap_err()
                .contains("`jaeger` is not supported")
        );
    }
}
