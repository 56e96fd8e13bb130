//! The scheduler loop behind `mnbackup daemon`.
//!
//! Each configured [`JobSpec`] gets its own loop; the actual work is delegated to the
//! caller's [`Job`] implementation. Semantics:
//!
//! * **Catch-up (anacron style).** At start, slots missed since the last completed run
//!   (per the persisted [`JobState::last_slot`]) are detected. With `catch_up = true`
//!   the job runs *once* immediately for the most recent missed slot; with `false` the
//!   missed slots are only counted and logged. A job with no state at all (first start)
//!   waits for its first slot. A run interrupted by shutdown or a crash does not count
//!   as completed, so it is caught up at the next start.
//! * **No overlap.** A job never runs twice at once. Slots that pass while it is still
//!   running (or retrying) are skipped, logged and counted in
//!   [`JobState::skipped_overlap`]. With [`DaemonConfig::serialize_jobs`] (the default)
//!   different jobs run one after the other too: a job due while another one runs waits for
//!   it, so a snapshot and a verify due in the same minute never meet on their own
//!   repository lock. Without it, mutual exclusion is the `Job`'s business.
//! * **Retries.** A [`JobError`] with `transient = true` is retried with exponential
//!   backoff ([`RetryPolicy`]), but only if the retry would start at least
//!   `max(min_headroom, duration of the failed attempt)` before the job's next slot, so
//!   a retry never runs into the next scheduled run. Permanent errors are not retried.
//! * **Shutdown.** When the shutdown token is cancelled (the caller wires SIGTERM/SIGINT
//!   to it), idle loops stop at once; an in-flight run gets `grace` to finish, then its
//!   [`JobContext::cancel`] token is cancelled, and if it still has not returned after
//!   `cancel_timeout` it is abandoned. [`Daemon::run`] then returns `Ok`, so the process
//!   exits 0 and systemd does not restart it.
//!
//! State is written with blocking file I/O (small JSON files on local disk).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::clock::{Clock, Wake};
use crate::schedule::Schedule;
use crate::state::{write_prometheus_with, JobState, StateError, StateStore};

/// A cancellation signal that can be awaited (like `tokio_util`'s `CancellationToken`).
/// Clones share the same state.
#[derive(Clone, Debug)]
pub struct CancelToken {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A new, not yet cancelled token.
    pub fn new() -> Self {
        CancelToken {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Cancels the token, waking every waiter. Idempotent.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes when the token is cancelled (immediately if it already is).
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender is kept alive by `self`, so this cannot fail.
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// What a successful run reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobOutcome {
    /// One-line summary stored in the state file, e.g. "snapshot 3f2a1c (1.2 GiB)".
    pub summary: String,
}

/// A failed run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct JobError {
    /// Worth retrying (network blip, MySQL restarting, lock busy) vs. not (bad config).
    pub transient: bool,
    /// What went wrong and what to do, for the log and `mnbackup status`.
    pub msg: String,
}

impl JobError {
    /// A failure that may go away on retry.
    pub fn transient(msg: impl Into<String>) -> Self {
        JobError {
            transient: true,
            msg: msg.into(),
        }
    }

    /// A failure that will not go away by retrying.
    pub fn permanent(msg: impl Into<String>) -> Self {
        JobError {
            transient: false,
            msg: msg.into(),
        }
    }
}

/// Passed to [`Job::run`] for each attempt.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job's configured name.
    pub job_name: String,
    /// The job's kind ("snapshot", "verify", ...): dispatch on this.
    pub kind: String,
    /// 1 for the first attempt of a slot, 2 for the first retry, ...
    pub attempt: u32,
    /// The scheduled slot this run is for (in the past for a catch-up run).
    pub slot: DateTime<Utc>,
    /// Cancelled when the daemon shuts down and the grace period has expired; stop
    /// promptly (clean up partial output) and return an error.
    pub cancel: CancelToken,
}

