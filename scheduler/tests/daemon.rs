//! Daemon behaviour driven by a ManualClock and a recording Job: catch-up, no overlap,
//! bounded retries, graceful shutdown. No real sleeps.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use mnbackup_scheduler::state::StateStore;
use mnbackup_scheduler::{
    CancelToken, Clock, Daemon, DaemonConfig, DaemonError, DaemonReport, Job, JobContext, JobError,
    JobOutcome, JobSpec, JobState, ManualClock, RetryPolicy, Schedule, TzSpec,
};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[derive(Clone)]
struct Step {
    dur: Duration,
    result: Result<JobOutcome, JobError>,
    honor_cancel: bool,
    panic: bool,
}

fn ok(mins: i64) -> Step {
    Step {
        dur: Duration::minutes(mins),
        result: Ok(JobOutcome {
            summary: "snapshot ok".into(),
        }),
        honor_cancel: true,
        panic: false,
    }
}

fn fail(mins: i64, transient: bool) -> Step {
    Step {
        dur: Duration::minutes(mins),
        result: Err(JobError {
            transient,
            msg: "mysql went away".into(),
        }),
        honor_cancel: true,
        panic: false,
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Call {
    job: String,
    kind: String,
    attempt: u32,
    slot: DateTime<Utc>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    cancelled: bool,
}

struct RecJob {
    clock: Arc<ManualClock>,
    script: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<Call>>,
}

impl RecJob {
    fn new(clock: &Arc<ManualClock>, script: Vec<Step>) -> Arc<Self> {
        Arc::new(RecJob {
            clock: clock.clone(),
            script: Mutex::new(script.into()),
            calls: Mutex::new(vec![]),
        })
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn starts(&self, job: &str) -> Vec<(DateTime<Utc>, u32)> {
        self.calls()
            .into_iter()
            .filter(|c| c.job == job)
            .map(|c| (c.start, c.attempt))
            .collect()
    }
}

impl Job for RecJob {
    async fn run(&self, ctx: JobContext) -> Result<JobOutcome, JobError> {
        let start = self.clock.now();
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| ok(1));
        let idx = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                job: ctx.job_name.clone(),
                kind: ctx.kind.clone(),
                attempt: ctx.attempt,
                slot: ctx.slot,
                start,
                end: None,
                cancelled: false,
            });
            calls.len() - 1
        };
        if step.panic {
            panic!("boom");
        }
        let cancel = ctx.cancel.clone();
        tokio::select! {
            _ = self.clock.sleep_until(start + step.dur) => {
                self.calls.lock().unwrap()[idx].end = Some(self.clock.now());
                step.result
            }
            _ = cancel.cancelled(), if step.honor_cancel => {
                let mut calls = self.calls.lock().unwrap();
                calls[idx].end = Some(self.clock.now());
                calls[idx].cancelled = true;
                Err(JobError::permanent("cancelled"))
            }
        }
    }
}

async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// Auto-advance: repeatedly jump to the next pending wake-up until `end`.
async fn run_until(clock: &ManualClock, end: DateTime<Utc>) {
    loop {
        settle().await;
        let now = clock.now();
        match clock.pending_wakes().into_iter().find(|d| *d > now) {
            Some(d) if d <= end => clock.set(d),
            _ => {
                clock.set(end);
                settle().await;
                return;
            }
        }
    }
}

fn spec(name: &str, expr: &str, retry: RetryPolicy, catch_up: bool) -> JobSpec {
    JobSpec {
        name: name.into(),
        kind: "snapshot".into(),
        schedule: Schedule::parse(expr, TzSpec::parse("UTC").unwrap()).unwrap(),
        retry,
        catch_up,
    }
}

fn config(dir: &Path) -> DaemonConfig {
    DaemonConfig {
        state_dir: dir.join("state"),
        metrics_file: Some(dir.join("mnbackup.prom")),
        grace: StdDuration::from_secs(600),
        cancel_timeout: StdDuration::from_secs(60),
        serialize_jobs: false,
    }
}

