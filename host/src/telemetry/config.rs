//! Telemetry settings: the manifest's `[telemetry]` section overridden by the
//! standard `OTEL_*` environment variables, resolved once at start-up.

use opentelemetry_sdk::trace::Sampler;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `[telemetry]` section. Standard `OTEL_*` variables override it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `otlp` (default), `console` or `none`.
    pub exporter: Option<String>,
    /// Base OTLP endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    pub protocol: Option<String>,
    /// Extra export headers (for example `uptrace-dsn`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sampler name, as `OTEL_TRACES_SAMPLER`.
    pub sampler: Option<String>,
    /// Sampler argument, as `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler_arg: Option<f64>,
    /// Cap on the length of any string attribute value a guest sets.
    pub max_attribute_value_length: Option<usize>,
    /// Metrics exporter, as `OTEL_METRICS_EXPORTER`: `otlp` (default) or
    /// `none` (Prometheus `/metrics` is served either way).
    pub metrics_exporter: Option<String>,
    /// Logs exporter, as `OTEL_LOGS_EXPORTER`: `otlp` (default) or `none`.
    pub logs_exporter: Option<String>,
}

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
        match name.to_ascii_lowercase().as_str() {
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
    match value.trim().to_ascii_lowercase().as_str() {
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

/// The batch span / log record processor's settings, as the SDK
/// specification names them (`OTEL_BSP_*` for spans, `OTEL_BLRP_*` for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// A partial batch waits at most this long.
    pub schedule_delay: Duration,
    /// Items waiting at most; past it new items are dropped and counted.
    pub max_queue_size: usize,
    /// Items per export at most (≤ `max_queue_size`).
    pub max_export_batch_size: usize,
}

/// Resolved settings of the traces signal.
#[derive(Debug, Clone)]
pub struct TracesSettings {
    pub exporter: Exporter,
    /// Also print every span on stdout, one line each (the `console` exporter).
    pub console: bool,
    /// Where and how spans go.
    pub otlp: Otlp,
    pub batch: BatchSettings,
}

/// Resolved settings of the metrics signal (Prometheus `/metrics` is
/// served whatever they say).
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub exporter: Exporter,
    pub otlp: Otlp,
    /// Time between two OTLP exports.
    pub interval: Duration,
    /// The OTLP aggregation temporality preference.
    pub temporality: opentelemetry_sdk::metrics::Temporality,
}

