//! The verification hook from Python.
//!
//! Sync functions: one Rust call, made with the GIL released, runs policy
//! evaluation, then re-acquires the GIL only to call the decorated function,
//! then signs and appends the entry — all inside `kest::Verified::call`, so
//! the Rust hook's guarantees hold unchanged (no execution without lineage,
//! `failed_execution` entries, `unrecorded` errors).
//!
//! Async functions: `kest::Verified::call_async` runs as a Rust future whose
//! operation is a one-shot slot. `start` polls it (GIL released) until the
//! operation starts — i.e. every policy allowed — and returns; Python then
//! awaits the coroutine; `finish` fills the slot with the outcome and polls
//! the future to its end (the entry is signed and appended, GIL released).
//! Dropping an unfinished call (a cancelled or abandoned coroutine) drops
//! the future, which records a `failed_execution` + `cancelled` entry.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use kest::hook::{CallContext, Verified};
use kest::identity::IdentityProvider;
use kest::policy::PolicyEngine;
use kest::{HookError, Lineage};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::convert::{to_json, to_json_object};
use crate::engine::Engine;
use crate::errors;
use crate::flow::Flow;
use crate::identity::Identity;
use crate::passport::parse_classification;

/// A protected operation: its policies and lineage parameters, validated
/// once when the decorator is applied.
#[pyclass(frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct Hook {
    verified: Verified,
    user: Option<String>,
    agent: Option<String>,
    task: Option<String>,
    resource_id: Option<String>,
    resource_attr: Option<Map<String, Value>>,
    identity: Option<Arc<dyn IdentityProvider>>,
    engine: Option<Arc<dyn PolicyEngine>>,
}

/// The operation's failure, kept on the Python side (the exception is
/// re-raised there unchanged).
#[derive(Debug)]
pub struct OperationFailed;

/// The JSON form of a protected function's return value, hashed into the
/// entry's `content_hash` (RFC 8785, SHA-256, as the Rust hook's
/// `hash_output`) when the hook hashes outputs: `None` when it does not,
/// `Some(Err(why))` for a value that is not JSON (the call is then recorded
/// as failed and the value withheld, as in Rust).
#[derive(Debug, Default)]
pub struct Output(Option<Result<Value, String>>);

impl Output {
    /// The JSON form of `value` when `on`, converted with the GIL held.
    fn of(on: bool, value: &Bound<'_, PyAny>) -> Output {
        Output(on.then(|| to_json(value).map_err(|e| e.to_string())))
    }
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(Ok(value)) => value.serialize(serializer),
            Some(Err(why)) => Err(serde::ser::Error::custom(why)),
            None => serializer.serialize_unit(),
        }
    }
}

/// A sync call's return value with its JSON form.
struct Returned {
    value: Py<PyAny>,
    output: Output,
}

impl Serialize for Returned {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.output.serialize(serializer)
    }
}

impl Hook {
    fn context(&self, attributes: Option<Map<String, Value>>, persisted: Vec<String>) -> CallContext {
        let mut ctx = CallContext::new()
            .set_user(self.user.clone())
            .set_agent(self.agent.clone())
            .set_task(self.task.clone())
            .set_resource_id(self.resource_id.clone());
        if let Some(attr) = &self.resource_attr {
            ctx = ctx.resource_attr(attr.clone());
        }
        if let Some(id) = &self.identity {
            ctx = ctx.identity(Arc::clone(id));
        }
        if let Some(engine) = &self.engine {
            ctx = ctx.engine(Arc::clone(engine));
        }
        for (name, value) in attributes.unwrap_or_default() {
            ctx = if persisted.contains(&name) {
                ctx.persisted_attribute(name, value)
            } else {
                ctx.attribute(name, value)
            };
        }
        ctx
    }
}

/// Converts the hook's outcome into a Python result.
fn outcome<T>(result: Result<T, HookError<PyErr>>) -> PyResult<T> {
    match result {
        Ok(v) => Ok(v),
        Err(HookError::Kest(e)) => Err(errors::from_kest(&e)),
        Err(HookError::Operation(e)) => Err(e),
        Err(HookError::Unrecorded { error, source }) => {
            let err = errors::from_kest(&source);
            Python::attach(|py| err.set_cause(py, Some(error)));
            Err(err)
        }
    }
}

fn attributes_of(attributes: Option<&Bound<'_, PyDict>>) -> PyResult<Option<Map<String, Value>>> {
    attributes.map(|a| to_json_object(a.as_any())).transpose()
}

