//! Host bindings for the `polytrace:telemetry` WIT package, generated at
//! build time from wit/telemetry.wit (which needs no wasi deps).

wasmtime::component::bindgen!({
    path: "../wit/telemetry.wit",
    world: "polytrace:telemetry/imports",
    // Resource lookups can fail on a bad handle: that traps the guest.
    // A statement on a database server is awaited, not blocked on.
    imports: {
        "polytrace:telemetry/sql.[method]connection.execute": async | trappable,
        "polytrace:telemetry/sql.[method]connection.execute-json": async | trappable,
        default: trappable,
    },
    with: {
        "polytrace:telemetry/tracing.span": crate::telemetry::GuestSpan,
        "polytrace:telemetry/metrics.counter": crate::telemetry::metrics::GuestInstrument,
        "polytrace:telemetry/metrics.up-down-counter": crate::telemetry::metrics::GuestInstrument,
        "polytrace:telemetry/metrics.histogram": crate::telemetry::metrics::GuestInstrument,
        "polytrace:telemetry/metrics.gauge": crate::telemetry::metrics::GuestInstrument,
        "polytrace:telemetry/sql.connection": crate::data::sql::GuestConnection,
    },
    additional_derives: [PartialEq],
});

pub use self::polytrace::telemetry::{logs, metrics, server, span_batch, sql, tracing, types};