/// The work behind a scheduled job. Implemented by the caller (the `mnbackup` binary).
///
/// ```
/// use mnbackup_scheduler::{Job, JobContext, JobError, JobOutcome};
///
/// struct Runner;
///
/// impl Job for Runner {
///     async fn run(&self, ctx: JobContext) -> Result<JobOutcome, JobError> {
///         match ctx.kind.as_str() {
///             "snapshot" => {
///                 // ... take the snapshot, checking ctx.cancel.is_cancelled() between steps
///                 Ok(JobOutcome { summary: format!("snapshot for slot {}", ctx.slot) })
///             }
///             other => Err(JobError::permanent(format!(
///                 "job {}: unknown kind {other:?}; use \"snapshot\" or \"verify\"",
///                 ctx.job_name
///             ))),
///         }
///     }
/// }
/// ```
pub trait Job: Send + Sync + 'static {
    /// Runs one attempt. Return a transient [`JobError`] to request a retry.
    fn run(&self, ctx: JobContext) -> impl Future<Output = Result<JobOutcome, JobError>> + Send;

    /// Further metric families (Prometheus text format, with `# HELP`/`# TYPE` lines) appended
    /// to the metrics file on every write, e.g. about the repository. Called often: return a
    /// cached value.
    fn metrics(&self) -> String {
        String::new()
    }
}

/// Retry behaviour for transient failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per slot, including the first (1 = never retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub initial_backoff: StdDuration,
    /// Upper bound for a single wait.
    pub max_backoff: StdDuration,
    /// A retry is only started if it starts at least this long (or as long as the failed
    /// attempt took, whichever is more) before the job's next slot.
    pub min_headroom: StdDuration,
}

impl Default for RetryPolicy {
    /// 4 attempts, backoff 2 min, 4 min, 8 min (cap 30 min), 10 min headroom.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: StdDuration::from_secs(120),
            max_backoff: StdDuration::from_secs(1800),
            min_headroom: StdDuration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// Wait after failed attempt number `failed_attempt` (1-based).
    pub fn backoff(&self, failed_attempt: u32) -> StdDuration {
        let factor = 2u32.saturating_pow(failed_attempt.saturating_sub(1));
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// One scheduled job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Unique name; also the state file name, so letters, digits, `_`, `-`, `.` only.
    pub name: String,
    /// Kind passed to [`Job::run`] ("snapshot", "verify", ...).
    pub kind: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Retries for transient failures.
    pub retry: RetryPolicy,
    /// Run once at start if slots were missed while the daemon was down.
    pub catch_up: bool,
}

/// Daemon-wide settings.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Directory for per-job state files (default [`crate::state::DEFAULT_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// Prometheus textfile-collector output (`.../mnbackup.prom`), rewritten on every
    /// state change, if set.
    pub metrics_file: Option<PathBuf>,
    /// How long an in-flight run may continue after shutdown is requested.
    pub grace: StdDuration,
    /// How long to wait for a run to return after it has been cancelled.
    pub cancel_timeout: StdDuration,
    /// Run at most one job at a time: a job that becomes due while another runs waits for
    /// it (its attempt starts when the other ends).
    pub serialize_jobs: bool,
}

impl Default for DaemonConfig {
    /// Grace 10 min, cancel timeout 60 s, jobs serialized.
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from(crate::state::DEFAULT_STATE_DIR),
            metrics_file: None,
            grace: StdDuration::from_secs(600),
            cancel_timeout: StdDuration::from_secs(60),
            serialize_jobs: true,
        }
    }
}

impl DaemonConfig {
    /// The minimum systemd `TimeoutStopSec` for this config: grace + cancel timeout +
    /// 30 s slack.
    pub fn stop_timeout(&self) -> StdDuration {
        self.grace + self.cancel_timeout + StdDuration::from_secs(30)
    }
}

/// Errors that stop the daemon (it exits non-zero and systemd restarts it).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Invalid job configuration.
    #[error("scheduler configuration error: {0}")]
    Config(String),
    /// State directory unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// A job loop crashed (a bug); the other jobs were stopped gracefully.
    #[error("internal error in the scheduler loop for job {job:?}: {msg}; the daemon stopped so systemd can restart it — please report this with the log")]
    Internal {
        /// Job whose loop crashed.
        job: String,
        /// Panic message.
        msg: String,
    },
}

