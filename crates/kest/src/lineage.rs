//! Ambient lineage (SPEC §5 concurrency, §7.1): the passport, its tips and
//! the identity baggage of the current *logical flow*.
//!
//! A [`Lineage`] is a handle to one flow. It is entered for a closure
//! ([`Lineage::enter`]) or a future ([`Lineage::scope`], which re-enters on
//! every poll, so the flow follows the future across `.await` points and
//! worker threads). There is no process-wide lineage: code outside any flow
//! has none, and each hooked call there starts a root of its own.
//!
//! Concurrent branches are forks: [`fork`] (or [`spawn`] / [`spawn_thread`],
//! which fork and run) starts a new flow at the current tips (fan-out);
//! [`Lineage::join`] merges branches back so the next entry names all their
//! tips as parents (fan-in).
//!
//! ```
//! use kest::lineage::{current_passport, Lineage};
//! let flow = Lineage::new();
//! let inside = flow.enter(|| current_passport().map(|p| p.len()));
//! assert_eq!(inside, Some(0));
//! assert!(current_passport().is_none(), "nothing outside the flow");
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use kest_core::{Entry, EntryHash, Passport};

use crate::telemetry::PassportDigest;

/// Who the flow acts for (baggage `kest.user`, `kest.agent`, `kest.task`,
/// `kest.jwt`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FlowIdentity {
    /// End user.
    pub user: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Task / scope.
    pub task: Option<String>,
    /// The raw bearer token, when one was verified at the edge.
    pub jwt: Option<String>,
    /// The RFC 8693 delegation chain of the verified token (the actors
    /// behind the current one, outermost first), recorded as the entry
    /// label `kest.delegation`; empty when there is none.
    pub delegation: Vec<String>,
}

impl std::fmt::Debug for FlowIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowIdentity")
            .field("user", &self.user)
            .field("agent", &self.agent)
            .field("task", &self.task)
            .field("jwt", &self.jwt.as_ref().map(|_| "<redacted>"))
            .field("delegation", &self.delegation)
            .finish()
    }
}

#[derive(Debug, Default)]
struct FlowState {
    passport: Passport,
    /// Where the next entry attaches (normally the passport's tips).
    tips: Vec<EntryHash>,
    identity: FlowIdentity,
    /// The origin a root of this flow is scored with at most (an entry
    /// point's ingress origin, SPEC §7.5).
    ingress_origin: Option<String>,
    /// What the spans of this flow's calls report of its passport, kept
    /// up to date by them.
    span_digest: PassportDigest,
}

/// A handle to one logical flow; clones share the flow.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    state: Arc<Mutex<FlowState>>,
}

/// What a hooked call reads from the flow before it runs (SPEC §5 step 2).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The parent entries of the next entry (empty for a root).
    pub parents: Vec<Arc<Entry>>,
    /// Their hashes.
    pub tips: Vec<EntryHash>,
    /// The flow's identity baggage.
    pub identity: FlowIdentity,
    /// The origin a root entry of this flow is scored with at most.
    pub ingress_origin: Option<String>,
}

thread_local! {
    static CURRENT: RefCell<Option<Lineage>> = const { RefCell::new(None) };
}

