//! Kest's span recorder: the hook's spans (SPEC §9) built off the calling
//! thread.
//!
//! A hooked call hands its finished span to the recorder as a
//! [`HookRecord`] — ids, times, the signed entry shared with the passport,
//! the passport's view — through a bounded queue, never blocking: a full
//! queue drops the span and counts it, like the batch span processor. The
//! recorder's thread builds the attribute strings and the `SpanData`, and
//! passes it to each exporter's batch span processor, whose own thread
//! exports. Everything a span holds is allocated and freed away from the
//! caller, which keeps the export overhead of a hooked call small.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator as _, RandomIdGenerator, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

use super::SCOPE;
use super::span::{HookRecord, HookSink};

/// How many finished hook spans may wait for the recorder's thread.
const QUEUE_SIZE: usize = 2048;

/// The recorder's thread wakes up this often, or as soon as [`WAKE_AT`]
/// spans wait. Callers never wake it per span (that would be a system call
/// on the calling thread for each hooked call).
const DRAIN_INTERVAL: Duration = Duration::from_millis(200);

/// How many waiting spans wake the recorder's thread early.
const WAKE_AT: usize = QUEUE_SIZE / 4;

/// How long a flush waits for the recorder's thread.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

#[allow(
    clippy::large_enum_variant,
    reason = "spans travel by value: a box would be allocated on the calling thread and freed on the recorder's"
)]
enum Message {
    Span(HookRecord),
    Flush(SyncSender<()>),
    Stop,
}

/// The recorder: a queue, a thread, and the exporters' batch processors.
pub(crate) struct Recorder {
    sender: SyncSender<Message>,
    ids: RandomIdGenerator,
    dropped: AtomicU64,
    /// Spans submitted since the thread last drained the queue.
    waiting: Arc<AtomicUsize>,
    thread: std::thread::Thread,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts the recorder's thread, which feeds `processors`.
    pub(crate) fn start(processors: Vec<Arc<BatchSpanProcessor>>) -> std::io::Result<Arc<Recorder>> {
        let (sender, receiver) = mpsc::sync_channel(QUEUE_SIZE);
        let scope = InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION")).build();
        let waiting = Arc::new(AtomicUsize::new(0));
        let drained = Arc::clone(&waiting);
        let worker = std::thread::Builder::new()
            .name("kest-span-recorder".into())
            .spawn(move || run(&receiver, &processors, &scope, &drained))?;
        Ok(Arc::new(Recorder {
            sender,
            ids: RandomIdGenerator::default(),
            dropped: AtomicU64::new(0),
            waiting,
            thread: worker.thread().clone(),
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// Waits until every span submitted so far has reached the batch
    /// processors. `false` when the thread is gone or did not answer in
    /// time.
    pub(crate) fn flush(&self) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        // A blocking send: queued behind every span submitted before.
        if self.sender.send(Message::Flush(ack)).is_err() {
            return false;
        }
        self.thread.unpark();
        done.recv_timeout(FLUSH_TIMEOUT).is_ok()
    }

    /// Flushes, then stops the thread; `true` when both worked (a second
    /// call finds the thread gone and returns `false`).
    pub(crate) fn stop(&self) -> bool {
        let flushed = self.flush();
        let _ = self.sender.send(Message::Stop);
        self.thread.unpark();
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        let joined = worker.is_none_or(|w| w.join().is_ok());
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "kest telemetry: hook spans dropped because the recorder's queue was full"
            );
        }
        flushed && joined
    }
}

impl HookSink for Recorder {
    fn new_ids(&self, parent: &SpanContext) -> (TraceId, SpanId) {
        let trace_id = if parent.is_valid() { parent.trace_id() } else { self.ids.new_trace_id() };
        (trace_id, self.ids.new_span_id())
    }

    fn submit(&self, record: HookRecord) {
        match self.sender.try_send(Message::Span(record)) {
            Ok(()) => {
                if self.waiting.fetch_add(1, Ordering::Relaxed) + 1 == WAKE_AT {
                    self.thread.unpark();
                }
            }
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        queue = QUEUE_SIZE,
                        "kest telemetry: the span recorder's queue is full; dropping hook spans"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("kest telemetry: the span recorder has stopped; dropping hook spans");
                }
            }
        }
    }
}

/// The recorder's thread: drains the queue, sleeps, and stops on `Stop` or
/// when every sender is gone.
fn run(
    receiver: &Receiver<Message>,
    processors: &[Arc<BatchSpanProcessor>],
    scope: &InstrumentationScope,
    waiting: &AtomicUsize,
) {
    loop {
        waiting.store(0, Ordering::Relaxed);
        loop {
            match receiver.try_recv() {
                Ok(Message::Span(record)) => {
                    let data = span_data(record, scope);
                    if let Some((last, others)) = processors.split_last() {
                        for processor in others {
                            processor.on_end(data.clone());
                        }
                        last.on_end(data);
                    }
                }
                Ok(Message::Flush(ack)) => {
                    let _ = ack.send(());
                }
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        std::thread::park_timeout(DRAIN_INTERVAL);
    }
}

fn span_data(record: HookRecord, scope: &InstrumentationScope) -> SpanData {
    let HookRecord { span_context, parent_span_id, parent_is_remote, name, start, end, outcome } = record;
    let (attributes, status) = outcome.into_attributes();
    SpanData {
        span_context,
        parent_span_id,
        parent_span_is_remote: parent_is_remote,
        span_kind: SpanKind::Internal,
        name,
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// One exporter's batch processor, shared between the tracer provider
/// (spans of the OpenTelemetry API, e.g. `tracing`) and the recorder (the
/// hook's spans). The exporter received the resource before the processor
/// was built.
#[derive(Debug)]
pub(crate) struct SharedProcessor(pub(crate) Arc<BatchSpanProcessor>);

impl SpanProcessor for SharedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}
