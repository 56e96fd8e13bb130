//! Time sources. Everything in the daemon reads time and sleeps through a [`Clock`], so
//! tests drive it with a [`ManualClock`] and never sleep in real time.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

/// A boxed, `Send` future (used so [`Clock`] is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of wall-clock time that can also sleep until a wall-clock deadline.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Completes once `now() >= deadline` (immediately if already past).
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()>;
}

/// The real system clock.
///
/// Sleeps are done in chunks of at most [`SystemClock::MAX_CHUNK`] and re-check the wall
/// clock each time, so an NTP step or a suspend/resume does not make a backup fire hours
/// late (tokio timers are monotonic and would otherwise ignore wall-clock jumps).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Longest single timer sleep before the wall clock is re-read.
    pub const MAX_CHUNK: std::time::Duration = std::time::Duration::from_secs(30);
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let left = deadline - Utc::now();
                if left <= Duration::zero() {
                    return;
                }
                let chunk = left.to_std().unwrap_or_default().min(Self::MAX_CHUNK);
                // Round up a little so we do not spin on sub-millisecond remainders.
                tokio::time::sleep(chunk + std::time::Duration::from_millis(1)).await;
            }
        })
    }
}

/// A manually driven clock for tests: time only moves when the test calls
/// [`ManualClock::set`] / [`ManualClock::advance`] / [`ManualClock::advance_to_next_wake`],
/// and moving it wakes every sleeper whose deadline has passed.
#[derive(Debug)]
pub struct ManualClock {
    tx: watch::Sender<DateTime<Utc>>,
    sleepers: Mutex<BTreeMap<u64, DateTime<Utc>>>,
    next_id: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock {
            tx: watch::Sender::new(start),
            sleepers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Sets the time (it may not go backwards; earlier values are ignored).
    pub fn set(&self, t: DateTime<Utc>) {
        self.tx.send_if_modified(|now| {
            if t > *now {
                *now = t;
                true
            } else {
                false
            }
        });
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let t = self.now() + d;
        self.set(t);
    }

    /// Deadlines of the sleepers currently waiting, earliest first.
    pub fn pending_wakes(&self) -> Vec<DateTime<Utc>> {
        let mut v: Vec<_> = self
            .sleepers
            .lock()
            .expect("clock lock")
            .values()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// Jumps to the earliest pending sleeper deadline later than now (if any) and
    /// returns it.
    pub fn advance_to_next_wake(&self) -> Option<DateTime<Utc>> {
        let now = self.now();
        let next = self.pending_wakes().into_iter().find(|d| *d > now)?;
        self.set(next);
        Some(next)
    }
}

struct SleeperGuard<'a> {
    clock: &'a ManualClock,
    id: u64,
}

impl Drop for SleeperGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.clock.sleepers.lock() {
            s.remove(&self.id);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.tx.borrow()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut rx = self.tx.subscribe();
            if *rx.borrow_and_update() >= deadline {
                return;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.sleepers
                .lock()
                .expect("clock lock")
                .insert(id, deadline);
            let _guard = SleeperGuard { clock: self, id };
            // The sender lives as long as `self`, so this cannot fail.
            let _ = rx.wait_for(|now| *now >= deadline).await;
        })
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        (**self).sleep_until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_in_order() {
        let clock = ManualClock::new(t0());
        let c2 = clock.clone();
        let h = tokio::spawn(async move {
            c2.sleep_until(t0() + Duration::hours(1)).await;
            c2.now()
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(clock.pending_wakes(), vec![t0() + Duration::hours(1)]);
        clock.advance(Duration::minutes(30));
        tokio::task::yield_now().await;
        assert!(!h.is_finished());
        assert_eq!(
            clock.advance_to_next_wake(),
            Some(t0() + Duration::hours(1))
        );
        assert_eq!(h.await.unwrap(), t0() + Duration::hours(1));
        assert!(clock.pending_wakes().is_empty());
        // Past deadlines return at once.
        clock.sleep_until(t0()).await;
    }

    #[tokio::test]
    async fn system_clock_short_sleep() {
        let c = SystemClock;
        let start = c.now();
        c.sleep_until(start + Duration::milliseconds(3)).await;
        assert!(c.now() >= start + Duration::milliseconds(3));
    }
}