/// What happened to one job while the daemon ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Job name.
    pub name: String,
    /// Attempts started.
    pub attempts: u64,
    /// True if a run was cut short by shutdown (it will be caught up at next start).
    pub interrupted: bool,
}

/// Returned by [`Daemon::run`] on a clean shutdown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonReport {
    /// Per-job summaries, sorted by name.
    pub jobs: Vec<JobReport>,
}

/// The scheduler daemon.
pub struct Daemon<C: Clock, J: Job> {
    config: DaemonConfig,
    jobs: Vec<JobSpec>,
    job: Arc<J>,
    clock: Arc<C>,
}

fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl<C: Clock, J: Job> Daemon<C, J> {
    /// Validates the job list (non-empty, unique file-safe names, `max_attempts >= 1`).
    pub fn new(
        config: DaemonConfig,
        jobs: Vec<JobSpec>,
        job: Arc<J>,
        clock: Arc<C>,
    ) -> Result<Self, DaemonError> {
        if jobs.is_empty() {
            return Err(DaemonError::Config(
                "no jobs are configured; add at least one job (e.g. a \"snapshot\" job with \
                 schedule \"0 0,12 * * *\") to the config file"
                    .into(),
            ));
        }
        let mut seen = HashSet::new();
        for j in &jobs {
            if !valid_job_name(&j.name) {
                return Err(DaemonError::Config(format!(
                    "job name {:?} is invalid; use 1-64 letters, digits, '_', '-' or '.' \
                     (it is used as the state file name)",
                    j.name
                )));
            }
            if !seen.insert(j.name.as_str()) {
                return Err(DaemonError::Config(format!(
                    "job name {:?} is used twice; job names must be unique",
                    j.name
                )));
            }
            if j.retry.max_attempts == 0 {
                return Err(DaemonError::Config(format!(
                    "job {:?}: retry max_attempts is 0; use 1 for no retries",
                    j.name
                )));
            }
        }
        Ok(Daemon {
            config,
            jobs,
            job,
            clock,
        })
    }

    /// Runs until `shutdown` is cancelled, then finishes or cancels in-flight runs (see
    /// module docs) and returns `Ok`. Returns `Err` only if the state directory is
    /// unusable at start or a job loop crashed.
    pub async fn run(self, shutdown: CancelToken) -> Result<DaemonReport, DaemonError> {
        let store = StateStore::new(&self.config.state_dir);
        store.ensure_dir()?;
        let stop = CancelToken::new();
        let shared = Arc::new(Shared {
            clock: self.clock,
            job: self.job,
            store,
            config: self.config,
            states: Mutex::new(BTreeMap::new()),
            stop: stop.clone(),
            running: tokio::sync::Mutex::new(()),
            running_job: Mutex::new(None),
        });
        let forward = {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                info!("shutdown requested; stopping the scheduler");
                stop.cancel();
            })
        };
        let mut set = tokio::task::JoinSet::new();
        let mut names = BTreeMap::new();
        for spec in self.jobs {
            let name = spec.name.clone();
            let h = set.spawn(JobLoop::new(shared.clone(), spec).run());
            names.insert(h.id(), name);
        }
        let mut report = DaemonReport::default();
        let mut internal = None;
        while let Some(r) = set.join_next_with_id().await {
            match r {
                Ok((_, jr)) => report.jobs.push(jr),
                Err(e) => {
                    let job = names.get(&e.id()).cloned().unwrap_or_default();
                    error!(job = %job, "scheduler loop crashed: {e}; stopping all jobs");
                    stop.cancel();
                    internal.get_or_insert(DaemonError::Internal {
                        job,
                        msg: e.to_string(),
                    });
                }
            }
        }
        forward.abort();
        if let Some(e) = internal {
            return Err(e);
        }
        report.jobs.sort_by(|a, b| a.name.cmp(&b.name));
        info!("scheduler stopped cleanly");
        Ok(report)
    }
}

struct Shared<C, J> {
    clock: Arc<C>,
    job: Arc<J>,
    store: StateStore,
    config: DaemonConfig,
    states: Mutex<BTreeMap<String, JobState>>,
    stop: CancelToken,
    /// Held by the running attempt when jobs are serialized.
    running: tokio::sync::Mutex<()>,
    /// The job holding `running`, for the log.
    running_job: Mutex<Option<String>>,
}