/// Resolved settings of the logs signal.
#[derive(Debug, Clone)]
pub struct LogsSettings {
    pub exporter: Exporter,
    pub otlp: Otlp,
    pub batch: BatchSettings,
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
    /// Headers: the manifest's, then `OTEL_EXPORTER_OTLP_HEADERS`, then
    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS` (a later value for a key wins).
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

/// Everything telemetry needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub traces: TracesSettings,
    pub metrics: MetricsSettings,
    pub logs: LogsSettings,
    /// Set from the command line (`--guest-logs`), not the environment.
    pub console_logs: ConsoleLogs,
    /// `OTEL_SDK_DISABLED=true`: no spans, metrics or log records are kept
    /// (context still propagates; guest output still prints).
    pub disabled: bool,
    pub sampler: Sampler,
    /// Cap on any string attribute value a guest sets, in bytes.
    pub max_attribute_value_length: usize,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded; added to every component's resource.
    pub resource_attributes: Vec<(String, String)>,
    /// Environment values that were invalid and ignored, one sentence each,
    /// for the start-up log.
    pub warnings: Vec<String>,
}

/// Default cap on guest attribute values (the SDK default is unlimited).
pub const DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH: usize = 4096;

/// The `OTEL_*` environment variables polytrace reads, as the SDK
/// environment-variable specification names them, each next to its
/// default. `OTEL_EXPORTER_OTLP_*` variables are built from the signal
/// ([`env::TRACES`], ...) and a suffix (`ENDPOINT`, `TIMEOUT`, ...).
pub mod env {
    /// A variable holding milliseconds, and its default.
    pub struct Millis {
        /// The variable's name.
        pub name: &'static str,
        /// Its default, in milliseconds.
        pub default_ms: u64,
    }

    impl Millis {
        const fn new(name: &'static str, default_ms: u64) -> Millis {
            Millis { name, default_ms }
        }
    }

    /// A variable holding a count above zero, and its default.
    pub struct Count {
        /// The variable's name.
        pub name: &'static str,
        /// Its default.
        pub default: usize,
    }

    impl Count {
        const fn new(name: &'static str, default: usize) -> Count {
            Count { name, default }
        }
    }

    /// `true` turns every signal off (context still propagates).
    pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
    /// `otlp` by default.
    pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
    /// `otlp` by default.
    pub const OTEL_METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
    /// `otlp` by default.
    pub const OTEL_LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
    /// `parentbased_always_on` by default.
    pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    /// The sampler when neither the variable nor the manifest names one.
    pub const DEFAULT_SAMPLER: &str = "parentbased_always_on";
    /// 1.0 by default.
    pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
    /// Only `tracecontext` and `baggage` (what polytrace always propagates) are accepted.
    pub const OTEL_PROPAGATORS: &str = "OTEL_PROPAGATORS";
    /// `key=value,...`, percent-encoded values; added to every component's resource.
    pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    /// Both default to [`DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH`](super::DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH).
    pub const OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: &str =
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT";
    /// Read when the span-specific limit is not set.
    pub const OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: &str = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT";
    /// `cumulative` by default.
    pub const OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: &str =
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";

    /// Spans: the longest a partial batch waits, 5 s.
    pub const OTEL_BSP_SCHEDULE_DELAY: Millis = Millis::new("OTEL_BSP_SCHEDULE_DELAY", 5_000);
    /// Spans: an export's deadline, 30 s (the OTLP timeout applies if shorter).
    pub const OTEL_BSP_EXPORT_TIMEOUT: Millis = Millis::new("OTEL_BSP_EXPORT_TIMEOUT", 30_000);
    /// Spans waiting at most, 2048; past it new spans are dropped and counted.
    pub const OTEL_BSP_MAX_QUEUE_SIZE: Count = Count::new("OTEL_BSP_MAX_QUEUE_SIZE", 2048);
    /// Spans per export at most, 512.
    pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: Count =
        Count::new("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512);
    /// Log records: the longest a partial batch waits, 1 s.
    pub const OTEL_BLRP_SCHEDULE_DELAY: Millis = Millis::new("OTEL_BLRP_SCHEDULE_DELAY", 1_000);
    /// Log records: an export's deadline, 30 s.
    pub const OTEL_BLRP_EXPORT_TIMEOUT: Millis = Millis::new("OTEL_BLRP_EXPORT_TIMEOUT", 30_000);
    /// Log records waiting at most, 2048.
    pub const OTEL_BLRP_MAX_QUEUE_SIZE: Count = Count::new("OTEL_BLRP_MAX_QUEUE_SIZE", 2048);
    /// Log records per export at most, 512.
    pub const OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: Count =
        Count::new("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512);
    /// Metrics: time between two OTLP exports, 60 s.
    pub const OTEL_METRIC_EXPORT_INTERVAL: Millis =
        Millis::new("OTEL_METRIC_EXPORT_INTERVAL", 60_000);
    /// Metrics: an export's deadline, 30 s.
    pub const OTEL_METRIC_EXPORT_TIMEOUT: Millis =
        Millis::new("OTEL_METRIC_EXPORT_TIMEOUT", 30_000);

    /// The signals, as they appear in `OTEL_EXPORTER_OTLP_<SIGNAL>_<SUFFIX>`.
    pub const TRACES: &str = "TRACES";
    pub const METRICS: &str = "METRICS";
    pub const LOGS: &str = "LOGS";
    /// `OTEL_EXPORTER_OTLP[_<SIGNAL>]_TIMEOUT`: 10 s by default.
    pub const OTLP_TIMEOUT_DEFAULT_MS: u64 = 10_000;
    /// `OTEL_EXPORTER_OTLP[_<SIGNAL>]_ENDPOINT` defaults per protocol.
    pub const OTLP_GRPC_DEFAULT_ENDPOINT: &str = "http://localhost:4317";
    pub const OTLP_HTTP_DEFAULT_BASE: &str = "http://localhost:4318";
}

/// The `OTEL_*` variables as the SDK environment-variable specification
/// reads them: an empty value is unset; an invalid value is reported as a
/// warning and ignored (the manifest's value or the default applies).
struct Vars<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Vars<'_> {
    /// The trimmed value; `None` when unset or empty.
    fn get(&self, name: &str) -> Option<String> {
        (self.env)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// Record `warning` once (a general variable is read for each signal).
    fn warn(&self, warning: String) {
        let mut warnings = self.warnings.borrow_mut();
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    /// The value parsed by `parse`; a value it rejects is a warning and `None`.
    fn valid<T>(&self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = self.get(name)?;
        match parse(&value) {
            Ok(v) => Some(v),
            Err(why) => {
                self.warn(format!("{name}=`{value}` is ignored: {why}"));
                None
            }
        }
    }

    /// A boolean: only `true` (any case) is true; anything but `false` warns.
    fn flag(&self, name: &str) -> bool {
        self.valid(name, parse_bool).unwrap_or(false)
    }

    /// A duration in integer milliseconds (0 to 2³¹−1, as the spec requires).
    fn millis(&self, name: &str) -> Option<Duration> {
        self.valid(name, parse_millis)
    }

    /// A count above zero.
    fn count(&self, name: &str) -> Option<usize> {
        self.valid(name, |v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0 && *n <= i32::MAX as u32)
                .map(|n| n as usize)
                .ok_or_else(|| "not a whole number above 0".to_string())
        })
    }

    /// The signal's own variable (`OTEL_EXPORTER_OTLP_<SIGNAL>_<SUFFIX>`),
    /// else the general one, each parsed by `parse`.
    fn per_signal<T>(
        &self,
        signal: &str,
        suffix: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.valid(&format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}"), &parse)
            .or_else(|| self.valid(&format!("OTEL_EXPORTER_OTLP_{suffix}"), &parse))
    }
}

/// A duration in integer milliseconds, 0 to 2³¹−1 (the range the spec
/// requires integer variables to support).
fn parse_millis(value: &str) -> Result<Duration, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= i32::MAX as u32)
        .map(|n| Duration::from_millis(n.into()))
        .ok_or_else(|| "not a whole number of milliseconds".to_string())
}

/// A boolean as the spec reads it: `true` or `false`, any case.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("use true or false; false applies".into()),
    }
}

/// An OTLP protocol name.
fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value.to_ascii_lowercase().as_str() {
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "grpc" => Ok(Protocol::Grpc),
        other => Err(format!(
            "OTLP protocol `{other}` is not supported: use `http/protobuf` or `grpc`"
        )),
    }
}

/// A sampler name as `OTEL_TRACES_SAMPLER` spells it, with its ratio.
fn parse_sampler(name: &str, ratio: f64) -> Result<Sampler, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
        other => {
            return Err(format!(
                "sampler `{other}` is not supported: use always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            ));
        }
    })
}

/// A sampling ratio between 0 and 1.
fn parse_ratio(value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| "not a ratio between 0 and 1".to_string())
}

/// Parse `OTEL_RESOURCE_ATTRIBUTES` as the Resource SDK specification says:
/// `key1=value1,key2=value2` (W3C Baggage form without properties), keys
/// and values trimmed, values percent-decoded as UTF-8. Any error discards
/// the whole variable (the caller warns).
pub fn parse_resource_attributes(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for member in value.split(',') {
        if member.trim().is_empty() {
            continue;
        }
        let (key, raw) = member
            .split_once('=')
            .ok_or_else(|| format!("`{}` is not key=value", member.trim()))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{}` has an empty key", member.trim()));
        }
        let raw = raw.trim();
        // percent-encoding passes a `%` that starts no escape through as is;
        // the specification calls that a decoding failure.
        let bytes = raw.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'%'
                && !(i + 2 < bytes.len()
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit())
            {
                return Err(format!("`{key}`: `%` not followed by two hex digits"));
            }
        }
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| format!("`{key}`: the decoded value is not UTF-8"))?;
        out.push((key.to_string(), decoded.into_owned()));
    }
    Ok(out)
}