type Handle = tokio::task::JoinHandle<Result<DaemonReport, DaemonError>>;

fn start(
    cfg: DaemonConfig,
    jobs: Vec<JobSpec>,
    job: &Arc<RecJob>,
    clock: &Arc<ManualClock>,
) -> (Handle, CancelToken) {
    let d = Daemon::new(cfg, jobs, job.clone(), clock.clone()).unwrap();
    let shutdown = CancelToken::new();
    (tokio::spawn(d.run(shutdown.clone())), shutdown)
}

async fn stop(h: Handle, shutdown: &CancelToken, clock: &ManualClock) -> DaemonReport {
    shutdown.cancel();
    let end = clock.now() + Duration::hours(2);
    run_until(clock, end).await;
    assert!(h.is_finished(), "daemon did not stop");
    h.await.unwrap().expect("daemon returns Ok on shutdown")
}

fn load(dir: &Path, job: &str) -> JobState {
    StateStore::new(dir.join("state"))
        .load(job)
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn catch_up_runs_once_at_start_and_respects_catch_up_false() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("state"));
    store.ensure_dir().unwrap();
    for name in ["behind", "nocatch"] {
        let mut st = JobState::new(name, "snapshot");
        st.last_slot = Some(utc("2026-01-02T12:00:00Z"));
        st.last_success = Some(utc("2026-01-02T12:05:00Z"));
        store.save(&st).unwrap();
    }
    let t0 = utc("2026-01-05T10:00:00Z");
    let clock = ManualClock::new(t0);
    let job = RecJob::new(&clock, vec![]);
    let every12h = "0 0,12 * * *";
    let (h, shutdown) = start(
        config(dir.path()),
        vec![
            spec("behind", every12h, RetryPolicy::none(), true),
            spec("nocatch", every12h, RetryPolicy::none(), false),
            spec("fresh", every12h, RetryPolicy::none(), true),
        ],
        &job,
        &clock,
    );
    run_until(&clock, t0 + Duration::minutes(5)).await;
    // Exactly one catch-up run, for the latest missed slot, right at start.
    let calls = job.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].job, "behind");
    assert_eq!(calls[0].slot, utc("2026-01-05T00:00:00Z"));
    assert_eq!(calls[0].start, t0);
    assert_eq!(calls[0].kind, "snapshot");

    run_until(&clock, utc("2026-01-05T12:30:00Z")).await;
    for name in ["behind", "nocatch", "fresh"] {
        assert_eq!(
            job.starts(name).last(),
            Some(&(utc("2026-01-05T12:00:00Z"), 1)),
            "{name}"
        );
    }
    assert_eq!(job.starts("behind").len(), 2);
    assert_eq!(job.starts("nocatch").len(), 1);
    assert_eq!(job.starts("fresh").len(), 1);

    let b = load(dir.path(), "behind");
    // 5 slots missed (01-03 00/12, 01-04 00/12, 01-05 00), one was caught up.
    assert_eq!(b.missed_slots, 4);
    assert_eq!(b.last_slot, Some(utc("2026-01-05T12:00:00Z")));
    assert_eq!(b.next_due, Some(utc("2026-01-06T00:00:00Z")));
    assert_eq!(b.runs_total, 2);
    assert_eq!(load(dir.path(), "nocatch").missed_slots, 5);
    assert_eq!(load(dir.path(), "fresh").missed_slots, 0);

    let metrics = std::fs::read_to_string(dir.path().join("mnbackup.prom")).unwrap();
    assert!(metrics.contains("mnbackup_last_run_ok{mnbackup_job=\"behind\",kind=\"snapshot\"} 1"));
    assert!(metrics.contains("mnbackup_job=\"fresh\""));

    let report = stop(h, &shutdown, &clock).await;
    assert_eq!(report.jobs.len(), 3);
    assert!(report.jobs.iter().all(|j| !j.interrupted));
    assert_eq!(load(dir.path(), "behind").next_due, None);
}