#[pymethods]
impl Hook {
    /// Validates the hook: at least one policy, taint removal only by a
    /// sanitizer or with an override, an override in 0..=100.
    #[new]
    #[pyo3(signature = (operation, policies, *, source_type = None, added_taints = Vec::new(), removed_taints = Vec::new(), trust_override = None, classification = "system", action = None, scope_name = None, user = None, agent = None, task = None, resource_id = None, resource_attr = None, identity = None, engine = None, hash_output = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        operation: String,
        policies: Vec<String>,
        source_type: Option<String>,
        added_taints: Vec<String>,
        removed_taints: Vec<String>,
        trust_override: Option<i64>,
        classification: &str,
        action: Option<String>,
        scope_name: Option<String>,
        user: Option<String>,
        agent: Option<String>,
        task: Option<String>,
        resource_id: Option<String>,
        resource_attr: Option<&Bound<'_, PyAny>>,
        identity: Option<&Bound<'_, Identity>>,
        engine: Option<&Bound<'_, Engine>>,
        hash_output: bool,
    ) -> PyResult<Hook> {
        let mut b = Verified::builder(operation)
            .policies(policies)
            .hash_output(hash_output)
            .classification(parse_classification(classification)?);
        if let Some(s) = source_type {
            b = b.source_type(s);
        }
        for t in added_taints {
            b = b.added_taint(t);
        }
        for t in removed_taints {
            b = b.removed_taint(t);
        }
        if let Some(o) = trust_override {
            b = b.trust_override(o);
        }
        if let Some(a) = action {
            b = b.action(a);
        }
        if let Some(s) = scope_name {
            b = b.scope_name(s);
        }
        let verified = b.build().map_err(|e| errors::config(e.to_string()))?;
        Ok(Hook {
            verified,
            user,
            agent,
            task,
            resource_id,
            resource_attr: resource_attr.map(to_json_object).transpose()?,
            identity: identity.map(|i| Arc::clone(&i.get().inner)),
            engine: engine.map(|e| Arc::clone(&e.get().inner)),
        })
    }

    /// The operation name.
    #[getter]
    fn operation(&self) -> &str {
        self.verified.operation()
    }

    /// Whether the entry records the hash of the return value
    /// (`content_hash`).
    #[getter]
    fn hash_output(&self) -> bool {
        self.verified.hashes_output()
    }

    /// Runs `func(*args, **kwargs)` under the hook in `flow`: policies
    /// (GIL released), the function (GIL held), the signed entry (GIL
    /// released). A denial raises `PolicyDeniedError` and `func` never
    /// runs; an exception from `func` is recorded and re-raised unchanged.
    /// With `hash_output`, the return value's JSON form is hashed into
    /// `content_hash`; a value that is not JSON is recorded as failed and
    /// raises `KestError(kind="hash")` instead of being returned.
    #[pyo3(signature = (flow, func, args, kwargs = None, attributes = None, persisted = Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    #[expect(
        clippy::result_large_err,
        reason = "the hook's own `HookError` (kest) is returned as is, once per call"
    )]
    fn call(
        &self,
        py: Python<'_>,
        flow: &Flow,
        func: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
        attributes: Option<&Bound<'_, PyDict>>,
        persisted: Vec<String>,
    ) -> PyResult<Py<PyAny>> {
        let ctx = self.context(attributes_of(attributes)?, persisted);
        let lineage = flow.lineage.clone();
        let verified = &self.verified;
        if verified.hashes_output() {
            let result = py.detach(|| {
                lineage.enter(|| {
                    verified.call_hashed(ctx, || {
                        Python::attach(|py| {
                            let value =
                                func.bind(py).call(args.bind(py), kwargs.as_ref().map(|k| k.bind(py)))?;
                            let output = Output::of(true, &value);
                            Ok(Returned { value: value.unbind(), output })
                        })
                    })
                })
            });
            return outcome(result).map(|r| r.value);
        }
        let result = py.detach(|| {
            lineage.enter(|| {
                verified.call(ctx, || {
                    Python::attach(|py| {
                        func.bind(py)
                            .call(args.bind(py), kwargs.as_ref().map(|k| k.bind(py)))
                            .map(Bound::unbind)
                    })
                })
            })
        });
        outcome(result)
    }

    /// Starts an async call in `flow`: evaluates the policies (GIL
    /// released) and returns the pending call, or raises (the coroutine
    /// must then not run).
    #[pyo3(signature = (flow, attributes = None, persisted = Vec::new()))]
    fn start(
        &self,
        py: Python<'_>,
        flow: &Flow,
        attributes: Option<&Bound<'_, PyDict>>,
        persisted: Vec<String>,
    ) -> PyResult<AsyncCall> {
        let ctx = self.context(attributes_of(attributes)?, persisted);
        let slot = Arc::new(Slot::default());
        let verified = self.verified.clone();
        let op = OperationSlot(Arc::clone(&slot));
        let lineage: Lineage = flow.lineage.clone();
        let hashes = verified.hashes_output();
        let future: CallFuture =
            Box::pin(lineage.scope(async move { verified.call_async_hashed(ctx, op).await }));
        let call = AsyncCall { state: Mutex::new(Some(future)), slot, hashes };
        match py.detach(|| call.drive(true)) {
            Driven::Started => Ok(call),
            // Ended before the operation started: a refusal.
            Driven::Done(result) => Err(match outcome(result) {
                Err(e) => e,
                Ok(()) => errors::config("the call ended before its operation started"),
            }),
        }
    }
}

