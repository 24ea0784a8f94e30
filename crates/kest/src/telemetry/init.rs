//! [`init`]: installs the global tracer provider with one batch span
//! processor per exporter, and the [`TelemetryGuard`] that flushes it.

use std::fmt;
use std::path::PathBuf;

use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use std::sync::Arc;

use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter, TracerProviderBuilder,
};

use super::json_lines::JsonLinesExporter;
use super::recorder::{Recorder, SharedProcessor};
use super::span::{HookSink, install_sink, uninstall_sink};
use super::{Exporter, TelemetryConfig};
use crate::runtime::ConfigError;

/// Why telemetry could not be installed or flushed.
///
/// ```
/// use kest::telemetry::{self, Exporter, TelemetryError};
/// let err = telemetry::init("", [Exporter::Stdout]).unwrap_err();
/// assert!(matches!(err, TelemetryError::Config(_)));
/// assert_eq!(err.to_string(), "telemetry: the service name is empty");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The service name or the exporter list is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The exporter needs a Cargo feature of `kest` this build lacks.
    #[error("telemetry exporter `{exporter}` needs the `{feature}` feature of kest")]
    FeatureDisabled {
        /// The exporter.
        exporter: String,
        /// The missing feature.
        feature: &'static str,
    },
    /// A span file could not be opened for appending.
    #[error("cannot open span file `{}`: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SQLite span store could not be opened or initialized.
    #[error("cannot open span store `{}`: {message}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// The OTLP exporter could not be built (bad endpoint or `OTEL_*`
    /// variable) or its runtime could not start.
    #[error("OTLP exporter `{exporter}`: {message}")]
    Otlp {
        /// The exporter.
        exporter: String,
        /// Why.
        message: String,
    },
    /// Flushing or shutting down the provider failed (spans may be lost;
    /// calls were never affected).
    #[error("telemetry flush or shutdown failed: {0}")]
    Flush(String),
}

/// Installs telemetry: an `opentelemetry_sdk` tracer provider with the
/// resource `service.name` = `service_name`, the `AlwaysOn` sampler (a hook
/// span is an audit record: it is kept even under an unsampled incoming
/// `traceparent`) and one batch span processor per exporter, set as the
/// global provider (the hook's spans go there). The batch processors read
/// the standard `OTEL_BSP_*` variables (queue size, delay, batch size).
///
/// Keep the returned guard for the life of the service and call
/// [`TelemetryGuard::shutdown`] before exiting so the last batch is written.
///
/// ```
/// use kest::telemetry::{self, Exporter, TelemetryError};
/// let dir = tempfile::tempdir().unwrap();
/// let guard = telemetry::init("svc", [Exporter::File(dir.path().join("spans.jsonl"))]).unwrap();
/// guard.shutdown().unwrap();
/// // Misconfiguration is an error at start-up.
/// let missing = dir.path().join("no/such/dir/spans.jsonl");
/// assert!(matches!(telemetry::init("svc", [Exporter::File(missing)]), Err(TelemetryError::File { .. })));
/// assert!(telemetry::init("svc", []).is_err());
/// ```
pub fn init(
    service_name: impl Into<String>,
    exporters: impl IntoIterator<Item = Exporter>,
) -> Result<TelemetryGuard, TelemetryError> {
    init_from_config(&TelemetryConfig::new(service_name, exporters)?)
}

/// [`init`] from a [`TelemetryConfig`] (e.g. [`crate::Kest::telemetry`], read
/// from the `[telemetry]` TOML table or `KEST_TELEMETRY_EXPORTERS`).
///
/// ```
/// let kest = kest::Kest::builder()
///     .with_env_lookup(|k| match k {
///         "KEST_TELEMETRY_EXPORTERS" => Some("stdout".into()),
///         "OTEL_SERVICE_NAME" => Some("svc".into()),
///         _ => None,
///     })
///     .unwrap()
///     .build()
///     .unwrap();
/// let guard = kest::telemetry::init_from_config(kest.telemetry().unwrap()).unwrap();
/// guard.shutdown().unwrap();
/// ```
pub fn init_from_config(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let resource = Resource::builder().with_service_name(config.service_name().to_owned()).build();
    // Every span is recorded, whatever an incoming `traceparent` says: a
    // hook span is an audit record, which must not depend on an upstream
    // service's sampling decision.
    let mut builder =
        SdkTracerProvider::builder().with_resource(resource.clone()).with_sampler(Sampler::AlwaysOn);
    // One batch processor per exporter, shared by the provider (spans of
    // the OpenTelemetry API) and Kest's recorder (the hook's spans). The
    // exporter gets the resource here: a shared processor cannot be given
    // it by the provider.
    let mut processors = Vec::new();
    #[cfg(feature = "otlp")]
    let mut runtime: Option<super::otlp::OtlpRuntime> = None;
    for exporter in config.exporters() {
        let shown = exporter.to_string();
        builder = match exporter {
            Exporter::File(path) => {
                let file = JsonLinesExporter::file(path)
                    .map_err(|source| TelemetryError::File { path: path.clone(), source })?;
                add_exporter(builder, Logged::new(shown, file), &resource, &mut processors)
            }
            Exporter::Stdout => add_exporter(
                builder,
                Logged::new(shown, JsonLinesExporter::stdout()),
                &resource,
                &mut processors,
            ),
            #[cfg(feature = "sqlite")]
            Exporter::Sqlite(path) => {
                let store = super::sqlite::SqliteExporter::open(path)
                    .map_err(|e| TelemetryError::Sqlite { path: path.clone(), message: e.to_string() })?;
                add_exporter(builder, Logged::new(shown, store), &resource, &mut processors)
            }
            #[cfg(feature = "otlp")]
            Exporter::Otlp { protocol, endpoint } => {
                let otlp_error = |message: String| TelemetryError::Otlp { exporter: shown.clone(), message };
                let rt = match runtime.take() {
                    Some(rt) => rt,
                    None => super::otlp::OtlpRuntime::new().map_err(|e| otlp_error(e.to_string()))?,
                };
                let built = super::otlp::build(&rt, *protocol, endpoint.as_deref());
                runtime = Some(rt);
                {
                    let exporter = built.map_err(|e| otlp_error(e.to_string()))?;
                    add_exporter(builder, Logged::new(shown.clone(), exporter), &resource, &mut processors)
                }
            }
            #[allow(unreachable_patterns, reason = "reachable without the `otlp` or `sqlite` feature")]
            other => {
                return Err(TelemetryError::FeatureDisabled { exporter: shown, feature: other.feature() });
            }
        };
    }
    let provider = builder.build();
    let recorder = match Recorder::start(processors) {
        Ok(recorder) => recorder,
        Err(e) => {
            let _ = provider.shutdown();
            return Err(TelemetryError::Flush(format!("cannot start the span recorder thread: {e}")));
        }
    };
    opentelemetry::global::set_tracer_provider(provider.clone());
    install_sink(Arc::clone(&recorder) as Arc<dyn HookSink>);
    Ok(TelemetryGuard {
        provider,
        recorder,
        stopped: false,
        #[cfg(feature = "otlp")]
        runtime,
    })
}