#[tokio::test]
async fn no_overlap_skips_and_counts_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-04T23:00:00Z"));
    // First run takes 13 hours, so it is still running at the 12:00 slot.
    let job = RecJob::new(&clock, vec![ok(13 * 60)]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("slow", "0 0,12 * * *", RetryPolicy::none(), true)],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-06T00:30:00Z")).await;
    assert_eq!(
        job.starts("slow"),
        vec![
            (utc("2026-01-05T00:00:00Z"), 1),
            (utc("2026-01-06T00:00:00Z"), 1)
        ]
    );
    let st = load(dir.path(), "slow");
    assert_eq!(st.skipped_overlap, 1);
    assert_eq!(st.runs_total, 2);
    stop(h, &shutdown, &clock).await;
}

#[tokio::test]
async fn transient_failures_retry_with_exponential_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-04T23:59:00Z"));
    let job = RecJob::new(
        &clock,
        vec![fail(1, true), fail(1, true), fail(1, true), ok(1)],
    );
    let policy = RetryPolicy {
        max_attempts: 5,
        initial_backoff: StdDuration::from_secs(600),
        max_backoff: StdDuration::from_secs(3600),
        min_headroom: StdDuration::from_secs(1800),
    };
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("nightly", "0 0,12 * * *", policy, true)],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T06:00:00Z")).await;
    assert_eq!(
        job.starts("nightly"),
        vec![
            (utc("2026-01-05T00:00:00Z"), 1),
            (utc("2026-01-05T00:11:00Z"), 2), // failed 00:01 + 10 min
            (utc("2026-01-05T00:32:00Z"), 3), // failed 00:12 + 20 min
            (utc("2026-01-05T01:13:00Z"), 4), // failed 00:33 + 40 min
        ]
    );
    assert!(job
        .calls()
        .iter()
        .all(|c| c.slot == utc("2026-01-05T00:00:00Z")));
    let st = load(dir.path(), "nightly");
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(st.last_run_ok, Some(true));
    assert_eq!(st.last_attempts, 4);
    assert_eq!(st.last_success, Some(utc("2026-01-05T01:14:00Z")));
    assert_eq!(st.last_error.as_deref(), Some("mysql went away"));
    stop(h, &shutdown, &clock).await;
}

#[tokio::test]
async fn retries_never_run_into_the_next_slot_and_permanent_errors_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-04T23:59:00Z"));
    let job = RecJob::new(
        &clock,
        vec![fail(1, true), fail(1, true), ok(1), fail(1, false), ok(1)],
    );
    let policy = RetryPolicy {
        max_attempts: 10,
        initial_backoff: StdDuration::from_secs(4 * 3600),
        max_backoff: StdDuration::from_secs(8 * 3600),
        min_headroom: StdDuration::from_secs(1800),
    };
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("nightly", "0 0,12 * * *", policy, true)],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T11:59:00Z")).await;
    // 00:00 fails; retry at 04:01 fits; it fails at 04:02 and the next backoff (8 h,
    // 12:02) would collide with the 12:00 slot, so the slot is given up.
    assert_eq!(
        job.starts("nightly"),
        vec![
            (utc("2026-01-05T00:00:00Z"), 1),
            (utc("2026-01-05T04:01:00Z"), 2)
        ]
    );
    let st = load(dir.path(), "nightly");
    assert_eq!(st.consecutive_failures, 1);
    assert_eq!(st.last_run_ok, Some(false));
    assert_eq!(st.last_slot, Some(utc("2026-01-05T00:00:00Z")));
    assert_eq!(st.next_due, Some(utc("2026-01-05T12:00:00Z")));

    run_until(&clock, utc("2026-01-06T06:00:00Z")).await;
    // 12:00 succeeds; 00:00 next day fails permanently -> no retry.
    assert_eq!(
        &job.starts("nightly")[2..],
        &[
            (utc("2026-01-05T12:00:00Z"), 1),
            (utc("2026-01-06T00:00:00Z"), 1)
        ]
    );
    let st = load(dir.path(), "nightly");
    assert_eq!(st.consecutive_failures, 1);
    assert_eq!(st.failures_total, 2);
    assert_eq!(st.runs_total, 3);
    stop(h, &shutdown, &clock).await;
}