impl Settings {
    /// Resolve from the manifest and the process environment.
    pub fn from_env(manifest: &TelemetryConfig) -> Result<Settings, String> {
        Self::resolve(manifest, |k| std::env::var(k).ok())
    }

    /// Resolve from the manifest and an environment lookup. Invalid
    /// environment values become [`Settings::warnings`]; invalid manifest
    /// values and unusable certificate files are errors.
    pub fn resolve(
        m: &TelemetryConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, String> {
        let vars = Vars {
            env: &env,
            warnings: Default::default(),
        };
        let disabled = vars.flag(env::OTEL_SDK_DISABLED);
        let (exporter, console) = match vars.valid(env::OTEL_TRACES_EXPORTER, parse_exporters) {
            Some(chosen) => chosen,
            None => parse_exporters(m.exporter.as_deref().unwrap_or("otlp"))?,
        };
        let millis = |v: env::Millis| {
            vars.millis(v.name)
                .unwrap_or(Duration::from_millis(v.default_ms))
        };
        let count = |v: env::Count| vars.count(v.name).unwrap_or(v.default);
        let signal_timeout = |signal: &str| {
            vars.per_signal(signal, "TIMEOUT", parse_millis)
                .unwrap_or(Duration::from_millis(env::OTLP_TIMEOUT_DEFAULT_MS))
        };
        let batch = |delay: env::Millis, queue: env::Count, size: env::Count| {
            let max_queue_size = count(queue);
            BatchSettings {
                schedule_delay: millis(delay).max(Duration::from_millis(1)),
                max_queue_size,
                max_export_batch_size: count(size).min(max_queue_size),
            }
        };
        // Disabled: nothing is recorded, so nothing is exported either.
        let exporter = if disabled { Exporter::None } else { exporter };
        let traces = TracesSettings {
            exporter,
            console: console && !disabled,
            otlp: otlp_target(
                env::TRACES,
                m,
                &vars,
                signal_timeout(env::TRACES).min(millis(env::OTEL_BSP_EXPORT_TIMEOUT)),
                exporter == Exporter::Otlp,
            )?,
            batch: batch(
                env::OTEL_BSP_SCHEDULE_DELAY,
                env::OTEL_BSP_MAX_QUEUE_SIZE,
                env::OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
            ),
        };
        // Disabled: no metric points or log records are kept, so none go out.
        let signal_exporter = |var: &str, manifest: &Option<String>| -> Result<Exporter, String> {
            if disabled {
                return Ok(Exporter::None);
            }
            match vars.valid(var, parse_signal_exporter) {
                Some(e) => Ok(e),
                None => manifest.as_deref().map_or(Ok(Exporter::Otlp), |v| {
                    parse_signal_exporter(v).map_err(|e| format!("{var}: {e}"))
                }),
            }
        };
        let temporality = vars
            .valid(
                env::OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
                |v| {
                    v.parse()
                        .map_err(|()| "use cumulative, delta or lowmemory".to_string())
                },
            )
            .unwrap_or(opentelemetry_sdk::metrics::Temporality::Cumulative);
        let metrics_exporter = signal_exporter(env::OTEL_METRICS_EXPORTER, &m.metrics_exporter)?;
        let metrics = MetricsSettings {
            exporter: metrics_exporter,
            otlp: otlp_target(
                env::METRICS,
                m,
                &vars,
                signal_timeout(env::METRICS).min(millis(env::OTEL_METRIC_EXPORT_TIMEOUT)),
                metrics_exporter == Exporter::Otlp,
            )?,
            interval: millis(env::OTEL_METRIC_EXPORT_INTERVAL).max(Duration::from_millis(1)),
            temporality,
        };
        let logs_exporter = signal_exporter(env::OTEL_LOGS_EXPORTER, &m.logs_exporter)?;
        let logs = LogsSettings {
            exporter: logs_exporter,
            otlp: otlp_target(
                env::LOGS,
                m,
                &vars,
                signal_timeout(env::LOGS).min(millis(env::OTEL_BLRP_EXPORT_TIMEOUT)),
                logs_exporter == Exporter::Otlp,
            )?,
            batch: batch(
                env::OTEL_BLRP_SCHEDULE_DELAY,
                env::OTEL_BLRP_MAX_QUEUE_SIZE,
                env::OTEL_BLRP_MAX_EXPORT_BATCH_SIZE,
            ),
        };
        let ratio = match vars.valid(env::OTEL_TRACES_SAMPLER_ARG, parse_ratio) {
            Some(r) => r,
            None => m.sampler_arg.unwrap_or(1.0),
        };
        let sampler = match vars.valid(env::OTEL_TRACES_SAMPLER, |v| parse_sampler(v, ratio)) {
            Some(s) => s,
            None => parse_sampler(m.sampler.as_deref().unwrap_or(env::DEFAULT_SAMPLER), ratio)?,
        };
        // The host propagates W3C Trace Context and Baggage, always.
        vars.valid(env::OTEL_PROPAGATORS, |v| {
            let others: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && !matches!(*p, "tracecontext" | "baggage"))
                .collect();
            if others.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "polytrace propagates `tracecontext` and `baggage` only (not {})",
                    others.join(", ")
                ))
            }
        });
        let resource_attributes = vars
            .valid(env::OTEL_RESOURCE_ATTRIBUTES, |v| {
                parse_resource_attributes(v).map_err(|e| format!("{e}; none of it applies"))
            })
            .unwrap_or_default();
        Ok(Settings {
            traces,
            metrics,
            logs,
            console_logs: ConsoleLogs::default(),
            disabled,
            sampler: if disabled {
                Sampler::AlwaysOff
            } else {
                sampler
            },
            max_attribute_value_length: vars
                .count(env::OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT)
                .or_else(|| vars.count(env::OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT))
                .or(m.max_attribute_value_length)
                .unwrap_or(DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH),
            resource_attributes,
            warnings: vars.warnings.into_inner(),
        })
    }
}

