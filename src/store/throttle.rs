//! [`Throttled`]: a decorator that holds the average upload rate of a backend to a limit
//! (`copy --limit-upload`, `[[copy]] limit_upload`): the uplink of a site is shared with the
//! cloud's own traffic.
//!
//! The limit is applied to what is really sent, request by request: after a PUT of `n` bytes
//! the caller waits until a virtual clock, advanced by `n / rate`, is reached. So the average
//! holds whatever the request sizes (a 4 MiB pack waits proportionally after it is sent) and
//! however slow the store is (time a slow request took counts as spent); the time spent
//! preparing a request counts too, up to the request's own time. Lock and cluster
//! records are never held back: their heartbeats must not wait behind data.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Backend, Meta, StoreResult};

/// A token bucket on a virtual clock (see the module doc).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    clock: Option<Instant>,
}

impl TokenBucket {
    /// A bucket whose clock starts now: the time until the first request (preparing it) counts
    /// as its sending, up to the request's own time.
    pub fn new(bytes_per_sec: u64) -> TokenBucket {
        TokenBucket {
            rate: bytes_per_sec.max(1) as f64,
            clock: Some(Instant::now()),
        }
    }

    /// Account for `n` bytes whose sending began at `start`; returns how long to wait.
    pub fn spend(&mut self, start: Instant, n: u64) -> Duration {
        // Unused budget is kept up to this request's own time (at least a second): the time
        // spent preparing a request (reading and sealing the objects of a pack) counts as part
        // of its sending, as it would on a link that was busy meanwhile, so a sequential copy
        // reaches the limit; an idle period never buys more than one request's burst.
        let own = Duration::from_secs_f64(n as f64 / self.rate);
        let floor = start
            .checked_sub(own.max(Duration::from_secs(1)))
            .unwrap_or(start);
        let from = self.clock.map_or(start, |c| c.max(floor));
        let until = from + own;
        self.clock = Some(until);
        until.saturating_duration_since(Instant::now())
    }
}

/// A backend whose writes are held to `bytes_per_sec` on average.
pub struct Throttled {
    inner: Arc<dyn Backend>,
    bucket: Mutex<TokenBucket>,
}

impl Throttled {
    pub fn new(inner: Arc<dyn Backend>, bytes_per_sec: u64) -> Throttled {
        Throttled {
            inner,
            bucket: Mutex::new(TokenBucket::new(bytes_per_sec)),
        }
    }

    fn sent<T>(&self, key: &str, n: usize, put: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
        if key.starts_with("locks/") || key.starts_with("cluster/") {
            return put();
        }
        let start = Instant::now();
        let r = put()?;
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spend(start, n as u64);
        std::thread::sleep(wait);
        Ok(r)
    }
}

impl std::fmt::Debug for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("inner", &self.inner.location())
            .finish()
    }
}

impl Backend for Throttled {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<bool> {
        self.sent(key, bytes.len(), || self.inner.put_if_absent(key, bytes))
    }
    fn put_replace(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.sent(key, bytes.len(), || self.inner.put_replace(key, bytes))
    }
    fn get(&self, key: &str, max: u64) -> StoreResult<Vec<u8>> {
        self.inner.get(key, max)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }
    fn stat(&self, key: &str) -> StoreResult<Meta> {
        self.inner.stat(key)
    }
    fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key)
    }
    fn ensure_dir(&self, prefix: &str) -> StoreResult<()> {
        self.inner.ensure_dir(prefix)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_charges_the_time_a_request_took() {
        let mut b = TokenBucket::new(1000);
        let t0 = Instant::now();
        // 500 bytes at 1000 B/s: half a second from the start of the request.
        let w = b.spend(t0, 500);
        assert!(
            w <= Duration::from_millis(500) && w > Duration::from_millis(400),
            "{w:?}"
        );
        // The next request starts where the clock is; a request that took longer than its
        // budget is not charged twice.
        let later = t0 + Duration::from_millis(500);
        let until = b.clock.unwrap() + Duration::from_secs_f64(0.25);
        b.spend(later, 250);
        assert_eq!(b.clock.unwrap(), until);
    }

    #[test]
    fn token_bucket_holds_the_average_rate() {
        let mut b = TokenBucket::new(100_000);
        let t0 = Instant::now();
        for _ in 0..10 {
            let s = Instant::now();
            std::thread::sleep(b.spend(s, 5_000));
        }
        let took = t0.elapsed().as_secs_f64();
        assert!((0.45..0.7).contains(&took), "{took}");
    }
}