#[tokio::test]
async fn shutdown_gives_grace_then_cancels_and_next_start_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-04T23:59:00Z"));
    let job = RecJob::new(&clock, vec![ok(120), ok(1)]);
    let jobs = vec![spec(
        "nightly",
        "0 0,12 * * *",
        RetryPolicy::default(),
        true,
    )];
    let (h, shutdown) = start(config(dir.path()), jobs.clone(), &job, &clock);
    run_until(&clock, utc("2026-01-05T00:30:00Z")).await;
    assert_eq!(
        load(dir.path(), "nightly").running_since,
        Some(utc("2026-01-05T00:00:00Z"))
    );
    shutdown.cancel();
    run_until(&clock, utc("2026-01-05T00:39:00Z")).await;
    assert!(!h.is_finished(), "must wait for the grace period");
    run_until(&clock, utc("2026-01-05T00:45:00Z")).await;
    assert!(h.is_finished());
    let report = h.await.unwrap().unwrap();
    assert!(report.jobs[0].interrupted);
    let calls = job.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].cancelled);
    assert_eq!(calls[0].end, Some(utc("2026-01-05T00:40:00Z")));
    let st = load(dir.path(), "nightly");
    assert_eq!(st.running_since, None);
    assert_eq!(st.last_slot, None, "interrupted run is not completed");
    assert_eq!(st.unfinished_slot, Some(utc("2026-01-05T00:00:00Z")));
    assert!(st
        .last_error
        .unwrap()
        .contains("interrupted by daemon shutdown"));

    // Restart an hour later: the interrupted 00:00 slot is caught up at once.
    clock.set(utc("2026-01-05T01:40:00Z"));
    let (h, shutdown) = start(config(dir.path()), jobs, &job, &clock);
    run_until(&clock, utc("2026-01-05T01:45:00Z")).await;
    let calls = job.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].slot, utc("2026-01-05T00:00:00Z"));
    assert_eq!(calls[1].start, utc("2026-01-05T01:40:00Z"));
    let st = load(dir.path(), "nightly");
    assert_eq!(st.last_run_ok, Some(true));
    assert_eq!(st.unfinished_slot, None);
    assert_eq!(st.missed_slots, 0);
    stop(h, &shutdown, &clock).await;
}

#[tokio::test]
async fn shutdown_lets_a_run_finish_within_grace() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-04T23:59:00Z"));
    let job = RecJob::new(&clock, vec![ok(12)]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec(
            "nightly",
            "0 0,12 * * *",
            RetryPolicy::default(),
            true,
        )],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T00:05:00Z")).await;
    shutdown.cancel();
    run_until(&clock, utc("2026-01-05T00:30:00Z")).await;
    assert!(h.is_finished());
    let report = h.await.unwrap().unwrap();
    assert!(!report.jobs[0].interrupted);
    assert!(!job.calls()[0].cancelled);
    let st = load(dir.path(), "nightly");
    assert_eq!(st.last_success, Some(utc("2026-01-05T00:12:00Z")));
    assert_eq!(st.last_slot, Some(utc("2026-01-05T00:00:00Z")));
}