/// Where and how one signal (`TRACES`, `METRICS`, `LOGS`) is exported:
/// the signal's own variables first, then the general ones, then the
/// manifest, then the specification's defaults. Certificate files are read
/// only when the signal is `exported` over OTLP.
fn otlp_target(
    signal: &str,
    m: &TelemetryConfig,
    vars: &Vars,
    timeout: Duration,
    exported: bool,
) -> Result<Otlp, String> {
    let protocol = match vars.per_signal(signal, "PROTOCOL", parse_protocol) {
        Some(p) => p,
        None => m
            .protocol
            .as_deref()
            .map_or(Ok(Protocol::HttpProtobuf), parse_protocol)?,
    };
    let path = format!("v1/{}", signal.to_ascii_lowercase());
    let with_path = |base: &str| match protocol {
        Protocol::Grpc => base.to_string(),
        Protocol::HttpProtobuf => format!("{}/{path}", base.trim_end_matches('/')),
    };
    let endpoint = match vars.get(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")) {
        Some(own) => own,
        None => match vars
            .get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .or_else(|| m.endpoint.clone())
        {
            Some(base) => with_path(base.trim()),
            None => match protocol {
                Protocol::Grpc => env::OTLP_GRPC_DEFAULT_ENDPOINT.to_string(),
                Protocol::HttpProtobuf => format!("{}/{path}", env::OTLP_HTTP_DEFAULT_BASE),
            },
        },
    };
    // OTEL_EXPORTER_OTLP_INSECURE governs gRPC endpoints without a scheme.
    let has_scheme = endpoint
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']));
    let endpoint = if protocol == Protocol::Grpc && !has_scheme {
        let insecure = vars
            .per_signal(signal, "INSECURE", parse_bool)
            .unwrap_or(false);
        format!("{}://{endpoint}", if insecure { "http" } else { "https" })
    } else {
        endpoint
    };
    // Headers: the manifest's, then OTEL_EXPORTER_OTLP_HEADERS, then the
    // signal's own variable, a later value for a key winning (same format as
    // OTEL_RESOURCE_ATTRIBUTES: key=value,... with percent-encoded values).
    let mut headers = m.headers.clone();
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
        format!("OTEL_EXPORTER_OTLP_{signal}_HEADERS"),
    ] {
        headers.extend(
            vars.valid(&name, parse_resource_attributes)
                .unwrap_or_default(),
        );
    }
    Ok(Otlp {
        protocol,
        endpoint,
        headers,
        timeout,
        compression: vars
            .per_signal(signal, "COMPRESSION", super::tls::parse_compression)
            .flatten(),
        tls: if exported {
            super::tls::ClientTls::resolve(signal, &|name| vars.get(name))?
        } else {
            Default::default()
        },
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
    fn export_headers_merge_manifest_general_and_signal_variables() {
        let m = TelemetryConfig {
            headers: BTreeMap::from([
                ("a".into(), "manifest".into()),
                ("b".into(), "manifest".into()),
            ]),
            ..Default::default()
        };
        let s = resolve(
            &m,
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", "b=general, c=x%3Dy%20z"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "c=traces"),
            ],
        )
        .unwrap();
        let h = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            s.traces.otlp.headers,
            h(&[("a", "manifest"), ("b", "general"), ("c", "traces")])
        );
        assert_eq!(
            s.metrics.otlp.headers,
            h(&[("a", "manifest"), ("b", "general"), ("c", "x=y z")])
        );
        // A malformed variable is a warning; the others still apply.
        let s = resolve(&m, &[("OTEL_EXPORTER_OTLP_HEADERS", "nonsense")]).unwrap();
        assert_eq!(s.logs.otlp.headers, m.headers);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("OTEL_EXPORTER_OTLP_HEADERS"))
        );
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = resolve(&TelemetryConfig::default(), &[]).unwrap();
        assert_eq!(s.traces.otlp.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.traces.otlp.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(s.metrics.otlp.endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(s.traces.batch.schedule_delay, Duration::from_millis(5000));
        assert_eq!(s.traces.batch.max_queue_size, 2048);
        assert_eq!(s.traces.batch.max_export_batch_size, 512);
        assert_eq!(s.traces.otlp.timeout, Duration::from_secs(10));
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
        assert_eq!(s.traces.otlp.endpoint, "http://collector:4318/v1/traces");
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
        assert_eq!(s.traces.otlp.protocol, Protocol::Grpc);
        assert_eq!(s.traces.otlp.endpoint, "http://other:4317");
        assert_eq!(s.traces.batch.schedule_delay, Duration::from_millis(100));
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
            s.traces.otlp.endpoint,
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
        assert_eq!(grpc(&[]).traces.otlp.endpoint, "https://collector:4317");
        let insecure = grpc(&[("OTEL_EXPORTER_OTLP_INSECURE", "TRUE")]);
        assert_eq!(insecure.traces.otlp.endpoint, "http://collector:4317");
        // An invalid per-signal value falls back to the general one.
        let fallback = grpc(&[
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "yes"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ]);
        assert_eq!(fallback.traces.otlp.endpoint, "http://collector:4317");
        assert_eq!(fallback.warnings.len(), 1, "{:?}", fallback.warnings);
        let traces_only = grpc(&[("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")]);
        assert_eq!(traces_only.traces.otlp.endpoint, "http://collector:4317");
        assert_eq!(traces_only.metrics.otlp.endpoint, "https://collector:4317");
        assert_eq!(grpc(&[]).traces.otlp.compression, None);
        let gz = grpc(&[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
        ]);
        assert_eq!(
            gz.traces.otlp.compression,
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
        // A signal that is not exported over OTLP reads no certificate.
        let s = resolve(
            &none,
            &[
                ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", junk_path),
                ("OTEL_METRICS_EXPORTER", "none"),
            ],
        )
        .unwrap();
        assert!(s.metrics.otlp.tls.ca.is_none());
        assert!(
            resolve(
                &none,
                &[
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
                    ("OTEL_SDK_DISABLED", "true"),
                ],
            )
            .is_ok()
        );
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
        // Invalid environment values are warned about and ignored: the
        // default (or the manifest's value) applies.
        let none = TelemetryConfig::default();
        let cases: &[(&str, &str)] = &[
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "x"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "-5"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1.5"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "99999999999"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_LOGS_EXPORTER", "kafka"),
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "x"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=1,broken"),
        ];
        let defaults = resolve(&none, &[]).unwrap();
        for (name, value) in cases {
            let s = resolve(&none, &[(name, value)]).unwrap();
            assert_eq!(s.warnings.len(), 1, "{name}={value}: {:?}", s.warnings);
            assert!(s.warnings[0].starts_with(&format!("{name}=`{value}` is ignored")));
            assert_eq!(
                format!("{:?}", s.sampler),
                format!("{:?}", defaults.sampler)
            );
            assert_eq!(s.traces.batch.max_queue_size, 2048);
            assert_eq!(s.traces.batch.schedule_delay, Duration::from_secs(5));
            assert_eq!(s.traces.otlp.timeout, Duration::from_secs(10));
            assert_eq!(s.traces.otlp.protocol, Protocol::HttpProtobuf);
            assert_eq!(s.traces.otlp.compression, None);
            assert_eq!(s.traces.exporter, Exporter::Otlp);
            assert_eq!(s.logs.exporter, Exporter::Otlp);
            assert!(!s.disabled);
            assert!(s.resource_attributes.is_empty());
        }
        // `false` is a valid boolean; values are case-insensitive enums.
        let s = resolve(
            &none,
            &[
                ("OTEL_SDK_DISABLED", "False"),
                ("OTEL_TRACES_SAMPLER", "ALWAYS_OFF"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC"),
                ("OTEL_TRACES_EXPORTER", "OTLP,Console"),
            ],
        )
        .unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(matches!(s.sampler, Sampler::AlwaysOff));
        assert_eq!(s.traces.otlp.protocol, Protocol::Grpc);
        assert!(s.traces.console);
        // An invalid manifest value is still an error (a broken manifest).
        let bad = TelemetryConfig {
            sampler: Some("sometimes".into()),
            ..Default::default()
        };
        assert!(resolve(&bad, &[]).is_err());
        // ... unless the environment overrides it with a valid one.
        assert!(resolve(&bad, &[("OTEL_TRACES_SAMPLER", "always_on")]).is_ok());
    }

    #[test]
    fn attribute_limits_and_propagators() {
        let m = TelemetryConfig {
            max_attribute_value_length: Some(100),
            ..Default::default()
        };
        assert_eq!(resolve(&m, &[]).unwrap().max_attribute_value_length, 100);
        let s = resolve(&m, &[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "64")]).unwrap();
        assert_eq!(s.max_attribute_value_length, 64);
        let s = resolve(
            &m,
            &[
                ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "64"),
                ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "32"),
            ],
        )
        .unwrap();
        assert_eq!(s.max_attribute_value_length, 32);
        let s = resolve(&m, &[("OTEL_PROPAGATORS", "tracecontext,baggage")]).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let s = resolve(&m, &[("OTEL_PROPAGATORS", "tracecontext,b3")]).unwrap();
        assert!(s.warnings[0].contains("not b3"), "{:?}", s.warnings);
    }

    #[test]
    fn resource_attributes_are_percent_decoded() {
        let none = TelemetryConfig::default();
        let s = resolve(
            &none,
            &[(
                "OTEL_RESOURCE_ATTRIBUTES",
                " deployment.environment = hello%20world , team=a%2Cb%3Dc,empty=,emoji=%F0%9F%90%8D,,",
            )],
        )
        .unwrap();
        assert_eq!(
            s.resource_attributes,
            vec![
                (
                    "deployment.environment".to_string(),
                    "hello world".to_string()
                ),
                ("team".to_string(), "a,b=c".to_string()),
                ("empty".to_string(), String::new()),
                ("emoji".to_string(), "\u{1F40D}".to_string()),
            ]
        );
        for broken in ["a=%zz", "a=%2", "a=%FF", "=x", "novalue"] {
            assert!(parse_resource_attributes(broken).is_err(), "{broken}");
        }
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
        assert_eq!(s.logs.batch.schedule_delay, Duration::from_secs(1));
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
        assert_eq!(s.traces.otlp.protocol, Protocol::HttpProtobuf);
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
