//! Per-job state files, health evaluation and Prometheus textfile metrics.
//!
//! Each job has one JSON file `<state_dir>/<job>.json` ([`JobState`]), rewritten
//! atomically (temp file in the same directory, fsync, rename, fsync directory) after
//! every change, so a crash or power loss leaves either the old or the new version.
//!
//! # Health and exit codes (`mnbackup status`)
//!
//! Nagios/Icinga compatible:
//!
//! | [`Health`] | exit | meaning |
//! |------------|------|---------|
//! | `Fresh`    | 0    | last run succeeded and the last success is younger than max age |
//! | `Pending`  | 0    | a new installation: the daemon runs, the first slot has not come (and gone) yet |
//! | `Stale`    | 1    | last run did not fail, but the last success is older than max age (daemon stopped? jobs not firing?), or it lies in the future (the clock was wrong) |
//! | `Failing`  | 2    | the most recent run failed (after its retries) |
//! | `Never`    | 2    | no successful run was ever recorded |
//!
//! For several jobs use the worst (highest) code: [`worst_exit_code`]. The default max
//! age is the longest interval between upcoming fire times plus a grace
//! ([`default_max_age`]), so one missed slot is flagged.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// Default directory for job state files.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mnbackup/scheduler";

/// What the scheduler remembers about one job. Stored as JSON; unknown fields are
/// ignored and missing fields default, so the format can grow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobState {
    /// Job name.
    pub job: String,
    /// Job kind ("snapshot", "verify", ...).
    pub kind: String,
    /// Schedule expression in effect when last written.
    pub schedule: String,
    /// Schedule time zone name.
    pub tz: String,
    /// When the most recent attempt started.
    pub last_start: Option<DateTime<Utc>>,
    /// When the most recent attempt finished.
    pub last_finish: Option<DateTime<Utc>>,
    /// The scheduled slot of the last *completed* run (success or final failure).
    /// Catch-up after downtime is computed from this.
    pub last_slot: Option<DateTime<Utc>>,
    /// The slot of a run that was started but not completed (interrupted by shutdown,
    /// a crash or a reboot); it counts as missed at the next start (and is caught up if
    /// `catch_up` is on). Cleared when the run completes.
    pub unfinished_slot: Option<DateTime<Utc>>,
    /// When the last successful run finished.
    pub last_success: Option<DateTime<Utc>>,
    /// Summary reported by the last successful run.
    pub last_success_summary: Option<String>,
    /// Message of the last error (kept after later successes, for history).
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Outcome of the most recent completed run.
    pub last_run_ok: Option<bool>,
    /// Duration of the most recent attempt in seconds.
    pub last_duration_secs: Option<f64>,
    /// Attempts used by the most recent run (1 = no retries).
    pub last_attempts: u32,
    /// Set while an attempt is in progress; if found set at startup, the daemon died
    /// mid-run.
    pub running_since: Option<DateTime<Utc>>,
    /// Next time the job is due.
    pub next_due: Option<DateTime<Utc>>,
    /// Runs (slots) in a row that failed after all retries; 0 after a success.
    pub consecutive_failures: u32,
    /// Slots skipped because the previous run of this job was still going.
    pub skipped_overlap: u64,
    /// Slots missed while the daemon was down (or the host asleep).
    pub missed_slots: u64,
    /// Completed runs.
    pub runs_total: u64,
    /// Completed runs that failed.
    pub failures_total: u64,
}

impl JobState {
    /// A fresh state for a job that has never run.
    pub fn new(job: &str, kind: &str) -> Self {
        JobState {
            job: job.to_string(),
            kind: kind.to_string(),
            ..Default::default()
        }
    }
}

/// State I/O errors, with the path and a hint.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("cannot {action} scheduler state {path}: {source}; check that the directory exists, is on a writable local disk and is owned by the user running mnbackup")]
    Io {
        /// "read", "write", ...
        action: &'static str,
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The file is not valid state JSON.
    #[error("scheduler state file {path} is corrupt ({source}); move it aside (mv {path} {path}.bad) and the job will be treated as never run")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Parse error.
        source: serde_json::Error,
    },
}