#[tokio::test]
async fn shutdown_abandons_a_job_that_ignores_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-04T23:59:00Z"));
    let mut stubborn = ok(300);
    stubborn.honor_cancel = false;
    let job = RecJob::new(&clock, vec![stubborn]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec(
            "nightly",
            "0 0,12 * * *",
            RetryPolicy::default(),
            true,
        )],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T00:05:00Z")).await;
    shutdown.cancel();
    // grace 10 min (00:15) + cancel timeout 1 min (00:16).
    run_until(&clock, utc("2026-01-05T00:15:30Z")).await;
    assert!(!h.is_finished());
    run_until(&clock, utc("2026-01-05T00:16:00Z")).await;
    assert!(h.is_finished());
    let report = h.await.unwrap().unwrap();
    assert!(report.jobs[0].interrupted);
    let st = load(dir.path(), "nightly");
    assert!(st.last_error.unwrap().contains("abandoned"));
    assert_eq!(st.running_since, None);
}

#[tokio::test]
async fn idle_shutdown_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-05T01:00:00Z"));
    let job = RecJob::new(&clock, vec![]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("nightly", "@daily", RetryPolicy::default(), true)],
        &job,
        &clock,
    );
    settle().await;
    assert_eq!(
        load(dir.path(), "nightly").next_due,
        Some(utc("2026-01-06T00:00:00Z"))
    );
    shutdown.cancel();
    settle().await;
    assert!(h.is_finished());
    assert_eq!(clock.now(), utc("2026-01-05T01:00:00Z"));
    h.await.unwrap().unwrap();
    assert!(job.calls().is_empty());
}

#[tokio::test]
async fn panicking_job_is_a_failure_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-04T23:59:00Z"));
    let mut boom = ok(1);
    boom.panic = true;
    let job = RecJob::new(&clock, vec![boom]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec(
            "nightly",
            "0 0,12 * * *",
            RetryPolicy::default(),
            true,
        )],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T12:30:00Z")).await;
    assert_eq!(job.calls().len(), 2);
    let st = load(dir.path(), "nightly");
    assert_eq!(st.failures_total, 1);
    assert_eq!(st.consecutive_failures, 0);
    assert!(st.last_error.unwrap().contains("job crashed"));
    stop(h, &shutdown, &clock).await;
}

#[tokio::test]
async fn dst_spring_gap_fires_once_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-03-07T12:00:00Z"));
    let job = RecJob::new(&clock, vec![]);
    let s = JobSpec {
        name: "ny".into(),
        kind: "snapshot".into(),
        schedule: Schedule::parse("30 2 * * *", TzSpec::parse("America/New_York").unwrap())
            .unwrap(),
        retry: RetryPolicy::none(),
        catch_up: true,
    };
    let (h, shutdown) = start(config(dir.path()), vec![s], &job, &clock);
    run_until(&clock, utc("2026-03-09T12:00:00Z")).await;
    assert_eq!(
        job.starts("ny"),
        vec![
            (utc("2026-03-08T07:00:00Z"), 1), // 03:00 EDT, the gap swallowed 02:30
            (utc("2026-03-09T06:30:00Z"), 1),
        ]
    );
    stop(h, &shutdown, &clock).await;
}

#[test]
fn config_errors_are_explained() {
    let clock = ManualClock::new(utc("2026-01-05T01:00:00Z"));
    let job = RecJob::new(&clock, vec![]);
    let dir = tempfile::tempdir().unwrap();
    let err = |jobs: Vec<JobSpec>| {
        Daemon::new(config(dir.path()), jobs, job.clone(), clock.clone())
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(vec![]).contains("no jobs are configured"));
    let a = spec("a", "@daily", RetryPolicy::default(), true);
    assert!(err(vec![a.clone(), a.clone()]).contains("used twice"));
    let mut bad = a.clone();
    bad.name = "../etc".into();
    assert!(err(vec![bad]).contains("is invalid"));
    let mut zero = a;
    zero.retry.max_attempts = 0;
    assert!(err(vec![zero]).contains("max_attempts is 0"));
}

