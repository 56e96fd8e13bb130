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

/// Why [`Clock::sleep_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The deadline was reached (`now() >= deadline`).
    Due,
    /// The wall clock was stepped (NTP correcting a bad RTC, an operator's `date -s`, a
    /// suspend): it moved by this much more (positive) or less (negative) than the monotonic
    /// clock. The deadline may not have been reached; a caller that planned from the old
    /// wall-clock time must re-plan from `now()`.
    ClockJumped(Duration),
}

/// A source of wall-clock time that can also sleep until a wall-clock deadline.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Completes once `now() >= deadline` (immediately if already past) with [`Wake::Due`],
    /// or earlier with [`Wake::ClockJumped`] when the wall clock is stepped while sleeping.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, Wake>;
}

/// The real system clock.
///
/// Sleeps are done in chunks of at most [`SystemClock::MAX_CHUNK`] and re-check the wall
/// clock each time, so an NTP step or a suspend/resume does not make a backup fire hours
/// late (tokio timers are monotonic and would otherwise ignore wall-clock jumps). Each chunk
/// also compares how far the wall clock moved with how far the monotonic clock moved: a
/// difference over [`SystemClock::JUMP_THRESHOLD`] ends the sleep with [`Wake::ClockJumped`],
/// so a clock stepped *back* (the deadline suddenly hours away) is re-planned at once instead
/// of stalling the job for the size of the step.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Longest single timer sleep before the wall clock is re-read.
    pub const MAX_CHUNK: std::time::Duration = std::time::Duration::from_secs(30);
    /// A wall-clock step larger than this (against the monotonic clock) counts as a jump.
    /// NTP slews small offsets (at most 0.5 ms/s), so only real steps get near it.
    pub const JUMP_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(5);
}

/// Compares a wall-clock interval with the monotonic interval measured over the same time:
/// `Some(step)` when they differ by more than `threshold`.
pub fn detect_jump(
    wall_before: DateTime<Utc>,
    wall_after: DateTime<Utc>,
    monotonic: std::time::Duration,
    threshold: std::time::Duration,
) -> Option<Duration> {
    let mono = Duration::from_std(monotonic).unwrap_or(Duration::MAX);
    let step = (wall_after - wall_before) - mono;
    let limit = Duration::from_std(threshold).unwrap_or(Duration::MAX);
    (step.abs() > limit).then_some(step)
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, Wake> {
        Box::pin(async move {
            loop {
                let wall = Utc::now();
                let mono = std::time::Instant::now();
                let left = deadline - wall;
                if left <= Duration::zero() {
                    return Wake::Due;
                }
                let chunk = left.to_std().unwrap_or_default().min(Self::MAX_CHUNK);
                // Round up a little so we do not spin on sub-millisecond remainders.
                tokio::time::sleep(chunk + std::time::Duration::from_millis(1)).await;
                let now = Utc::now();
                if now >= deadline {
                    return Wake::Due;
                }
                if let Some(step) = detect_jump(wall, now, mono.elapsed(), Self::JUMP_THRESHOLD) {
                    return Wake::ClockJumped(step);
                }
            }
        })
    }
}

/// A manually driven clock for tests: time only moves when the test calls
/// [`ManualClock::set`] / [`ManualClock::advance`] / [`ManualClock::advance_to_next_wake`],
/// and moving it wakes every sleeper whose deadline has passed. [`ManualClock::step`] moves
/// it in either direction the way an NTP step does, waking every sleeper with
/// [`Wake::ClockJumped`].
#[derive(Debug)]
pub struct ManualClock {
    /// The time and the number of steps so far.
    tx: watch::Sender<(DateTime<Utc>, u64)>,
    sleepers: Mutex<BTreeMap<u64, DateTime<Utc>>>,
    next_id: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock {
            tx: watch::Sender::new((start, 0)),
            sleepers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Sets the time (it may not go backwards; earlier values are ignored).
    pub fn set(&self, t: DateTime<Utc>) {
        self.tx.send_if_modified(|(now, _)| {
            if t > *now {
                *now = t;
                true
            } else {
                false
            }
        });
    }

    /// Steps the wall clock to `t`, forwards or backwards, as an NTP step or `date -s` does:
    /// every sleeper wakes with [`Wake::ClockJumped`] (or [`Wake::Due`] if `t` reaches its
    /// deadline).
    pub fn step(&self, t: DateTime<Utc>) {
        self.tx.send_modify(|(now, steps)| {
            *now = t;
            *steps += 1;
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
        self.tx.borrow().0
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, Wake> {
        Box::pin(async move {
            let mut rx = self.tx.subscribe();
            let (start, steps) = *rx.borrow_and_update();
            if start >= deadline {
                return Wake::Due;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.sleepers
                .lock()
                .expect("clock lock")
                .insert(id, deadline);
            let _guard = SleeperGuard { clock: self, id };
            // The sender lives as long as `self`, so this cannot fail.
            let r = rx
                .wait_for(|(now, s)| *now >= deadline || *s != steps)
                .await
                .map(|v| *v);
            match r {
                Ok((now, _)) if now >= deadline => Wake::Due,
                Ok((now, _)) => Wake::ClockJumped(now - start),
                Err(_) => Wake::Due,
            }
        })
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, Wake> {
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
    async fn manual_clock_step_back_wakes_sleepers_with_a_jump() {
        let clock = ManualClock::new(t0());
        let c2 = clock.clone();
        let h = tokio::spawn(async move { c2.sleep_until(t0() + Duration::hours(1)).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        clock.step(t0() - Duration::hours(3));
        assert_eq!(h.await.unwrap(), Wake::ClockJumped(-Duration::hours(3)));
        assert_eq!(clock.now(), t0() - Duration::hours(3));
    }

    #[test]
    fn jump_detection_compares_wall_and_monotonic() {
        let s = std::time::Duration::from_secs;
        // 30 s of wall time in 30 s of monotonic time: no jump.
        assert_eq!(
            detect_jump(t0(), t0() + Duration::seconds(30), s(30), s(5)),
            None
        );
        // NTP stepped the clock back 3 hours during a 30 s sleep.
        assert_eq!(
            detect_jump(
                t0(),
                t0() - Duration::hours(3) + Duration::seconds(30),
                s(30),
                s(5)
            ),
            Some(-Duration::hours(3))
        );
        // Forward by a day (a bad RTC corrected the other way, or a suspend).
        assert_eq!(
            detect_jump(t0(), t0() + Duration::days(1), s(30), s(5)),
            Some(Duration::days(1) - Duration::seconds(30))
        );
    }

    #[tokio::test]
    async fn system_clock_short_sleep() {
        let c = SystemClock;
        let start = c.now();
        c.sleep_until(start + Duration::milliseconds(3)).await;
        assert!(c.now() >= start + Duration::milliseconds(3));
    }
}
