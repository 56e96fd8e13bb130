//! [`Retrying`]: a decorator that retries a backend's [`StoreError::Transient`] failures with
//! exponential backoff and jitter (the `backon` crate). [`super::open`] puts it around every
//! network backend; tests put it around [`super::faulty::Faulty`].
//!
//! Every operation of the [`Backend`] trait is safe to repeat: writes are whole-value PUTs and
//! `put_if_absent` is meant for content-addressed keys (a repeated conditional PUT whose first
//! attempt landed answers "exists", which is right for same-content keys).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use super::{Backend, Meta, StoreError, StoreResult};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Retries after the first attempt.
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retries: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

/// A backend whose transient failures are retried.
#[derive(Debug)]
pub struct Retrying {
    inner: Arc<dyn Backend>,
    policy: Policy,
    retried: AtomicU64,
}

impl Retrying {
    pub fn new(inner: Arc<dyn Backend>, policy: Policy) -> Arc<Retrying> {
        Arc::new(Retrying {
            inner,
            policy,
            retried: AtomicU64::new(0),
        })
    }

    /// How many attempts were repeated so far.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    fn run<T>(&self, what: &str, key: &str, f: impl FnMut() -> StoreResult<T>) -> StoreResult<T> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.retries)
            .with_jitter();
        f.retry(backoff)
            .sleep(std::thread::sleep)
            .when(|e| matches!(e, StoreError::Transient(_)))
            .notify(|e, d| {
                self.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{what} {key}: {e}; trying again in {d:?}");
            })
            .call()
    }
}

impl Backend for Retrying {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<bool> {
        self.run("writing", key, || self.inner.put_if_absent(key, bytes))
    }
    fn put_replace(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.run("writing", key, || self.inner.put_replace(key, bytes))
    }
    fn get(&self, key: &str, max: u64) -> StoreResult<Vec<u8>> {
        self.run("reading", key, || self.inner.get(key, max))
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Vec<u8>> {
        self.run("reading", key, || self.inner.get_range(key, offset, len))
    }
    fn stat(&self, key: &str) -> StoreResult<Meta> {
        self.run("looking up", key, || self.inner.stat(key))
    }
    fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        self.run("listing", prefix, || self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.run("removing", key, || self.inner.delete(key))
    }
    fn ensure_dir(&self, prefix: &str) -> StoreResult<()> {
        self.run("creating", prefix, || self.inner.ensure_dir(prefix))
    }
    fn check_dir(&self, prefix: &str) -> StoreResult<()> {
        self.inner.check_dir(prefix)
    }
    fn has_dir(&self, prefix: &str) -> bool {
        self.inner.has_dir(prefix)
    }
    fn create(&self) -> anyhow::Result<Option<String>> {
        self.inner.create()
    }
    fn explain_missing(&self) -> String {
        self.inner.explain_missing()
    }
    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}