#[tokio::test]
async fn unusable_state_dir_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let clock = ManualClock::new(utc("2026-01-05T01:00:00Z"));
    let job = RecJob::new(&clock, vec![]);
    let cfg = DaemonConfig {
        state_dir: file.join("state"),
        ..config(dir.path())
    };
    let d = Daemon::new(
        cfg,
        vec![spec("a", "@daily", RetryPolicy::default(), true)],
        job,
        clock,
    )
    .unwrap();
    let e = d.run(CancelToken::new()).await.unwrap_err().to_string();
    assert!(
        e.contains("cannot create directory for scheduler state"),
        "{e}"
    );
}

#[test]
fn backoff_doubles_and_caps() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial_backoff: StdDuration::from_secs(60),
        max_backoff: StdDuration::from_secs(300),
        min_headroom: StdDuration::ZERO,
    };
    let got: Vec<u64> = (1..=6).map(|n| p.backoff(n).as_secs()).collect();
    assert_eq!(got, [60, 120, 240, 300, 300, 300]);
    assert_eq!(p.backoff(100).as_secs(), 300);
}

#[tokio::test]
async fn crash_mid_run_is_caught_up_at_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("state"));
    store.ensure_dir().unwrap();
    let mut st = JobState::new("nightly", "snapshot");
    st.last_slot = Some(utc("2026-01-04T12:00:00Z"));
    st.unfinished_slot = Some(utc("2026-01-05T00:00:00Z"));
    st.running_since = Some(utc("2026-01-05T00:00:00Z"));
    store.save(&st).unwrap();
    let clock = ManualClock::new(utc("2026-01-05T03:00:00Z"));
    let job = RecJob::new(&clock, vec![]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("nightly", "0 0,12 * * *", RetryPolicy::none(), true)],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T03:10:00Z")).await;
    let calls = job.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].slot, utc("2026-01-05T00:00:00Z"));
    assert_eq!(calls[0].start, utc("2026-01-05T03:00:00Z"));
    let st = load(dir.path(), "nightly");
    assert_eq!(st.missed_slots, 0);
    assert_eq!(st.unfinished_slot, None);
    assert_eq!(st.running_since, None);
    stop(h, &shutdown, &clock).await;
}

#[tokio::test]
async fn clock_jump_runs_once_for_the_latest_slot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-05T01:00:00Z"));
    let job = RecJob::new(&clock, vec![]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("nightly", "0 0,12 * * *", RetryPolicy::none(), true)],
        &job,
        &clock,
    );
    settle().await;
    // Host suspended from 01:00 to 13:00 the next day.
    clock.set(utc("2026-01-06T13:00:00Z"));
    run_until(&clock, utc("2026-01-06T13:30:00Z")).await;
    let calls = job.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].slot, utc("2026-01-06T12:00:00Z"));
    let st = load(dir.path(), "nightly");
    assert_eq!(st.missed_slots, 2);
    assert_eq!(st.skipped_overlap, 0);
    assert_eq!(st.next_due, Some(utc("2026-01-07T00:00:00Z")));
    stop(h, &shutdown, &clock).await;
}

/// Issue 14 item 1: NTP steps the clock back 3 hours (it was ahead). An every-minute job keeps
/// running every minute of the corrected time instead of stalling for 3 hours; a step forward
/// runs once for the latest passed slot.
#[tokio::test]
async fn a_clock_stepped_back_is_replanned_from_the_present() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = utc("2026-01-05T13:00:30Z");
    let clock = ManualClock::new(t0);
    // Zero-length runs so each run ends at its start.
    let job = RecJob::new(&clock, (0..50).map(|_| ok(0)).collect());
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("minutely", "* * * * *", RetryPolicy::none(), true)],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T13:03:30Z")).await;
    assert_eq!(job.starts("minutely").len(), 3);
    // NTP corrects the clock: it was 3 hours ahead.
    clock.step(utc("2026-01-05T10:03:40Z"));
    run_until(&clock, utc("2026-01-05T10:06:30Z")).await;
    let starts: Vec<_> = job.starts("minutely").into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        starts[3..],
        [
            utc("2026-01-05T10:04:00Z"),
            utc("2026-01-05T10:05:00Z"),
            utc("2026-01-05T10:06:00Z")
        ],
        "{starts:?}"
    );
    let st = load(dir.path(), "minutely");
    assert_eq!(st.last_slot, Some(utc("2026-01-05T10:06:00Z")));
    assert_eq!(st.next_due, Some(utc("2026-01-05T10:07:00Z")));
    // A step forward by a day: one run for the latest passed slot, then on schedule again.
    clock.step(utc("2026-01-06T10:06:40Z"));
    run_until(&clock, utc("2026-01-06T10:07:30Z")).await;
    let starts: Vec<_> = job.starts("minutely").into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        starts[6..],
        [utc("2026-01-06T10:06:40Z"), utc("2026-01-06T10:07:00Z")],
        "{starts:?}"
    );
    stop(h, &shutdown, &clock).await;
}