/// Restores the previously entered flow when dropped (also on panic).
struct EnterGuard {
    previous: Option<Lineage>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl Lineage {
    /// A new, empty flow.
    pub fn new() -> Lineage {
        Lineage::default()
    }

    /// A flow continuing a verified passport (e.g. received from upstream).
    /// The next entry attaches to the passport's tips.
    pub fn from_passport(passport: Passport) -> Lineage {
        let tips = passport.tips().to_vec();
        Lineage { state: Arc::new(Mutex::new(FlowState { passport, tips, ..FlowState::default() })) }
    }

    /// A new flow started at an entry point (SPEC §7.5): a root entry in it
    /// is scored with `origin` — a root's declared origin is kept only when
    /// it scores no higher — so an entry point never starts an `internal`
    /// flow from outside input.
    ///
    /// ```
    /// let flow = kest::Lineage::entry_point("user_input");
    /// assert_eq!(flow.snapshot().ingress_origin.as_deref(), Some("user_input"));
    /// ```
    pub fn entry_point(origin: impl Into<String>) -> Lineage {
        Lineage {
            state: Arc::new(Mutex::new(FlowState {
                ingress_origin: Some(origin.into()),
                ..FlowState::default()
            })),
        }
    }

    /// A flow continuing a verified passport at the given tips (e.g. the
    /// `kest.chain_tip` received with it): the next entry names exactly
    /// these as parents; none makes it a new root. Fails with
    /// [`kest_core::DraftError::UnknownParent`] if a tip is not an entry of
    /// the passport, or [`kest_core::DraftError::BadParentList`] if one is
    /// repeated.
    ///
    /// ```
    /// use kest::Lineage;
    /// use kest_core::{Ed25519Signer, EntryDraft, Parents, Passport, TrustRules};
    /// let signer = Ed25519Signer::from_seed("spiffe://demo/a", [3u8; 32]);
    /// let mut passport = Passport::new();
    /// let root = passport.record(&EntryDraft::new("root"), &signer, &TrustRules::default()).unwrap();
    /// let mut other = EntryDraft::new("other");
    /// other.parents = Parents::Root;
    /// passport.record(&other, &signer, &TrustRules::default()).unwrap();
    /// assert_eq!(passport.tips().len(), 2);
    /// let flow = Lineage::from_passport_at(passport, vec![root]).unwrap();
    /// assert_eq!(flow.tips(), vec![root]);
    /// ```
    pub fn from_passport_at(
        passport: Passport,
        tips: Vec<EntryHash>,
    ) -> Result<Lineage, kest_core::DraftError> {
        for (i, tip) in tips.iter().enumerate() {
            if !passport.contains(tip) {
                return Err(kest_core::DraftError::UnknownParent(*tip));
            }
            if tips.iter().take(i).any(|t| t == tip) {
                return Err(kest_core::DraftError::BadParentList);
            }
        }
        Ok(Lineage { state: Arc::new(Mutex::new(FlowState { passport, tips, ..FlowState::default() })) })
    }

    /// Sets the flow's identity baggage.
    pub fn with_identity(self, identity: FlowIdentity) -> Lineage {
        self.lock().identity = identity;
        self
    }

    /// Replaces the flow's identity baggage in place, for every holder of
    /// this flow (e.g. with values verified at the edge, which overwrite
    /// propagated ones).
    pub fn set_identity(&self, identity: FlowIdentity) {
        self.lock().identity = identity;
    }

    /// Sets the end user.
    pub fn with_user(self, user: impl Into<String>) -> Lineage {
        self.lock().identity.user = Some(user.into());
        self
    }

    fn lock(&self) -> MutexGuard<'_, FlowState> {
        // A panic while holding the lock cannot leave the state half
        // updated (every update is a single append), so poisoning is
        // recovered from.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The flow entered on this thread / in this task, if any.
    pub fn current() -> Option<Lineage> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Runs `f` with this flow as the current one.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let _guard = EnterGuard { previous };
        f()
    }

    /// Wraps a future so this flow is current whenever it is polled.
    pub fn scope<F: Future>(&self, future: F) -> Scoped<F> {
        Scoped { lineage: self.clone(), future: Box::pin(future) }
    }

    /// A new flow starting where this one is now (fan-out): same passport,
    /// same tips, same identity, independent from here on.
    pub fn fork(&self) -> Lineage {
        let s = self.lock();
        Lineage {
            state: Arc::new(Mutex::new(FlowState {
                passport: s.passport.clone(),
                tips: s.tips.clone(),
                identity: s.identity.clone(),
                ingress_origin: s.ingress_origin.clone(),
                span_digest: s.span_digest.clone(),
            })),
        }
    }