impl<C: Clock, J: Job> Shared<C, J> {
    fn persist(&self, st: &JobState) {
        if let Err(e) = self.store.save(st) {
            error!(job = %st.job, "{e}");
        }
        // Held while writing, so the file always ends with the newest states.
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.insert(st.job.clone(), st.clone());
        let all: Vec<JobState> = states.values().cloned().collect();
        if let Some(path) = &self.config.metrics_file {
            if let Err(e) = write_prometheus_with(path, &all, &self.job.metrics()) {
                error!(
                    "cannot write metrics file {}: {e}; check the textfile collector \
                     directory exists and is writable",
                    path.display()
                );
            }
        }
    }
}

fn chrono_dur(d: StdDuration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// Cap on slots counted in one go (a per-second schedule down for a year).
const SLOT_COUNT_CAP: u64 = 1_000_000;

enum AttemptEnd {
    Finished {
        result: Result<JobOutcome, JobError>,
        shutdown_seen: bool,
    },
    Interrupted(String),
}

enum SlotEnd {
    Continue,
    Stop,
}

enum Sleep {
    Due,
    Jumped,
    Stop,
}

struct JobLoop<C, J> {
    shared: Arc<Shared<C, J>>,
    spec: JobSpec,
    st: JobState,
    report: JobReport,
    /// The last wall-clock reading and the monotonic instant it was taken at: a plan made from
    /// it and a clock stepped back before the sleep begins are told apart (see `sleep_until`).
    last_read: Mutex<Option<(DateTime<Utc>, std::time::Instant)>>,
}

impl<C: Clock, J: Job> JobLoop<C, J> {
    fn new(shared: Arc<Shared<C, J>>, spec: JobSpec) -> Self {
        let report = JobReport {
            name: spec.name.clone(),
            ..Default::default()
        };
        JobLoop {
            shared,
            st: JobState::new(&spec.name, &spec.kind),
            spec,
            report,
            last_read: Mutex::new(None),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        let now = self.shared.clock.now();
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((now, std::time::Instant::now()));
        now
    }

    /// A step back of the wall clock since the last reading (from which the caller planned):
    /// the clock's own jump check covers only the time inside its sleep, so a step between the
    /// plan and the sleep would otherwise leave the job asleep for the size of the step.
    fn stepped_back_since_last_read(&self) -> Option<Duration> {
        let last = *self.last_read.lock().unwrap_or_else(|p| p.into_inner());
        let (wall, mono) = last?;
        let step = crate::clock::detect_jump(
            wall,
            self.shared.clock.now(),
            mono.elapsed(),
            crate::clock::SystemClock::JUMP_THRESHOLD,
        )?;
        (step < Duration::zero()).then_some(step)
    }

    fn persist(&self) {
        self.shared.persist(&self.st);
    }

    /// Sleeps until `t`; `Stop` if shutdown was requested first, `Jumped` if the wall clock
    /// was stepped so that `t` is not reached yet (the caller re-plans from the present).
    async fn sleep_until(&self, t: DateTime<Utc>) -> Sleep {
        if let Some(step) = self.stepped_back_since_last_read() {
            let now = self.now();
            warn!(
                job = %self.spec.name,
                "the system clock was stepped by {:+}s (NTP or a manual change); \
                 re-planning from the present time {}",
                step.num_seconds(),
                self.spec.schedule.tz().format(now)
            );
            return Sleep::Jumped;
        }
        loop {
            let wake = tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => return Sleep::Stop,
                w = self.shared.clock.sleep_until(t) => w,
            };
            match wake {
                Wake::Due => return Sleep::Due,
                Wake::ClockJumped(step) => {
                    let now = self.now();
                    if now >= t {
                        return Sleep::Due;
                    }
                    warn!(
                        job = %self.spec.name,
                        "the system clock was stepped by {:+}s (NTP or a manual change); \
                         re-planning from the present time {}",
                        step.num_seconds(),
                        self.spec.schedule.tz().format(now)
                    );
                    if step < Duration::zero() {
                        return Sleep::Jumped;
                    }
                    // A step forward that does not reach `t`: the deadline is still right.
                }
            }
        }
    }

    fn load_state(&mut self) {
        let name = self.spec.name.clone();
        match self.shared.store.load(&name) {
            Ok(Some(st)) => self.st = st,
            Ok(None) => {}
            Err(StateError::Corrupt { path, source }) => {
                let aside = path.with_extension(format!("json.corrupt-{}", self.now().timestamp()));
                error!(
                    job = %name,
                    "state file {} is corrupt ({source}); moved it to {} and treating the job \
                     as never run",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
            }
            Err(e) => error!(job = %name, "{e}; treating the job as never run"),
        }
        self.st.job = self.spec.name.clone();
        self.st.kind = self.spec.kind.clone();
        self.st.schedule = self.spec.schedule.expr().to_string();
        self.st.tz = self.spec.schedule.tz().name();
    }

    async fn run(mut self) -> JobReport {
        self.load_state();
        let sched = self.spec.schedule.clone();
        let name = self.spec.name.clone();
        let now = self.now();
        if let Some(since) = self.st.running_since.take() {
            warn!(
                job = %name,
                "the previous run started at {} never finished (daemon killed or host \
                 rebooted?); its slot counts as missed",
                sched.tz().format(since)
            );
        }
        let mut slot;
        let mut due;
        // An unfinished run's slot counts as missed: start counting just before it.
        let baseline = match self.st.unfinished_slot {
            Some(u) => Some(u - Duration::seconds(1)),
            None => self.st.last_slot,
        };
        if let Some(b) = baseline.filter(|b| *b > now) {
            warn!(
                job = %name,
                "the last recorded run is for {}, which is in the future: the system clock was \
                 ahead then (or is behind now); planning from the present time {}",
                sched.tz().format(b),
                sched.tz().format(now)
            );
        }
        match baseline {
            None => {
                let Some(next) = sched.next_after(now) else {
                    error!(job = %name, "schedule {sched} has no future fire time; job disabled");
                    return self.report;
                };
                info!(job = %name, "no completed run recorded; first run at {}", sched.tz().format(next));
                slot = next;
                due = next;
            }
            Some(last) => {
                let (missed, latest) = sched.slots_between(last, now, SLOT_COUNT_CAP);
                match latest {
                    Some(latest) if self.spec.catch_up => {
                        info!(
                            job = %name,
                            "{missed} slot(s) missed or left unfinished since {}; catching up: \
                             running once now for the slot at {}",
                            sched.tz().format(last),
                            sched.tz().format(latest)
                        );
                        self.st.missed_slots += missed - 1;
                        slot = latest;
                        due = now;
                    }
                    _ => {
                        if missed > 0 {
                            warn!(
                                job = %name,
                                "{missed} slot(s) missed while the daemon was down; not \
                                 catching up (catch_up = false)"
                            );
                            self.st.missed_slots += missed;
                        }
                        self.st.unfinished_slot = None;
                        let Some(next) = sched.next_after(now) else {
                            error!(job = %name, "schedule {sched} has no future fire time; job disabled");
                            return self.report;
                        };
                        slot = next;
                        due = next;
                    }
                }
            }
        }

        loop {
            self.st.next_due = Some(due);
            self.persist();
            match self.sleep_until(due).await {
                Sleep::Stop => break,
                Sleep::Due => {}
                Sleep::Jumped => {
                    // The clock went back: the planned slot is far away now. Plan again from
                    // the present, so an every-minute job keeps running every minute.
                    let Some(next) = sched.next_after(self.now()) else {
                        error!(job = %name, "schedule {sched} has no future fire time; job disabled");
                        break;
                    };
                    slot = next;
                    due = next;
                    continue;
                }
            }
            let now = self.now();
            let (late, latest) = sched.slots_between(slot, now, SLOT_COUNT_CAP);
            if let Some(latest) = latest {
                warn!(
                    job = %name,
                    "woke up late (host suspended or clock jumped?): {late} later slot(s) \
                     already passed; running once for the slot at {}",
                    sched.tz().format(latest)
                );
                self.st.missed_slots += late;
                slot = latest;
            }
            match self.run_slot(slot).await {
                SlotEnd::Stop => break,
                SlotEnd::Continue => {}
            }
            let now = self.now();
            let (skipped, _) = sched.slots_between(slot, now, SLOT_COUNT_CAP);
            if skipped > 0 {
                warn!(
                    job = %name,
                    "{skipped} slot(s) skipped because the run for {} was still in progress \
                     (no overlapping runs); consider a less frequent schedule",
                    sched.tz().format(slot)
                );
                self.st.skipped_overlap += skipped;
            }
            let Some(next) = sched.next_after(now) else {
                error!(job = %name, "schedule {sched} has no future fire time; job disabled");
                break;
            };
            slot = next;
            due = next;
            if self.shared.stop.is_cancelled() {
                break;
            }
        }
        self.st.next_due = None;
        self.persist();
        self.report
    }

    async fn run_slot(&mut self, slot: DateTime<Utc>) -> SlotEnd {
        let name = self.spec.name.clone();
        let sched = self.spec.schedule.clone();
        let policy = self.spec.retry.clone();
        let mut attempt = 1;
        self.st.unfinished_slot = Some(slot);
        loop {
            let start = self.now();
            self.st.last_start = Some(start);
            self.st.running_since = Some(start);
            self.persist();
            self.report.attempts += 1;
            info!(job = %name, kind = %self.spec.kind, attempt, "starting run for slot {}", sched.tz().format(slot));
            let end = self.run_attempt(attempt, slot).await;
            let finish = self.now();
            self.st.running_since = None;
            self.st.last_finish = Some(finish);
            self.st.last_duration_secs = Some((finish - start).num_milliseconds() as f64 / 1000.0);
            self.st.last_attempts = attempt;
            let (result, shutdown_seen) = match end {
                AttemptEnd::Interrupted(why) => {
                    warn!(job = %name, "run interrupted: {why}; it will be run again at the next start if catch_up is on");
                    self.st.last_error = Some(format!("interrupted by daemon shutdown: {why}"));
                    self.st.last_error_at = Some(finish);
                    self.report.interrupted = true;
                    self.persist();
                    return SlotEnd::Stop;
                }
                AttemptEnd::Finished {
                    result,
                    shutdown_seen,
                } => (result, shutdown_seen),
            };
            let stop_or_continue = if shutdown_seen {
                SlotEnd::Stop
            } else {
                SlotEnd::Continue
            };
            match result {
                Ok(outcome) => {
                    info!(job = %name, attempt, "run succeeded: {}", outcome.summary);
                    self.st.last_success = Some(finish);
                    self.st.last_success_summary = Some(outcome.summary);
                    self.st.last_run_ok = Some(true);
                    self.st.consecutive_failures = 0;
                    self.st.last_slot = Some(slot);
                    self.st.unfinished_slot = None;
                    self.st.runs_total += 1;
                    self.persist();
                    return stop_or_continue;
                }
                Err(e) => {
                    self.st.last_error = Some(e.msg.clone());
                    self.st.last_error_at = Some(finish);
                    if e.transient && attempt < policy.max_attempts && !shutdown_seen {
                        let backoff = policy.backoff(attempt);
                        let retry_at = finish + chrono_dur(backoff);
                        let headroom = chrono_dur(policy.min_headroom).max(finish - start);
                        let next_slot = sched.next_after(slot);
                        if next_slot.is_none_or_after(retry_at + headroom) {
                            warn!(
                                job = %name,
                                attempt,
                                "run failed (transient): {}; retrying in {}s at {}",
                                e.msg,
                                backoff.as_secs(),
                                sched.tz().format(retry_at)
                            );
                            self.persist();
                            // After a clock step back the retry runs at once.
                            if matches!(self.sleep_until(retry_at).await, Sleep::Stop) {
                                self.st.last_error =
                                    Some(format!("{} (retry cancelled by daemon shutdown)", e.msg));
                                self.report.interrupted = true;
                                self.persist();
                                return SlotEnd::Stop;
                            }
                            attempt += 1;
                            continue;
                        }
                        warn!(
                            job = %name,
                            "not retrying: a retry at {} plus {}s headroom would run into the \
                             next scheduled run at {}",
                            sched.tz().format(retry_at),
                            headroom.num_seconds(),
                            next_slot.map(|t| sched.tz().format(t)).unwrap_or_default()
                        );
                    }
                    self.st.last_run_ok = Some(false);
                    self.st.consecutive_failures += 1;
                    self.st.failures_total += 1;
                    self.st.runs_total += 1;
                    self.st.last_slot = Some(slot);
                    self.st.unfinished_slot = None;
                    error!(
                        job = %name,
                        attempts = attempt,
                        consecutive_failures = self.st.consecutive_failures,
                        "run failed{}: {}",
                        if e.transient { "" } else { " (not retryable)" },
                        e.msg
                    );
                    self.persist();
                    return stop_or_continue;
                }
            }
        }
    }

    async fn run_attempt(&self, attempt: u32, slot: DateTime<Utc>) -> AttemptEnd {
        let _turn = if self.shared.config.serialize_jobs {
            let turn = match self.shared.running.try_lock() {
                Ok(t) => t,
                Err(_) => {
                    let other = self
                        .shared
                        .running_job
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        .unwrap_or_default();
                    info!(
                        job = %self.spec.name,
                        "due, but job {other:?} is running; waiting for it to finish (the \
                         daemon runs one job at a time)"
                    );
                    tokio::select! {
                        biased;
                        _ = self.shared.stop.cancelled() => {
                            return AttemptEnd::Interrupted(format!(
                                "the daemon shut down while the job waited for job {other:?} \
                                 to finish"
                            ));
                        }
                        t = self.shared.running.lock() => t,
                    }
                }
            };
            *self
                .shared
                .running_job
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(self.spec.name.clone());
            Some(turn)
        } else {
            None
        };
        let cancel = CancelToken::new();
        let ctx = JobContext {
            job_name: self.spec.name.clone(),
            kind: self.spec.kind.clone(),
            attempt,
            slot,
            cancel: cancel.clone(),
        };
        let job = self.shared.job.clone();
        let mut handle = tokio::spawn(async move { job.run(ctx).await });
        let flatten = |r: Result<Result<JobOutcome, JobError>, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| Err(JobError::permanent(format!("job crashed: {e}"))))
        };
        let clock = &self.shared.clock;
        let name = &self.spec.name;
        tokio::select! {
            biased;
            r = &mut handle => return AttemptEnd::Finished { result: flatten(r), shutdown_seen: false },
            _ = self.shared.stop.cancelled() => {}
        }
        let grace = self.shared.config.grace;
        info!(job = %name, "shutdown requested while the job is running; giving it up to {}s to finish", grace.as_secs());
        tokio::select! {
            biased;
            r = &mut handle => return AttemptEnd::Finished { result: flatten(r), shutdown_seen: true },
            _ = clock.sleep_until(clock.now() + chrono_dur(grace)) => {}
        }
        let cancel_timeout = self.shared.config.cancel_timeout;
        warn!(job = %name, "grace period of {}s expired; cancelling the running job", grace.as_secs());
        cancel.cancel();
        tokio::select! {
            biased;
            r = &mut handle => match flatten(r) {
                Ok(outcome) => AttemptEnd::Finished { result: Ok(outcome), shutdown_seen: true },
                Err(e) => AttemptEnd::Interrupted(format!(
                    "cancelled after the {}s grace period ({})", grace.as_secs(), e.msg
                )),
            },
            _ = clock.sleep_until(clock.now() + chrono_dur(cancel_timeout)) => {
                handle.abort();
                AttemptEnd::Interrupted(format!(
                    "did not stop within {}s of being cancelled; abandoned it (check for \
                     leftover temporary files or processes)",
                    cancel_timeout.as_secs()
                ))
            }
        }
    }
}

trait NoneOrAfter {
    fn is_none_or_after(&self, t: DateTime<Utc>) -> bool;
}

impl NoneOrAfter for Option<DateTime<Utc>> {
    /// True if there is no next slot or it is at/after `t`.
    fn is_none_or_after(&self, t: DateTime<Utc>) -> bool {
        self.is_none_or(|n| n >= t)
    }
}