/// Adds `exporter` behind a batch processor shared by the provider and
/// the recorder (see [`init_from_config`]).
fn add_exporter<E: SpanExporter + 'static>(
    builder: TracerProviderBuilder,
    mut exporter: E,
    resource: &Resource,
    processors: &mut Vec<Arc<BatchSpanProcessor>>,
) -> TracerProviderBuilder {
    exporter.set_resource(resource);
    let processor = Arc::new(BatchSpanProcessor::builder(exporter).build());
    processors.push(Arc::clone(&processor));
    builder.with_span_processor(SharedProcessor(processor))
}

/// The installed telemetry. [`shutdown`](TelemetryGuard::shutdown) flushes
/// every exporter and uninstalls the provider; dropping the guard does the
/// same, best effort (errors are logged).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("spans.jsonl");
/// {
///     let _guard = kest::telemetry::init("svc", [kest::telemetry::Exporter::File(path.clone())]).unwrap();
///     // ... the service runs; the guard is dropped when it ends ...
/// }
/// assert!(path.exists());
/// ```
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    recorder: Arc<Recorder>,
    stopped: bool,
    #[cfg(feature = "otlp")]
    runtime: Option<super::otlp::OtlpRuntime>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard").field("provider", &self.provider).finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// The installed provider (e.g. to build other tracers from it).
    ///
    /// ```
    /// use opentelemetry::trace::TracerProvider as _;
    /// let guard = kest::telemetry::init("svc", [kest::telemetry::Exporter::Stdout]).unwrap();
    /// let _tracer = guard.provider().tracer("my-service");
    /// # guard.shutdown().unwrap();
    /// ```
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports every span ended so far, waiting for the exporters.
    ///
    /// ```
    /// let guard = kest::telemetry::init("svc", [kest::telemetry::Exporter::Stdout]).unwrap();
    /// guard.force_flush().unwrap();
    /// # guard.shutdown().unwrap();
    /// ```
    pub fn force_flush(&self) -> Result<(), TelemetryError> {
        if !self.recorder.flush() {
            return Err(TelemetryError::Flush("the span recorder did not flush".into()));
        }
        self.provider().force_flush().map_err(|e| TelemetryError::Flush(e.to_string()))
    }

    /// Flushes and shuts down every exporter, and puts a no-op provider
    /// back as the global one (later spans are not recorded). An error
    /// means some spans could not be written (the failures were logged).
    ///
    /// ```
    /// let guard = kest::telemetry::init("svc", [kest::telemetry::Exporter::Stdout]).unwrap();
    /// guard.shutdown().unwrap();
    /// assert!(!kest::telemetry::has_active_trace());
    /// ```
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TelemetryError> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        // No new hook span reaches the recorder; the ones queued reach the
        // batch processors before those shut down.
        uninstall_sink(&(Arc::clone(&self.recorder) as Arc<dyn HookSink>));
        let recorded = self.recorder.stop();
        opentelemetry::global::set_tracer_provider(NoopTracerProvider::new());
        let mut result = self.provider.shutdown().map_err(|e| TelemetryError::Flush(e.to_string()));
        if !recorded && result.is_ok() {
            result = Err(TelemetryError::Flush("the span recorder did not flush".into()));
        }
        // After the exporters: their last exports ran on it.
        #[cfg(feature = "otlp")]
        drop(self.runtime.take());
        result
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "kest telemetry: shutdown on drop failed");
        }
    }
}

/// An exporter whose failures are logged with `tracing` (and still
/// returned to the batch processor, which drops the batch). Nothing here
/// can reach a hooked call.
#[derive(Debug)]
struct Logged<E> {
    name: String,
    inner: E,
}

impl<E> Logged<E> {
    fn new(name: String, inner: E) -> Self {
        Logged { name, inner }
    }
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            tracing::warn!(exporter = %self.name, spans, error = %e, "kest telemetry: span export failed");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        let result = self.inner.shutdown_with_timeout(timeout);
        if let Err(e) = &result {
            tracing::warn!(exporter = %self.name, error = %e, "kest telemetry: exporter shutdown failed");
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