    /// Merges branches into this flow: their entries are added (first
    /// occurrence kept) and the next entry's parents become the tips of all
    /// branches (fan-in).
    pub fn join<'a>(&self, branches: impl IntoIterator<Item = &'a Lineage>) {
        // Read every branch first (never holding two locks), then merge
        // under one lock of this flow. Joining no branch changes nothing.
        let snapshots: Vec<(Passport, Vec<EntryHash>)> = branches
            .into_iter()
            .filter(|b| !Arc::ptr_eq(&b.state, &self.state))
            .map(|b| {
                let s = b.lock();
                (s.passport.clone(), s.tips.clone())
            })
            .collect();
        if snapshots.is_empty() {
            return;
        }
        let mut s = self.lock();
        let mut merged_tips: Vec<EntryHash> = Vec::new();
        for (branch_passport, branch_tips) in &snapshots {
            s.passport = s.passport.merge(branch_passport);
            for tip in branch_tips {
                if !merged_tips.contains(tip) {
                    merged_tips.push(*tip);
                }
            }
        }
        s.tips = merged_tips;
    }

    /// A copy of the flow's passport.
    pub fn passport(&self) -> Passport {
        self.lock().passport.clone()
    }

    /// Runs `f` on the flow's passport without copying it.
    pub fn with_passport<R>(&self, f: impl FnOnce(&Passport) -> R) -> R {
        f(&self.lock().passport)
    }

    /// Runs `f` on the flow's passport, current tips and span digest, under
    /// one lock, without copying any of them.
    pub(crate) fn with_span_view<R>(
        &self,
        f: impl FnOnce(&Passport, &[EntryHash], &mut PassportDigest) -> R,
    ) -> R {
        let mut state = self.lock();
        let FlowState { passport, tips, span_digest, .. } = &mut *state;
        f(passport, tips, span_digest)
    }

    /// The flow's current tips.
    pub fn tips(&self) -> Vec<EntryHash> {
        self.lock().tips.clone()
    }

    /// The flow's identity baggage.
    pub fn identity(&self) -> FlowIdentity {
        self.lock().identity.clone()
    }

    /// Reads what the next entry builds on.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        let parents = s.tips.iter().filter_map(|t| s.passport.get(t).cloned()).collect();
        Snapshot {
            parents,
            tips: s.tips.clone(),
            identity: s.identity.clone(),
            ingress_origin: s.ingress_origin.clone(),
        }
    }

    /// Appends a signed entry built on `parents` and moves the tips: the
    /// parents stop being tips, the new entry becomes one.
    pub fn append(&self, signed: kest_core::SignedEntry) -> Result<EntryHash, kest_core::AppendError> {
        let mut s = self.lock();
        let parents = signed.entry().parents().to_vec();
        let hash = s.passport.append(signed)?;
        s.tips.retain(|t| !parents.contains(t));
        s.tips.push(hash);
        Ok(hash)
    }
}

/// A future running inside a [`Lineage`] (see [`Lineage::scope`]).
pub struct Scoped<F> {
    lineage: Lineage,
    future: Pin<Box<F>>,
}

impl<F> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped").field("lineage", &self.lineage).finish_non_exhaustive()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let future = this.future.as_mut();
        this.lineage.enter(|| future.poll(cx))
    }
}

/// The current flow's passport.
pub fn current_passport() -> Option<Passport> {
    Lineage::current().map(|l| l.passport())
}

/// The current flow's end user (`kest.user`).
pub fn current_user() -> Option<String> {
    Lineage::current().and_then(|l| l.identity().user)
}

/// The current flow's agent (`kest.agent`).
pub fn current_agent() -> Option<String> {
    Lineage::current().and_then(|l| l.identity().agent)
}

/// The current flow's task (`kest.task`).
pub fn current_task() -> Option<String> {
    Lineage::current().and_then(|l| l.identity().task)
}

/// The current flow's verified bearer token (`kest.jwt`).
pub fn current_jwt() -> Option<String> {
    Lineage::current().and_then(|l| l.identity().jwt)
}

/// Forks the current flow (a new empty flow when there is none).
pub fn fork() -> Lineage {
    Lineage::current().map(|l| l.fork()).unwrap_or_default()
}

/// The result of a branch and the branch's flow, to [`Lineage::join`].
#[derive(Debug)]
pub struct Branch<T> {
    /// What the branch returned.
    pub value: T,
    /// The branch's flow.
    pub lineage: Lineage,
}

/// Runs `f` on a new thread in a fork of the current flow.
pub fn spawn_thread<T, F>(f: F) -> std::thread::JoinHandle<Branch<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let branch = fork();
    std::thread::spawn(move || {
        let value = branch.enter(f);
        Branch { value, lineage: branch }
    })
}

/// Spawns `future` on the Tokio runtime in a fork of the current flow.
#[cfg(feature = "tokio")]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<Branch<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let branch = fork();
    let scoped = branch.scope(future);
    tokio::spawn(async move {
        let value = scoped.await;
        Branch { value, lineage: branch }
    })
}

/// Joins branches into the current flow (see [`Lineage::join`]); returns
/// `false` when there is no current flow to join into.
pub fn join<'a>(branches: impl IntoIterator<Item = &'a Lineage>) -> bool {
    match Lineage::current() {
        Some(l) => {
            l.join(branches);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_nothing_or_itself_keeps_the_tips() {
        let signer = kest_core::Ed25519Signer::from_seed("spiffe://t/a", [3u8; 32]);
        let mut passport = Passport::new();
        passport
            .record(&kest_core::EntryDraft::new("a"), &signer, &kest_core::TrustRules::default())
            .unwrap();
        let flow = Lineage::from_passport(passport);
        let tips = flow.tips();
        assert_eq!(tips.len(), 1);
        flow.join(std::iter::empty());
        assert_eq!(flow.tips(), tips, "joining no branch changes nothing");
        flow.join([&flow.clone()]);
        assert_eq!(flow.tips(), tips, "joining itself neither deadlocks nor changes anything");
    }
}