/// A state file written while the clock was ahead (last slot in the future) does not keep the
/// job from running on time after a restart.
#[tokio::test]
async fn a_last_slot_in_the_future_does_not_stall_a_restarted_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("state"));
    store.ensure_dir().unwrap();
    let mut st = JobState::new("minutely", "snapshot");
    st.last_slot = Some(utc("2027-01-01T00:00:00Z"));
    st.last_success = Some(utc("2027-01-01T00:00:05Z"));
    store.save(&st).unwrap();
    let clock = ManualClock::new(utc("2026-01-05T10:00:30Z"));
    let job = RecJob::new(&clock, vec![ok(0), ok(0)]);
    let (h, shutdown) = start(
        config(dir.path()),
        vec![spec("minutely", "* * * * *", RetryPolicy::none(), true)],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T10:02:30Z")).await;
    assert_eq!(
        job.starts("minutely"),
        vec![
            (utc("2026-01-05T10:01:00Z"), 1),
            (utc("2026-01-05T10:02:00Z"), 1)
        ]
    );
    stop(h, &shutdown, &clock).await;
}

/// Issue 14 item 4: a snapshot and a verify due in the same minute run one after the other
/// (never both at once, so never against the daemon's own repository lock), and both succeed.
#[tokio::test]
async fn jobs_due_in_the_same_minute_run_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-01-05T02:50:00Z"));
    let job = RecJob::new(&clock, vec![ok(20), ok(20), ok(20), ok(20)]);
    let cfg = DaemonConfig {
        serialize_jobs: true,
        ..config(dir.path())
    };
    let mut verify = spec("check", "0 3 * * *", RetryPolicy::none(), true);
    verify.kind = "verify".into();
    let (h, shutdown) = start(
        cfg,
        vec![
            spec("nightly", "0 3 * * *", RetryPolicy::none(), true),
            verify,
        ],
        &job,
        &clock,
    );
    run_until(&clock, utc("2026-01-05T04:00:00Z")).await;
    let mut calls = job.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    calls.sort_by_key(|c| c.start);
    assert_eq!(calls[0].start, utc("2026-01-05T03:00:00Z"));
    assert_eq!(calls[0].end, Some(utc("2026-01-05T03:20:00Z")));
    // The second starts when the first ends, for the same slot.
    assert_eq!(calls[1].start, utc("2026-01-05T03:20:00Z"));
    assert_eq!(calls[1].slot, utc("2026-01-05T03:00:00Z"));
    assert_ne!(calls[0].job, calls[1].job);
    for name in ["nightly", "check"] {
        let st = load(dir.path(), name);
        assert_eq!(st.last_run_ok, Some(true), "{name}");
        assert_eq!(st.consecutive_failures, 0, "{name}");
    }
    // Shutdown while one job waits for the other: it stops at once, its slot stays unfinished.
    run_until(&clock, utc("2026-01-06T03:05:00Z")).await;
    let report = stop(h, &shutdown, &clock).await;
    assert_eq!(
        report.jobs.iter().filter(|j| j.interrupted).count(),
        2,
        "{report:?}"
    );
}
