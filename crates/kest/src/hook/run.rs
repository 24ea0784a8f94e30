//! Step 6 of the lifecycle (SPEC §5): run the operation inside its flow,
//! and make sure it never ends without a signed entry.
//!
//! - A value is returned only after its entry is recorded; if recording
//!   fails the caller gets [`KestError::Unrecorded`] instead of the value.
//! - An `Err` is returned after a `failed_execution` entry is recorded; if
//!   that fails the caller gets [`HookError::Unrecorded`] carrying both.
//! - A panic is recorded, then resumed (if recording fails it is logged
//!   and the span ends with an error; the panic still propagates).
//! - An async operation whose future is dropped after it started records a
//!   `failed_execution` + `cancelled` entry from a drop guard (signing is
//!   synchronous).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;

use super::plan::Pending;
use super::record::Outcome;
use super::{CallContext, Verified, hash_json};
use crate::error::{HookError, KestError};

impl Verified {
    /// Runs a fallible operation under the hook. A denial or engine error
    /// means `f` never runs. An `Err` or a panic from `f` is recorded as a
    /// `failed_execution` entry, then returned (or resumed) unchanged.
    pub fn call<T, E>(&self, call: CallContext, f: impl FnOnce() -> Result<T, E>) -> Result<T, HookError<E>> {
        self.call_inner(call, f, |_| Ok(String::new()))
    }

    /// [`Verified::call`], also hashing the output into `content_hash` when
    /// the hook was built with `hash_output(true)`.
    pub fn call_hashed<T: Serialize, E>(
        &self,
        call: CallContext,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, HookError<E>> {
        let on = self.hash_output;
        self.call_inner(call, f, move |v| if on { hash_json(v, "output") } else { Ok(String::new()) })
    }

    fn call_inner<T, E>(
        &self,
        call: CallContext,
        f: impl FnOnce() -> Result<T, E>,
        hash: impl FnOnce(&T) -> Result<String, KestError>,
    ) -> Result<T, HookError<E>> {
        let pending = self.authorize(&call).map_err(HookError::Kest)?;
        let lineage = pending.lineage.clone();
        let result = lineage.enter(|| catch_unwind(AssertUnwindSafe(f)));
        self.finish(pending, result, hash)
    }

    fn unrecorded(&self, source: KestError) -> KestError {
        KestError::Unrecorded { operation: self.operation.clone(), source: Box::new(source) }
    }

    fn finish<T, E>(
        &self,
        pending: Pending,
        result: std::thread::Result<Result<T, E>>,
        hash: impl FnOnce(&T) -> Result<String, KestError>,
    ) -> Result<T, HookError<E>> {
        match result {
            Ok(Ok(value)) => match hash(&value) {
                Ok(content_hash) => match self.record(pending, Outcome::Success { content_hash }) {
                    Ok(_) => Ok(value),
                    Err(e) => Err(HookError::Kest(self.unrecorded(e))),
                },
                // The operation ran but its output cannot be hashed: it is
                // recorded as failed and the value is withheld.
                Err(hash_error) => match self.record(pending, Outcome::Failed { cancelled: false }) {
                    Ok(_) => Err(HookError::Kest(hash_error)),
                    Err(e) => Err(HookError::Kest(self.unrecorded(e))),
                },
            },
            Ok(Err(error)) => match self.record(pending, Outcome::Failed { cancelled: false }) {
                Ok(_) => Err(HookError::Operation(error)),
                Err(e) => Err(HookError::Unrecorded { error, source: self.unrecorded(e) }),
            },
            Err(panic) => {
                // `record` logged and reported a failure; the panic goes on.
                let _ = self.record(pending, Outcome::Failed { cancelled: false });
                resume_unwind(panic)
            }
        }
    }

    /// Async twin of [`Verified::call`]: remote engines are awaited, the
    /// future runs inside the flow, panics are recorded and resumed, and a
    /// future dropped after it started is recorded as cancelled.
    pub async fn call_async<T, E, F>(&self, call: CallContext, future: F) -> Result<T, HookError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_async_inner(call, future, |_| Ok(String::new())).await
    }

    /// Async twin of [`Verified::call_hashed`].
    pub async fn call_async_hashed<T: Serialize, E, F>(
        &self,
        call: CallContext,
        future: F,
    ) -> Result<T, HookError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let on = self.hash_output;
        self.call_async_inner(
            call,
            future,
            move |v| if on { hash_json(v, "output") } else { Ok(String::new()) },
        )
        .await
    }

    async fn call_async_inner<T, E, F>(
        &self,
        call: CallContext,
        future: F,
        hash: impl FnOnce(&T) -> Result<String, KestError>,
    ) -> Result<T, HookError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let pending = self.authorize_async(&call).await.map_err(HookError::Kest)?;
        let scoped = pending.lineage.scope(CatchUnwind { future: Box::pin(future) });
        let mut guard = RecordOnDrop { hook: self, pending: Some(pending) };
        let result = scoped.await;
        match guard.pending.take() {
            Some(pending) => self.finish(pending, result, hash),
            // Unreachable: only this function takes the pending call.
            None => Err(HookError::Kest(self.unrecorded(KestError::Cancelled))),
        }
    }
}

/// Records a `failed_execution` + `cancelled` entry when the future of a
/// started call is dropped before it finished.
struct RecordOnDrop<'a> {
    hook: &'a Verified,
    pending: Option<Pending>,
}

impl Drop for RecordOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            tracing::warn!(operation = %self.hook.operation, "kest: call cancelled after it started");
            // `record` logs and reports a failure to telemetry.
            let _ = self.hook.record(pending, Outcome::Failed { cancelled: true });
        }
    }
}

/// Polls a future inside `catch_unwind`.
struct CatchUnwind<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.future.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
