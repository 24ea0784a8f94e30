//! Runs the AWS SDK's async calls for synchronous callers: a dedicated
//! thread with its own current-thread Tokio runtime, so a [`Signer`]
//! (synchronous by contract) can call KMS from anywhere — inside or outside
//! a runtime — without `block_on` panicking or starving a caller's runtime.
//!
//! [`Signer`]: kest_core::Signer

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::AwsError;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The dedicated thread's queue.
#[derive(Debug)]
pub(crate) struct Bridge {
    jobs: UnboundedSender<Job>,
    timeout: Duration,
}

impl Bridge {
    /// Starts the thread. Every call through it fails with
    /// [`AwsError::Timeout`] after `timeout`.
    pub(crate) fn start(timeout: Duration) -> Result<Bridge, AwsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AwsError::Runtime(e.to_string()))?;
        let (jobs, mut queue) = unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("kest-aws".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(job) = queue.recv().await {
                        tokio::spawn(job);
                    }
                });
            })
            .map_err(|e| AwsError::Runtime(e.to_string()))?;
        Ok(Bridge { jobs, timeout })
    }

    /// Runs `future` on the thread and waits for its output (at most the
    /// timeout).
    pub(crate) fn run<T, F>(&self, future: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let timeout = self.timeout;
        let job: Job = Box::pin(async move {
            let out = tokio::time::timeout(timeout, future).await;
            let _ = tx.send(out);
        });
        self.jobs.send(job).map_err(|_| AwsError::Runtime("the AWS thread has stopped".to_owned()))?;
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Timeout) => Err(AwsError::Timeout(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(AwsError::Runtime("the AWS thread dropped the call".to_owned()))
            }
        }
    }

    #[cfg(feature = "avp")]
    /// Runs `future` on the thread; the returned future waits for its
    /// output (at most the timeout) on whatever executor polls it.
    pub(crate) async fn run_async<T, F>(&self, future: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let timeout = self.timeout;
        let job: Job = Box::pin(async move {
            let out = tokio::time::timeout(timeout, future).await;
            let _ = tx.send(out);
        });
        self.jobs.send(job).map_err(|_| AwsError::Runtime("the AWS thread has stopped".to_owned()))?;
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(AwsError::Timeout(timeout)),
            Err(_) => Err(AwsError::Runtime("the AWS thread dropped the call".to_owned())),
        }
    }
}
