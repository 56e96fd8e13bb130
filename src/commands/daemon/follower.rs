//! The daemon's continuous binlog follower (a `binlog` job without `--once`): a thread of its
//! own running [`crate::ops::binlog_follow::follow`] until shutdown, and the health check the
//! job's scheduled runs perform.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use mnbackup_scheduler::JobError;
use tracing::{info, warn};

use super::metrics::MetricsCache;
use super::Ctx;
use crate::ops::binlog_follow::{follow, FollowLog, FollowStatus};

/// The running follower.
pub(super) struct Follower {
    pub(super) stop: tokio::sync::watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Follower {
    /// Ask the follower to stop (it stores its open segment) and wait up to `timeout`.
    pub(super) fn stop_and_wait(self, timeout: Duration) {
        let _ = self.stop.send(true);
        if self.done.recv_timeout(timeout).is_err() {
            warn!(
                "the binlog follower did not stop within {} s; its open segment is shipped by \
                 the next start",
                timeout.as_secs()
            );
        } else {
            info!("the binlog follower stopped");
        }
    }
}

struct TracingLog;

impl FollowLog for TracingLog {
    fn event(&self, what: &str) {
        info!(job = "binlog", "{what}");
    }
}

/// Start the follower thread; its status is shared through the metrics cache.
pub(super) fn spawn(ctx: &Ctx, metrics: &Arc<MetricsCache>) -> anyhow::Result<Follower> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (done_tx, done) = std::sync::mpsc::channel();
    let status = metrics
        .follower
        .get_or_init(|| Arc::new(Mutex::new(FollowStatus::default())))
        .clone();
    let ctx = Ctx {
        repo_path: ctx.repo_path.clone(),
        config_path: ctx.config_path.clone(),
        config: ctx.config.clone(),
        json: false,
        quiet: true,
        verbose: ctx.verbose,
    };
    std::thread::Builder::new()
        .name("binlog-follower".into())
        .spawn(move || {
            let registry = crate::engines::default_registry();
            while !*rx.borrow() {
                // The pool may not be mounted yet: retry opening the repository.
                let r = ctx
                    .ops_env(&registry)
                    .and_then(|env| follow(&env, rx.clone(), &status, &TracingLog));
                match r {
                    Ok(()) => break,
                    Err(e) => {
                        warn!(job = "binlog", "binlog follower: {e:#}; retrying in 10 s");
                        status.lock().unwrap_or_else(|p| p.into_inner()).last_error =
                            Some(format!("{e:#}"));
                        for _ in 0..100 {
                            if *rx.borrow() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            }
            let _ = done_tx.send(());
        })?;
    Ok(Follower { stop: tx, done })
}

/// The scheduled run of a following `binlog` job: fails when the newest shipped event is older
/// than `[binlog] max_lag_seconds` (or nothing was shipped yet), naming the follower's last
/// error.
pub(super) fn health(ctx: &Ctx, metrics: &MetricsCache) -> Result<String, JobError> {
    let max_lag = ctx
        .config
        .binlog
        .as_ref()
        .map(|b| b.max_lag_seconds)
        .unwrap_or_else(|| crate::config::BinlogConfig::default().max_lag_seconds);
    let st = metrics
        .follower
        .get()
        .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_default();
    let newest = metrics.binlog_newest().max(st.newest_event);
    let why = st
        .last_error
        .as_deref()
        .map(|e| format!(" (follower: {e})"))
        .unwrap_or_default();
    match newest {
        None => Err(JobError::permanent(format!("no binlog shipped yet{why}"))),
        Some(t) => {
            let age = (Utc::now() - t).num_seconds();
            if age > max_lag as i64 {
                Err(JobError::permanent(format!(
                    "the newest shipped binlog event is {age} s old, over max_lag_seconds = \
                     {max_lag}{why}"
                )))
            } else {
                Ok(format!(
                    "binlog follower {}: {} segments since start, newest event {age} s old",
                    if st.connected {
                        "following"
                    } else {
                        "reconnecting"
                    },
                    st.segments
                ))
            }
        }
    }
}
