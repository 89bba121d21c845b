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

/// Parse `OTEL_METRICS_EXPORTER` / `OTEL_LOGS_EXPORTER`: `otlp` or `none`.
/// (Metrics are always on Prometheus `/metrics` too; guest logs always print
/// on the console at the `--guest-logs` level.)
pub fn parse_signal_exporter(value: &str) -> Result<Exporter, String> {
    match value.trim() {
        "" | "otlp" => Ok(Exporter::Otlp),
        "none" => Ok(Exporter::None),
        // Prometheus is served on the viewer address whatever this says;
        // `console` is what --guest-logs does for logs.
        "prometheus" | "console" => Ok(Exporter::None),
        other => Err(format!(
            "exporter `{other}` is not supported: use `otlp` or `none`"
        )),
    }
}

/// Export settings of the metrics or logs signal.
#[derive(Debug, Clone)]
pub struct SignalSettings {
    pub exporter: Exporter,
    /// Where and how the signal's OTLP exports go.
    pub otlp: Otlp,
    /// Metrics: the export interval. Logs: the batch schedule delay.
    pub interval: Duration,
    /// Logs: records waiting at most; past it new records are dropped.
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// Metrics: the OTLP aggregation temporality preference.
    pub temporality: opentelemetry_sdk::metrics::Temporality,
}

/// Where and how one signal's OTLP exports go, resolved at start as the
/// OpenTelemetry exporter specification says.
#[derive(Debug, Clone)]
pub struct Otlp {
    pub protocol: Protocol,
    /// The full endpoint URL: the signal's own `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`
    /// as given; else `OTEL_EXPORTER_OTLP_ENDPOINT`, then the manifest's
    /// `endpoint` (OTLP/HTTP: with `v1/<signal>` appended); else
    /// `http://localhost:4317` (gRPC) or `http://localhost:4318/v1/<signal>`.
    /// A gRPC endpoint without a scheme gets `https://`, or `http://` when
    /// `OTEL_EXPORTER_OTLP[_<SIGNAL>]_INSECURE=true`.
    pub endpoint: String,
    /// Headers from the manifest; `OTEL_EXPORTER_OTLP[_<SIGNAL>]_HEADERS`
    /// are merged in by opentelemetry-otlp.
    pub headers: BTreeMap<String, String>,
    /// Per export request.
    pub timeout: Duration,
    /// `OTEL_EXPORTER_OTLP[_<SIGNAL>]_COMPRESSION=gzip`.
    pub compression: Option<opentelemetry_otlp::Compression>,
    /// CA and client certificate files.
    pub tls: super::tls::ClientTls,
    /// The cause of the last transport failure, for the export warning.
    pub errors: super::tls::TransportErrors,
}

/// How guest log records print on the host console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLogs {
    /// Lowest severity number printed; `None` prints nothing.
    pub min_severity: Option<u8>,
    pub json: bool,
}

impl Default for ConsoleLogs {
    fn default() -> Self {
        ConsoleLogs {
            min_severity: Some(9),
            json: false,
        }
    }
}

impl ConsoleLogs {
    /// Parse `--guest-logs`: `off`, or a level (`trace`, `debug`, `info`,
    /// `warn`, `error`, `fatal`), optionally `,json` for JSON lines.
    pub fn parse(value: &str) -> Result<ConsoleLogs, String> {
        let mut out = ConsoleLogs::default();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "json" => out.json = true,
                "text" => out.json = false,
                "off" | "none" => out.min_severity = None,
                "trace" => out.min_severity = Some(1),
                "debug" => out.min_severity = Some(5),
                "info" => out.min_severity = Some(9),
                "warn" | "warning" => out.min_severity = Some(13),
                "error" => out.min_severity = Some(17),
                "fatal" => out.min_severity = Some(21),
                other => {
                    return Err(format!(
                        "`{other}`: use off, trace, debug, info, warn, error or fatal, \
                         optionally followed by `,json` (for example `debug,json`)"
                    ));
                }
            }
        }
        Ok(out)
    }
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
    /// Where and how spans go.
    pub otlp: Otlp,
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
}

