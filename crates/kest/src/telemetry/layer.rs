//! The `tracing` bridge: a service's own `tracing` spans become
//! OpenTelemetry spans of the installed provider, so they and the hook's
//! `kest.verified.*` spans share one trace.

use opentelemetry::trace::TracerProvider as _;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use super::TelemetryGuard;

/// Crates whose own spans are never exported: the exporters' transports
/// (exporting their spans would export forever) and the SDK itself.
const NOT_EXPORTED: [&str; 11] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "reqwest",
    "rustls",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "rusqlite",
];

impl TelemetryGuard {
    /// A `tracing-subscriber` layer that records `tracing` spans into this
    /// guard's provider (instrumentation scope `kest.tracing`). Entering a
    /// `tracing` span makes it the current OpenTelemetry context, so a hooked
    /// call inside it is its child. The transports of the exporters are
    /// filtered out.
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt as _;
    /// let guard = kest::telemetry::init("svc", [kest::telemetry::Exporter::Stdout]).unwrap();
    /// let subscriber = tracing_subscriber::registry().with(guard.tracing_layer());
    /// tracing::subscriber::with_default(subscriber, || {
    ///     let _span = tracing::info_span!("handle_request").entered();
    ///     assert!(kest::telemetry::has_active_trace());
    /// });
    /// # drop(guard);
    /// ```
    pub fn tracing_layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider().tracer("kest.tracing");
        let mut filter = Targets::new().with_default(LevelFilter::TRACE);
        for target in NOT_EXPORTED {
            filter = filter.with_target(target, LevelFilter::OFF);
        }
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter)
    }
}
