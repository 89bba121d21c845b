//! Host bindings for the `polytrace:telemetry` WIT package, generated at
//! build time from wit/telemetry.wit (which needs no wasi deps).

wasmtime::component::bindgen!({
    path: "../wit/telemetry.wit",
    world: "polytrace:telemetry/imports",
    // Resource lookups can fail on a bad handle: that traps the guest.
    imports: { default: trappable },
    with: {
        "polytrace:telemetry/tracing.span": crate::telemetry::GuestSpan,
    },
});

pub use self::polytrace::telemetry::{tracing, types};