/// Everything telemetry needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub export: ExportSettings,
    pub metrics: SignalSettings,
    pub logs: SignalSettings,
    /// Set from the command line (`--guest-logs`), not the environment.
    pub console_logs: ConsoleLogs,
    /// `OTEL_SDK_DISABLED=true`: no spans, metrics or log records are kept
    /// (context still propagates; guest output still prints).
    pub disabled: bool,
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
        let signal_timeout =
            |signal: &str| match env(&format!("OTEL_EXPORTER_OTLP_{signal}_TIMEOUT")) {
                Some(_) => millis(&format!("OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"), 10_000),
                None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000),
            };
        let timeout = signal_timeout("TRACES")?.min(millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?);
        let max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
        let export = ExportSettings {
            exporter,
            console,
            otlp: otlp_target("TRACES", m, &env, timeout)?,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000)?.max(Duration::from_millis(1)),
            max_queue_size,
            max_export_batch_size: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?
                .min(max_queue_size),
        };
        let signal_exporter = |var: &str, manifest: &Option<String>| {
            env(var)
                .or_else(|| manifest.clone())
                .map_or(Ok(Exporter::Otlp), |v| {
                    parse_signal_exporter(&v).map_err(|e| format!("{var}: {e}"))
                })
        };
        let temporality = match env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
            None => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Some(v) => v.trim().parse().map_err(|()| {
                format!(
                    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=`{v}`: use cumulative, delta or lowmemory"
                )
            })?,
        };
        let metrics = SignalSettings {
            exporter: if disabled {
                Exporter::None
            } else {
                signal_exporter("OTEL_METRICS_EXPORTER", &m.metrics_exporter)?
            },
            otlp: otlp_target(
                "METRICS",
                m,
                &env,
                signal_timeout("METRICS")?.min(millis("OTEL_METRIC_EXPORT_TIMEOUT", 30_000)?),
            )?,
            interval: millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?.max(Duration::from_millis(1)),
            max_queue_size: 0,
            max_export_batch_size: 0,
            temporality,
        };
        let logs_queue = count("OTEL_BLRP_MAX_QUEUE_SIZE", 2048)?;
        let logs = SignalSettings {
            exporter: if disabled {
                Exporter::None
            } else {
                signal_exporter("OTEL_LOGS_EXPORTER", &m.logs_exporter)?
            },
            otlp: otlp_target(
                "LOGS",
                m,
                &env,
                signal_timeout("LOGS")?.min(millis("OTEL_BLRP_EXPORT_TIMEOUT", 30_000)?),
            )?,
            interval: millis("OTEL_BLRP_SCHEDULE_DELAY", 1_000)?.max(Duration::from_millis(1)),
            max_queue_size: logs_queue,
            max_export_batch_size: count("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512)?.min(logs_queue),
            temporality: opentelemetry_sdk::metrics::Temporality::Cumulative,
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
            metrics,
            logs,
            console_logs: ConsoleLogs::default(),
            disabled,
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

/// Where and how one signal (`TRACES`, `METRICS`, `LOGS`) is exported:
/// the signal's own variables first, then the general ones, then the
/// manifest, then the specification's defaults.
fn otlp_target(
    signal: &str,
    m: &TelemetryConfig,
    env: &impl Fn(&str) -> Option<String>,
    timeout: Duration,
) -> Result<Otlp, String> {
    let protocol = match env(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
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
    let path = format!("v1/{}", signal.to_ascii_lowercase());
    let with_path = |base: &str| match protocol {
        Protocol::Grpc => base.to_string(),
        Protocol::HttpProtobuf => format!("{}/{path}", base.trim_end_matches('/')),
    };
    let endpoint = match env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")) {
        Some(own) => own.trim().to_string(),
        None => match env("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| m.endpoint.clone()) {
            Some(base) => with_path(base.trim()),
            None => match protocol {
                Protocol::Grpc => "http://localhost:4317".to_string(),
                Protocol::HttpProtobuf => format!("http://localhost:4318/{path}"),
            },
        },
    };
    // OTEL_EXPORTER_OTLP_INSECURE governs gRPC endpoints without a scheme.
    let has_scheme = endpoint
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']));
    let endpoint = if protocol == Protocol::Grpc && !has_scheme {
        let insecure = env(&format!("OTEL_EXPORTER_OTLP_{signal}_INSECURE"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_INSECURE"))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        format!("{}://{endpoint}", if insecure { "http" } else { "https" })
    } else {
        endpoint
    };
    Ok(Otlp {
        protocol,
        endpoint,
        headers: m.headers.clone(),
        timeout,
        compression: super::tls::compression(signal, env)?,
        tls: super::tls::ClientTls::resolve(signal, env)?,
        errors: Default::default(),
    })
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
        assert_eq!(s.export.otlp.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.export.otlp.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(s.metrics.otlp.endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(s.export.schedule_delay, Duration::from_millis(5000));
        assert_eq!(s.export.max_queue_size, 2048);
        assert_eq!(s.export.max_export_batch_size, 512);
        assert_eq!(s.export.otlp.timeout, Duration::from_secs(10));
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
        assert_eq!(s.export.otlp.endpoint, "http://collector:4318/v1/traces");
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
        assert_eq!(s.export.otlp.protocol, Protocol::Grpc);
        assert_eq!(s.export.otlp.endpoint, "http://other:4317");
        assert_eq!(s.export.schedule_delay, Duration::from_millis(100));
        assert!(matches!(s.sampler, Sampler::TraceIdRatioBased(r) if r == 0.25));
    }

    #[test]
    fn endpoints_follow_the_exporter_spec() {
        let none = TelemetryConfig::default();
        // The signal's own variable is used as is; the general one gets v1/<signal>.
        let s = resolve(
            &none,
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "https://collector:4318/base/",
                ),
                (
                    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                    "https://logs:9999/custom",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            s.export.otlp.endpoint,
            "https://collector:4318/base/v1/traces"
        );
        assert_eq!(s.logs.otlp.endpoint, "https://logs:9999/custom");
        // gRPC: no path; no scheme means https unless INSECURE=true.
        let grpc = |extra: &[(&'static str, &'static str)]| {
            let mut vars = vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ];
            vars.extend_from_slice(extra);
            resolve(&none, &vars).unwrap()
        };
        assert_eq!(grpc(&[]).export.otlp.endpoint, "https://collector:4317");
        let insecure = grpc(&[("OTEL_EXPORTER_OTLP_INSECURE", "TRUE")]);
        assert_eq!(insecure.export.otlp.endpoint, "http://collector:4317");
        let traces_only = grpc(&[("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")]);
        assert_eq!(traces_only.export.otlp.endpoint, "http://collector:4317");
        assert_eq!(traces_only.metrics.otlp.endpoint, "https://collector:4317");
        assert_eq!(grpc(&[]).export.otlp.compression, None);
        let gz = grpc(&[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
        ]);
        assert_eq!(
            gz.export.otlp.compression,
            Some(opentelemetry_otlp::Compression::Gzip)
        );
        assert_eq!(
            gz.logs.otlp.compression,
            Some(opentelemetry_otlp::Compression::Gzip)
        );
        assert_eq!(gz.metrics.otlp.compression, None);
    }

    #[test]
    fn certificate_files_are_read_and_checked_at_start() {
        let dir = std::env::temp_dir().join(format!("polytrace-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let none = TelemetryConfig::default();
        let e = resolve(
            &none,
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")],
        )
        .unwrap_err();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_CERTIFICATE=/nonexistent/ca.pem"),
            "{e}"
        );
        let junk_path = junk.to_str().unwrap();
        let e = resolve(
            &none,
            &[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", junk_path)],
        )
        .unwrap_err();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = resolve(&none, &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", junk_path)]).unwrap_err();
        assert!(e.contains("is set but not its pair"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
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
        assert!(s.disabled);
        assert_eq!(s.metrics.exporter, Exporter::None);
        assert_eq!(s.logs.exporter, Exporter::None);
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
    fn metrics_and_logs_settings() {
        let m = TelemetryConfig {
            endpoint: Some("http://collector:4318".into()),
            ..Default::default()
        };
        let s = resolve(&m, &[]).unwrap();
        assert_eq!(s.metrics.exporter, Exporter::Otlp);
        assert_eq!(s.metrics.otlp.endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(s.logs.otlp.endpoint, "http://collector:4318/v1/logs");
        assert_eq!(s.metrics.interval, Duration::from_secs(60));
        assert_eq!(s.logs.interval, Duration::from_secs(1));
        assert_eq!(
            s.metrics.temporality,
            opentelemetry_sdk::metrics::Temporality::Cumulative
        );
        let s = resolve(
            &m,
            &[
                ("OTEL_METRICS_EXPORTER", "none"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
                ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
                ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
            ],
        )
        .unwrap();
        assert_eq!(s.metrics.exporter, Exporter::None);
        assert_eq!(s.metrics.interval, Duration::from_millis(250));
        assert_eq!(
            s.metrics.temporality,
            opentelemetry_sdk::metrics::Temporality::Delta
        );
        assert_eq!(s.logs.otlp.protocol, Protocol::Grpc);
        assert_eq!(s.export.otlp.protocol, Protocol::HttpProtobuf);
        assert!(
            resolve(
                &m,
                &[("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "x")]
            )
            .is_err()
        );
        assert!(resolve(&m, &[("OTEL_LOGS_EXPORTER", "kafka")]).is_err());
    }

    #[test]
    fn guest_log_console_levels() {
        assert_eq!(ConsoleLogs::parse("").unwrap(), ConsoleLogs::default());
        assert_eq!(ConsoleLogs::parse("warn").unwrap().min_severity, Some(13));
        let j = ConsoleLogs::parse("debug,json").unwrap();
        assert_eq!((j.min_severity, j.json), (Some(5), true));
        assert_eq!(ConsoleLogs::parse("off").unwrap().min_severity, None);
        assert!(ConsoleLogs::parse("loud").is_err());
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
