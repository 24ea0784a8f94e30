//! The OTLP exporter (feature `otlp`): `opentelemetry-otlp` over gRPC
//! (tonic) or HTTP/protobuf (async reqwest), run on a private Tokio runtime.
//!
//! The batch span processor calls exporters from its own thread, outside any
//! runtime; tonic and reqwest need one. Each export is spawned onto a
//! one-worker runtime owned by the [`TelemetryGuard`](super::TelemetryGuard)
//! (the exporter's connection tasks live there too), so OTLP works in a
//! synchronous program, under `#[tokio::main]` or any other executor.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::{Handle, Runtime};

use super::OtlpProtocol;

/// The private runtime of the OTLP exporters. Dropping it never blocks, so
/// it may be dropped anywhere, an async context included (where dropping a
/// Tokio runtime panics).
#[derive(Debug)]
pub(crate) struct OtlpRuntime(Option<Runtime>);

impl OtlpRuntime {
    /// A one-worker runtime.
    pub(crate) fn new() -> std::io::Result<OtlpRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kest-otlp")
            .enable_all()
            .build()?;
        Ok(OtlpRuntime(Some(rt)))
    }
}

impl Drop for OtlpRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Builds the exporter on `rt` (its connection tasks are spawned there).
pub(crate) fn build(
    rt: &OtlpRuntime,
    protocol: OtlpProtocol,
    endpoint: Option<&str>,
) -> Result<OnRuntime, opentelemetry_otlp::ExporterBuildError> {
    let Some(rt) = &rt.0 else {
        return Err(opentelemetry_otlp::ExporterBuildError::InternalFailure(
            "the OTLP runtime is stopped".into(),
        ));
    };
    let _entered = rt.enter();
    let exporter = match protocol {
        OtlpProtocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            match endpoint {
                Some(e) => builder.with_endpoint(e).build()?,
                None => builder.build()?,
            }
        }
        OtlpProtocol::HttpProtobuf => {
            let builder =
                opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
            match endpoint {
                Some(e) => builder.with_endpoint(e).build()?,
                None => builder.build()?,
            }
        }
    };
    Ok(OnRuntime { inner: Arc::new(exporter), handle: rt.handle().clone() })
}

/// An OTLP exporter whose exports run on the private runtime.
#[derive(Debug)]
pub(crate) struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    handle: Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        let task = self.handle.spawn(async move { inner.export(batch).await });
        async move {
            task.await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(format!("OTLP export task: {e}"))))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.handle.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.handle.enter();
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once by the provider builder, before any export: the only
        // reference.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}