pub use crate::durable::write_atomic;

/// Directory of per-job state files.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (not created until [`StateStore::ensure_dir`] or a save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `job`.
    pub fn path_for(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{job}.json"))
    }

    /// Creates the directory and checks it is writable.
    pub fn ensure_dir(&self) -> Result<(), StateError> {
        let io_err = |action, source| StateError::Io {
            action,
            path: self.dir.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(|e| io_err("create directory for", e))?;
        let probe = self.dir.join(".write-test");
        write_atomic(&probe, b"ok").map_err(|e| io_err("write to", e))?;
        let _ = fs::remove_file(probe);
        Ok(())
    }

    /// Loads a job's state; `Ok(None)` if it has never been written.
    pub fn load(&self, job: &str) -> Result<Option<JobState>, StateError> {
        let path = self.path_for(job);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Saves a job's state atomically.
    pub fn save(&self, st: &JobState) -> Result<(), StateError> {
        let path = self.path_for(&st.job);
        let mut data = serde_json::to_vec_pretty(st).expect("JobState serializes");
        data.push(b'\n');
        write_atomic(&path, &data).map_err(|source| StateError::Io {
            action: "write",
            path,
            source,
        })
    }

    /// Loads every `*.json` state in the directory, sorted by job name. A missing
    /// directory yields an empty list.
    pub fn load_all(&self) -> Result<Vec<JobState>, StateError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => {
                return Err(StateError::Io {
                    action: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut out = vec![];
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(job) = name.strip_suffix(".json") {
                if !job.starts_with('.') {
                    if let Some(st) = self.load(job)? {
                        out.push(st);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(out)
    }
}

/// Health of one job, see the module docs for the exit codes.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// Last run OK and recent enough.
    Fresh,
    /// Last success older than the max age.
    Stale {
        /// When it last succeeded.
        last_success: DateTime<Utc>,
        /// How old that is.
        age: Duration,
    },
    /// The most recent run failed.
    Failing {
        /// Failed runs in a row.
        consecutive_failures: u32,
        /// Last error message.
        last_error: Option<String>,
    },
    /// Never succeeded (and never failed either).
    Never,
    /// Never ran yet, but the daemon has planned the first run and it is not overdue: a
    /// new installation, not a problem.
    Pending {
        /// The first planned run.
        first_due: DateTime<Utc>,
    },
}

impl Health {
    /// Process exit code: 0 fresh, 1 stale, 2 failing or never.
    pub fn exit_code(&self) -> i32 {
        match self {
            Health::Fresh | Health::Pending { .. } => 0,
            Health::Stale { .. } => 1,
            Health::Failing { .. } | Health::Never => 2,
        }
    }

    /// Short label: `fresh`, `stale`, `failing`, `never`.
    pub fn label(&self) -> &'static str {
        match self {
            Health::Fresh => "fresh",
            Health::Stale { .. } => "stale",
            Health::Failing { .. } => "failing",
            Health::Never => "never",
            Health::Pending { .. } => "pending",
        }
    }

    /// One-line explanation with what to do about it.
    pub fn describe(&self) -> String {
        match self {
            Health::Fresh => "OK: last run succeeded recently".to_string(),
            Health::Stale { last_success, age } if *age < Duration::zero() => format!(
                "STALE: the last success is recorded at {}, {}h in the future: the system \
                 clock was wrong when it ran (or is wrong now); check the clock (timedatectl), \
                 then run the job by hand (`mnbackup snapshot`) to record a success at the \
                 right time",
                last_success.to_rfc3339(),
                -age.num_hours()
            ),
            Health::Stale { last_success, age } => format!(
                "STALE: last success {} ({}h ago) is older than the allowed max age; \
                 check that `mnbackup daemon` is running (systemctl status mnbackup) and \
                 look at its log (journalctl -u mnbackup)",
                last_success.to_rfc3339(),
                age.num_hours()
            ),
            Health::Failing {
                consecutive_failures,
                last_error,
            } => format!(
                "FAILING: last {consecutive_failures} run(s) failed; last error: {}; fix the \
                 cause, then run the job by hand to confirm",
                last_error.as_deref().unwrap_or("(not recorded)")
            ),
            Health::Never => "NEVER: no successful run recorded yet; run the job by hand or \
                              wait for its first scheduled slot"
                .to_string(),
            Health::Pending { first_due } => format!(
                "PENDING: no run yet; the first is planned for {} (a new installation)",
                first_due.to_rfc3339()
            ),
        }
    }
}

/// Evaluates the health of a job from its state (`None` = no state file).
pub fn health(state: Option<&JobState>, now: DateTime<Utc>, max_age: Duration) -> Health {
    let Some(st) = state else {
        return Health::Never;
    };
    if st.consecutive_failures > 0 || (st.last_run_ok == Some(false) && st.last_success.is_none()) {
        return Health::Failing {
            consecutive_failures: st.consecutive_failures.max(1),
            last_error: st.last_error.clone(),
        };
    }
    match st.last_success {
        None if st.last_run_ok.is_none() => match st.next_due.or(st.running_since) {
            Some(first) if now <= first + max_age => Health::Pending { first_due: first },
            _ => Health::Never,
        },
        None => Health::Never,
        // A success "in the future" was recorded while the clock was wrong: it proves nothing
        // about the present (more than a minute ahead: beyond any NTP slew or test jitter).
        Some(t) if t - now > Duration::minutes(1) => Health::Stale {
            last_success: t,
            age: now - t,
        },
        Some(t) if now - t > max_age => Health::Stale {
            last_success: t,
            age: now - t,
        },
        Some(_) => Health::Fresh,
    }
}

/// Default max age for [`health`]: the longest gap between the next 32 fire times plus
/// [`default_grace`], so one missed slot is flagged (`0 0,12 * * *` gives 13 h, and a
/// Monday–Friday job tolerates the weekend).
pub fn default_max_age(schedule: &Schedule, now: DateTime<Utc>) -> Duration {
    match schedule.max_interval(now, 32) {
        Some(d) => d + default_grace(d),
        None => Duration::days(2),
    }
}

/// Slack on top of the interval for a run's duration and its retries: a quarter of the
/// interval, at least 1 minute and at most 1 hour.
pub fn default_grace(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::minutes(1), Duration::hours(1))
}

/// Everything `mnbackup status` shows for one job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    /// Job name.
    pub job: String,
    /// Health verdict (see [`Health::exit_code`]).
    pub health: Health,
    /// Max age used for the verdict.
    pub max_age: Duration,
    /// Next fire time per the schedule (independent of whether the daemon runs).
    pub next_run: Option<DateTime<Utc>>,
    /// The persisted state, if any.
    pub state: Option<JobState>,
}

/// Loads a job's state and evaluates its health; `max_age` defaults to
/// [`default_max_age`].
pub fn job_status(
    store: &StateStore,
    job: &str,
    schedule: &Schedule,
    now: DateTime<Utc>,
    max_age: Option<Duration>,
) -> Result<JobStatus, StateError> {
    let state = store.load(job)?;
    let max_age = max_age.unwrap_or_else(|| default_max_age(schedule, now));
    Ok(JobStatus {
        job: job.to_string(),
        health: health(state.as_ref(), now, max_age),
        max_age,
        next_run: schedule.next_after(now),
        state,
    })
}

/// The worst exit code over several healths (0 for none).
pub fn worst_exit_code<'a>(healths: impl IntoIterator<Item = &'a Health>) -> i32 {
    healths
        .into_iter()
        .map(Health::exit_code)
        .max()
        .unwrap_or(0)
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn ts(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// Renders job states in the Prometheus text exposition format, for the node_exporter
/// textfile collector. Metrics (labels `mnbackup_job`, `kind`; not `job`, which Prometheus
/// sets itself to the scrape job and would rename to `exported_job`):
///
/// * `mnbackup_last_success_timestamp_seconds` (0 if never)
/// * `mnbackup_last_run_timestamp_seconds`, `mnbackup_last_run_ok` (1/0),
///   `mnbackup_last_run_duration_seconds` (only once a run completed)
/// * `mnbackup_next_run_timestamp_seconds`
/// * `mnbackup_consecutive_failures`, `mnbackup_running` (1 while a run is in progress)
/// * counters `mnbackup_runs_total`, `mnbackup_failures_total`,
///   `mnbackup_skipped_overlap_total`, `mnbackup_missed_slots_total`
pub fn render_prometheus(states: &[JobState]) -> String {
    type Getter = fn(&JobState) -> Option<String>;
    let metrics: &[(&str, &str, &str, Getter)] = &[
        (
            "mnbackup_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful run (0 = never).",
            |s| Some(s.last_success.map(ts).unwrap_or_else(|| "0".into())),
        ),
        (
            "mnbackup_last_run_timestamp_seconds",
            "gauge",
            "Unix time the most recent attempt started.",
            |s| s.last_start.map(ts),
        ),
        (
            "mnbackup_last_run_ok",
            "gauge",
            "1 if the most recent completed run succeeded, 0 if it failed.",
            |s| s.last_run_ok.map(|ok| u8::from(ok).to_string()),
        ),
        (
            "mnbackup_last_run_duration_seconds",
            "gauge",
            "Duration of the most recent attempt.",
            |s| s.last_duration_secs.map(|d| format!("{d:.3}")),
        ),
        (
            "mnbackup_next_run_timestamp_seconds",
            "gauge",
            "Unix time the job is next due.",
            |s| s.next_due.map(ts),
        ),
        (
            "mnbackup_consecutive_failures",
            "gauge",
            "Runs in a row that failed after all retries.",
            |s| Some(s.consecutive_failures.to_string()),
        ),
        (
            "mnbackup_running",
            "gauge",
            "1 while a run is in progress.",
            |s| Some(u8::from(s.running_since.is_some()).to_string()),
        ),
        ("mnbackup_runs_total", "counter", "Completed runs.", |s| {
            Some(s.runs_total.to_string())
        }),
        (
            "mnbackup_failures_total",
            "counter",
            "Completed runs that failed.",
            |s| Some(s.failures_total.to_string()),
        ),
        (
            "mnbackup_skipped_overlap_total",
            "counter",
            "Slots skipped because the previous run was still in progress.",
            |s| Some(s.skipped_overlap.to_string()),
        ),
        (
            "mnbackup_missed_slots_total",
            "counter",
            "Slots missed while the daemon was down.",
            |s| Some(s.missed_slots.to_string()),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in metrics {
        let lines: Vec<String> = states
            .iter()
            .filter_map(|s| {
                get(s).map(|v| {
                    format!(
                        "{name}{{mnbackup_job=\"{}\",kind=\"{}\"}} {v}\n",
                        escape_label(&s.job),
                        escape_label(&s.kind)
                    )
                })
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for l in lines {
            out.push_str(&l);
        }
    }
    out
}

/// Renders and writes the metrics file atomically (the textfile collector must never
/// see a half-written file). Use a path ending in `.prom` in the collector directory.
pub fn write_prometheus(path: &Path, states: &[JobState]) -> io::Result<()> {
    write_prometheus_with(path, states, "")
}

/// [`write_prometheus`] with `extra` (complete metric families in the text format, such as
/// the caller's repository metrics) appended.
pub fn write_prometheus_with(path: &Path, states: &[JobState], extra: &str) -> io::Result<()> {
    let mut text = render_prometheus(states);
    text.push_str(extra);
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::TzSpec;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn atomic_roundtrip_and_load_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        store.ensure_dir().unwrap();
        assert_eq!(store.load("nightly").unwrap(), None);
        let mut st = JobState::new("nightly", "snapshot");
        st.last_success = Some(utc("2026-01-01T00:00:00Z"));
        st.skipped_overlap = 3;
        store.save(&st).unwrap();
        store.save(&JobState::new("check", "verify")).unwrap();
        assert_eq!(store.load("nightly").unwrap(), Some(st.clone()));
        let all = store.load_all().unwrap();
        assert_eq!(
            all.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(),
            ["check", "nightly"]
        );
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
        // Corrupt file gives an actionable error.
        fs::write(store.path_for("bad"), "{not json").unwrap();
        let e = store.load("bad").unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("mv "), "{e}");
        // Unknown fields are ignored, missing ones default.
        fs::write(store.path_for("old"), r#"{"job":"old","future":1}"#).unwrap();
        assert_eq!(store.load("old").unwrap().unwrap().job, "old");
    }

    #[test]
    fn health_exit_codes() {
        let now = utc("2026-01-02T12:00:00Z");
        let max = Duration::hours(24);
        let mut st = JobState::new("j", "snapshot");
        assert_eq!(health(None, now, max), Health::Never);
        assert_eq!(health(Some(&st), now, max).exit_code(), 2);

        st.last_success = Some(utc("2026-01-02T00:00:00Z"));
        st.last_run_ok = Some(true);
        assert_eq!(health(Some(&st), now, max), Health::Fresh);
        assert_eq!(health(Some(&st), now, max).exit_code(), 0);

        st.last_success = Some(utc("2026-01-01T00:00:00Z"));
        let h = health(Some(&st), now, max);
        assert_eq!(h.label(), "stale");
        assert_eq!(h.exit_code(), 1);
        assert!(h.describe().contains("systemctl status mnbackup"));

        st.consecutive_failures = 2;
        st.last_run_ok = Some(false);
        st.last_error = Some("pool not mounted".into());
        let h = health(Some(&st), now, max);
        assert_eq!(h.exit_code(), 2);
        assert!(h.describe().contains("pool not mounted"));

        // A last success in the future (recorded while the clock was ahead) is stale.
        let mut ahead = JobState::new("j", "snapshot");
        ahead.last_success = Some(utc("2026-01-02T15:00:00Z"));
        ahead.last_run_ok = Some(true);
        let ha = health(Some(&ahead), now, max);
        assert_eq!((ha.label(), ha.exit_code()), ("stale", 1));
        assert!(ha.describe().contains("in the future"), "{}", ha.describe());

        let mut never_ok = JobState::new("j", "snapshot");
        never_ok.last_run_ok = Some(false);
        assert_eq!(health(Some(&never_ok), now, max).label(), "failing");

        assert_eq!(
            worst_exit_code(&[Health::Fresh, Health::Never, h.clone()]),
            2
        );
        assert_eq!(worst_exit_code(&[]), 0);
    }

    #[test]
    fn job_status_loads_and_evaluates() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let sched = Schedule::parse("0 0,12 * * *", TzSpec::parse("UTC").unwrap()).unwrap();
        let now = utc("2026-01-02T05:00:00Z");
        let s = job_status(&store, "nightly", &sched, now, None).unwrap();
        assert_eq!(s.health, Health::Never);
        assert_eq!(s.max_age, Duration::hours(13));
        assert_eq!(s.next_run, Some(utc("2026-01-02T12:00:00Z")));
        let mut st = JobState::new("nightly", "snapshot");
        st.last_success = Some(utc("2026-01-02T00:10:00Z"));
        st.last_run_ok = Some(true);
        store.save(&st).unwrap();
        let s = job_status(&store, "nightly", &sched, now, None).unwrap();
        assert_eq!(s.health.exit_code(), 0);
        let s = job_status(&store, "nightly", &sched, now, Some(Duration::hours(1))).unwrap();
        assert_eq!(s.health.exit_code(), 1);
    }

    #[test]
    fn default_max_age_flags_one_missed_slot() {
        let tz = TzSpec::parse("UTC").unwrap();
        let now = utc("2026-01-01T05:00:00Z");
        let s = Schedule::parse("0 0,12 * * *", tz.clone()).unwrap();
        assert_eq!(default_max_age(&s, now), Duration::hours(13));
        let s = Schedule::parse("@hourly", tz.clone()).unwrap();
        assert_eq!(default_max_age(&s, now), Duration::minutes(75));
        let s = Schedule::parse("0 1 * * 1-5", tz.clone()).unwrap();
        assert_eq!(
            default_max_age(&s, now),
            Duration::days(3) + Duration::hours(1)
        );
        // A twice-daily job whose 12:00 run was missed: last success 00:40, now 13:41.
        let s = Schedule::parse("0 0,12 * * *", tz).unwrap();
        let mut st = JobState::new("j", "snapshot");
        st.last_success = Some(utc("2026-01-01T00:40:00Z"));
        st.last_run_ok = Some(true);
        let max = default_max_age(&s, now);
        assert_eq!(
            health(Some(&st), utc("2026-01-01T12:39:00Z"), max),
            Health::Fresh
        );
        assert_eq!(
            health(Some(&st), utc("2026-01-01T13:41:00Z"), max).label(),
            "stale"
        );
    }

    #[test]
    fn a_new_installation_is_pending_until_its_first_slot_is_overdue() {
        let max = Duration::hours(13);
        let mut st = JobState::new("j", "snapshot");
        st.next_due = Some(utc("2026-01-02T12:00:00Z"));
        let h = health(Some(&st), utc("2026-01-02T05:00:00Z"), max);
        assert_eq!((h.label(), h.exit_code()), ("pending", 0));
        let h = health(Some(&st), utc("2026-01-03T02:00:00Z"), max);
        assert_eq!((h.label(), h.exit_code()), ("never", 2));
        // Daemon not running (no next run planned): never.
        st.next_due = None;
        assert_eq!(
            health(Some(&st), utc("2026-01-02T05:00:00Z"), max),
            Health::Never
        );
    }

    #[test]
    fn prometheus_rendering() {
        let mut a = JobState::new("nightly", "snapshot");
        a.last_success = Some(utc("2026-01-01T00:00:00Z"));
        a.last_start = Some(utc("2026-01-01T00:00:00Z"));
        a.last_run_ok = Some(true);
        a.last_duration_secs = Some(12.5);
        a.skipped_overlap = 1;
        let b = JobState::new("we\"ird", "verify");
        let text = render_prometheus(&[a, b]);
        assert!(text.contains("# TYPE mnbackup_last_success_timestamp_seconds gauge\n"));
        assert!(text.contains(
            "mnbackup_last_success_timestamp_seconds{mnbackup_job=\"nightly\",kind=\"snapshot\"} 1767225600.000\n"
        ));
        assert!(text.contains(
            "mnbackup_last_success_timestamp_seconds{mnbackup_job=\"we\\\"ird\",kind=\"verify\"} 0\n"
        ));
        assert!(
            text.contains("mnbackup_last_run_ok{mnbackup_job=\"nightly\",kind=\"snapshot\"} 1\n")
        );
        assert!(!text.contains("mnbackup_last_run_ok{mnbackup_job=\"we"));
        assert!(text.contains(
            "mnbackup_skipped_overlap_total{mnbackup_job=\"nightly\",kind=\"snapshot\"} 1\n"
        ));
        assert_eq!(text.matches("# TYPE mnbackup_last_run_ok").count(), 1);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mnbackup.prom");
        write_prometheus(&p, &[JobState::new("x", "snapshot")]).unwrap();
        assert!(fs::read_to_string(&p)
            .unwrap()
            .contains("{mnbackup_job=\"x\","));
        assert!(!fs::read_to_string(&p).unwrap().contains("{job="));
    }

    /// Issue 14 item 8: 4 jobs of one daemon writing the textfile at once, 100 times each,
    /// never collide on a temporary name.
    #[test]
    fn concurrent_textfile_writes_never_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mnbackup.prom");
        let states: Vec<JobState> = (0..4)
            .map(|i| JobState::new(&format!("job{i}"), "snapshot"))
            .collect();
        let errors: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    sc.spawn(|| {
                        (0..100)
                            .filter(|_| write_prometheus(&p, &states).is_err())
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(errors, 0);
        assert_eq!(fs::read_to_string(&p).unwrap(), render_prometheus(&states));
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind: {left:?}");
    }
}
