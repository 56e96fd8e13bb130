//! `mnbackup-scheduler`: *when* mnbackup runs.
//!
//! * [`schedule`] — crontab expressions evaluated in a time zone with cronie-style DST rules.
//! * [`clock`] — injectable time source ([`clock::SystemClock`], [`clock::ManualClock`]).
//! * [`daemon`] — the long-running loop: catch-up, no overlap, retries, graceful shutdown.
//! * [`state`] — per-job JSON state files, health checks and Prometheus textfile metrics.
//! * [`retention`] — restic-`forget`-style keep policies.
//! * [`crontab`] — import of the operator's existing rsync / `zstack-ctl dump_mysql` lines.
//! * [`systemd`] — rendering of the `mnbackup daemon` service unit.
//!
//! This crate does not know how to take a backup; the caller plugs that in through
//! [`daemon::Job`].

#![warn(missing_docs)]

pub mod clock;
pub mod crontab;
pub mod daemon;
pub mod durable;
pub mod retention;
pub mod schedule;
pub mod state;
pub mod systemd;

pub use clock::{Clock, ManualClock, SystemClock, Wake};
pub use daemon::{
    CancelToken, Daemon, DaemonConfig, DaemonError, DaemonReport, Job, JobContext, JobError,
    JobOutcome, JobSpec, RetryPolicy,
};
pub use retention::{apply_policy, ForgetPlan, KeepPolicy, KeepReason, SnapshotRef};
pub use schedule::{Schedule, ScheduleError, TzSpec};
pub use state::{health, job_status, Health, JobState, JobStatus, StateStore};
