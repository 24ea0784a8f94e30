//! A small pool of helper threads for verification, started on first use.
//!
//! Spawning a scoped thread costs tens of microseconds, as much as a
//! signature check, which matters when a hop brings a handful of new
//! entries (SPEC §11, multi-hop). Helpers are parked on a channel; a batch
//! is shared with them by `Arc`, the calling thread works on it too and
//! never waits for a helper that has not started: whatever no helper took
//! is done by the caller. A helper that panics loses only the item it was
//! on (the caller then sees no result for it and must not accept it).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

/// How many threads verification may use: the available cores, at most 8
/// (asked once: the answer reads cgroup files on Linux).
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(8))
}

/// A batch helpers can work on.
trait Job: Send + Sync {
    fn help(&self);
}

struct Batch<T, R, F> {
    items: Vec<T>,
    work: F,
    next: AtomicUsize,
    /// Results by item index, and how many participants are working.
    state: Mutex<(Vec<(usize, R)>, usize)>,
    idle: Condvar,
}

impl<T, R, F> Batch<T, R, F>
where
    F: Fn(&T) -> R,
{
    /// Claims items one at a time until none is left; returns what was done.
    fn drain(&self, catch: bool) -> Vec<(usize, R)> {
        let mut done = Vec::new();
        loop {
            let k = self.next.fetch_add(1, Ordering::AcqRel);
            let Some(item) = self.items.get(k) else { return done };
            if catch {
                // A panic loses this item only; the caller treats it as missing.
                if let Ok(r) = catch_unwind(AssertUnwindSafe(|| (self.work)(item))) {
                    done.push((k, r));
                }
            } else {
                done.push((k, (self.work)(item)));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<(usize, R)>, usize)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T, R, F> Job for Batch<T, R, F>
where
    T: Send + Sync,
    R: Send,
    F: Fn(&T) -> R + Send + Sync,
{
    fn help(&self) {
        // Registered before claiming anything, so the caller waits for
        // every item a helper holds.
        self.lock().1 += 1;
        let done = self.drain(true);
        let mut state = self.lock();
        state.0.extend(done);
        state.1 -= 1;
        self.idle.notify_all();
    }
}

/// Where batches are offered to the parked helpers.
type Queue = Mutex<Sender<Arc<dyn Job>>>;

/// The queue of the parked helpers, or `None` when they could not start.
fn helpers() -> Option<&'static Queue> {
    static POOL: OnceLock<Option<Queue>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Arc<dyn Job>>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 1..threads() {
            let rx = rx.clone();
            let spawned =
                std::thread::Builder::new().name(format!("kest-verify-{i}")).spawn(move || helper(&rx));
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then(|| Mutex::new(tx))
    })
    .as_ref()
}

fn helper(rx: &Mutex<Receiver<Arc<dyn Job>>>) {
    loop {
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job.help(),
            Err(_) => return,
        }
    }
}

/// Runs `work` on every item, on the calling thread and up to `extra`
/// helper threads, and returns the results by item index: `None` only for
/// an item whose helper panicked. Items are claimed one at a time in
/// order, so a loaded core slows the whole by its share only.
pub(crate) fn map<T, R, F>(items: Vec<T>, extra: usize, work: F) -> Vec<Option<R>>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(&T) -> R + Send + Sync + 'static,
{
    let n = items.len();
    let batch = Arc::new(Batch {
        items,
        work,
        next: AtomicUsize::new(0),
        state: Mutex::new((Vec::new(), 0)),
        idle: Condvar::new(),
    });
    let extra = extra.min(n.saturating_sub(1));
    if extra > 0
        && let Some(queue) = helpers()
    {
        let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..extra {
            let job: Arc<dyn Job> = batch.clone();
            // A closed queue only means no help.
            let _ = queue.send(job);
        }
    }
    let mine = batch.drain(false);
    let mut state = batch.lock();
    while state.1 > 0 {
        state = batch.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
    }
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(n).collect();
    for (k, r) in mine.into_iter().chain(std::mem::take(&mut state.0)) {
        if let Some(slot) = results.get_mut(k) {
            *slot = Some(r);
        }
    }
    results
}