/// The future of one async call.
type CallFuture = Pin<Box<dyn Future<Output = Result<Output, HookError<OperationFailed>>> + Send>>;

/// Where Python leaves the outcome of the awaited coroutine.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    started: bool,
    outcome: Option<Result<Output, OperationFailed>>,
    waker: Option<Waker>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The operation as the Rust hook sees it: ready when Python has filled
/// the slot.
struct OperationSlot(Arc<Slot>);

impl Future for OperationSlot {
    type Output = Result<Output, OperationFailed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock();
        s.started = true;
        match s.outcome.take() {
            Some(o) => Poll::Ready(o),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Wakes the thread that drives a call.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

enum Driven {
    /// The operation started (policies allowed).
    Started,
    /// The call ended.
    Done(Result<(), HookError<PyErr>>),
}

/// An async call between `Hook.start` and `finish`.
#[pyclass(module = "kest_rs")]
pub struct AsyncCall {
    state: Mutex<Option<CallFuture>>,
    slot: Arc<Slot>,
    /// Whether the return value is hashed (`succeeded` converts it).
    hashes: bool,
}

impl AsyncCall {
    fn take(&self) -> Option<CallFuture> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Polls the call until it ends, or (with `until_started`) until the
    /// operation has started. In-process engines and signing never wait,
    /// so this returns after one or two polls.
    fn drive(&self, until_started: bool) -> Driven {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(future) = guard.as_mut() else {
            return Driven::Done(Err(HookError::Kest(kest::KestError::Cancelled)));
        };
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(result) => {
                    *guard = None;
                    return Driven::Done(result.map(|_| ()).map_err(|e| match e {
                        HookError::Kest(k) => HookError::Kest(k),
                        HookError::Operation(OperationFailed) => HookError::Operation(placeholder()),
                        HookError::Unrecorded { source, .. } => {
                            HookError::Unrecorded { error: placeholder(), source }
                        }
                    }));
                }
                Poll::Pending => {
                    if until_started && self.slot.lock().started {
                        return Driven::Started;
                    }
                    std::thread::park_timeout(Duration::from_millis(5));
                }
            }
        }
    }

    fn complete(&self, py: Python<'_>, outcome_value: Result<Output, OperationFailed>) -> Driven {
        let waker = {
            let mut s = self.slot.lock();
            s.outcome = Some(outcome_value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        py.detach(|| self.drive(false))
    }
}

/// Stands for the operation's exception, which Python re-raises itself.
fn placeholder() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("operation failed")
}

#[pymethods]
impl AsyncCall {
    /// The coroutine returned `result`: signs and appends the entry (GIL
    /// released; with `hash_output` the entry records the hash of
    /// `result`). Raises `UnrecordedError` if that fails, `KestError(kind=
    /// "hash")` if `result` is not JSON (recorded as failed); the result
    /// must then be withheld.
    #[pyo3(signature = (result = None))]
    fn succeeded(&self, py: Python<'_>, result: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let output = match result {
            Some(value) => Output::of(self.hashes, value),
            None => Output::of(self.hashes, &py.None().into_bound(py)),
        };
        match self.complete(py, Ok(output)) {
            Driven::Done(r) => outcome(r),
            Driven::Started => Err(errors::config("the call did not finish")),
        }
    }

    /// The coroutine raised `error`: records a `failed_execution` entry.
    /// Returns normally when it was recorded (the caller re-raises
    /// `error`), raises `UnrecordedError` (caused by `error`) otherwise.
    fn failed(&self, py: Python<'_>, error: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.complete(py, Err(OperationFailed)) {
            Driven::Done(Err(HookError::Unrecorded { source, .. })) => {
                let err = errors::from_kest(&source);
                err.set_cause(py, Some(PyErr::from_value(error.clone())));
                Err(err)
            }
            Driven::Done(Err(HookError::Operation(_))) | Driven::Done(Ok(())) => Ok(()),
            Driven::Done(Err(e)) => outcome(Err(e)),
            Driven::Started => Err(errors::config("the call did not finish")),
        }
    }

    /// The coroutine was cancelled: records a `failed_execution` +
    /// `cancelled` entry (by dropping the Rust future).
    fn cancelled(&self, py: Python<'_>) {
        let future = self.take();
        py.detach(move || drop(future));
    }
}

impl Drop for AsyncCall {
    fn drop(&mut self) {
        // An abandoned call is a cancellation: dropping the future records it.
        drop(self.take());
    }
}
