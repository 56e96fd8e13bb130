//! The repository metrics of the Prometheus textfile (`[daemon] prometheus_textfile`).

use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::Ctx;
use anyhow::Result;
use tracing::warn;

use crate::ops::binlog_follow::FollowStatus;

/// Repository metrics for the Prometheus textfile, refreshed after every run (reading the
/// repository is too slow to do on every state change).
#[derive(Default)]
pub(super) struct MetricsCache {
    /// Only with `[daemon] prometheus_textfile`.
    pub(super) enabled: bool,
    /// The repository metrics text, and when the last verify ended and whether it was sound.
    pub(super) inner: std::sync::Mutex<(String, Option<VerifyResult>)>,
    /// With `[binlog]`: the newest shipped event the repository holds (at the last refresh)
    /// and `max_lag_seconds`.
    pub(super) binlog: std::sync::Mutex<Option<BinlogHealth>>,
    /// The continuous follower's status, when the daemon runs one.
    pub(super) follower: std::sync::OnceLock<Arc<Mutex<FollowStatus>>>,
}

/// What the binlog metrics need between refreshes.
#[derive(Clone, Copy)]
pub(super) struct BinlogHealth {
    pub(super) newest: Option<chrono::DateTime<Utc>>,
    pub(super) max_lag_seconds: u64,
}

type VerifyResult = (chrono::DateTime<Utc>, bool);

impl MetricsCache {
    pub(super) fn set_verify(&self, at: chrono::DateTime<Utc>, ok: bool) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1 = Some((at, ok));
    }

    /// The newest shipped event: the repository's at the last refresh, or the follower's
    /// newest commit, whichever is newer.
    pub(super) fn binlog_newest(&self) -> Option<chrono::DateTime<Utc>> {
        let stored = self
            .binlog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .and_then(|b| b.newest);
        let followed = self
            .follower
            .get()
            .and_then(|f| f.lock().unwrap_or_else(|p| p.into_inner()).newest_event);
        stored.max(followed)
    }

    pub(super) fn refresh(&self, ctx: &Ctx) {
        if let Some(b) = &ctx.config.binlog {
            let newest = ctx
                .open_repo()
                .and_then(|r| crate::ops::binlog::load_series(&r))
                .map(|s| s.newest_event());
            match newest {
                Ok(newest) => {
                    *self.binlog.lock().unwrap_or_else(|p| p.into_inner()) = Some(BinlogHealth {
                        newest,
                        max_lag_seconds: b.max_lag_seconds,
                    })
                }
                Err(e) => warn!("binlog metrics not updated: {e:#}"),
            }
        }
        if !self.enabled {
            return;
        }
        let text = repo_metrics(ctx);
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0 = text;
    }

    pub(super) fn render(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = g.0.clone();
        let health = *self.binlog.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = health {
            binlog_metrics(
                &mut out,
                self.binlog_newest(),
                h.max_lag_seconds,
                Utc::now(),
            );
        }
        if let Some((at, ok)) = g.1 {
            family(
                &mut out,
                "mnbackup_verify_last_ok",
                "1 if the daemon's last verify found the repository sound, 0 if it found problems.",
                u8::from(ok),
            );
            family(
                &mut out,
                "mnbackup_verify_last_timestamp_seconds",
                "Unix time the daemon's last verify ended.",
                at.timestamp(),
            );
        }
        out
    }
}

/// The binlog's RPO: the newest shipped event's time and age (at the time of writing) and the
/// alarm when the age is over `max_lag_seconds` or nothing was shipped.
fn binlog_metrics(
    out: &mut String,
    newest: Option<chrono::DateTime<Utc>>,
    max_lag_seconds: u64,
    now: chrono::DateTime<Utc>,
) {
    family(
        out,
        "mnbackup_binlog_newest_event_timestamp_seconds",
        "Unix time of the newest shipped binlog event (0 = none); time() minus this is the RPO.",
        newest.map(|t| t.timestamp()).unwrap_or(0),
    );
    let age = newest.map(|t| (now - t).num_seconds().max(0));
    if let Some(a) = age {
        family(
            out,
            "mnbackup_binlog_lag_seconds",
            "Age of the newest shipped binlog event when this file was written (the RPO).",
            a,
        );
    }
    family(
        out,
        "mnbackup_binlog_max_lag_seconds",
        "[binlog] max_lag_seconds: the RPO over which the alarm is raised.",
        max_lag_seconds,
    );
    family(
        out,
        "mnbackup_binlog_lag_alarm",
        "1 if the newest shipped binlog event is older than max_lag_seconds (or none was shipped).",
        u8::from(age.is_none_or(|a| a > max_lag_seconds as i64)),
    );
}

/// Appends one unlabelled gauge.
pub(super) fn family(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
    ));
}

/// The repository's metrics: whether it can be read, snapshots, stored bytes, the newest
/// snapshot's completeness and time, the newest complete snapshot's time.
pub(super) fn repo_metrics(ctx: &Ctx) -> String {
    let mut out = String::new();
    let read = (|| -> Result<_> {
        let repo = ctx.open_repo()?;
        let all = repo.load_all()?;
        let stored: u64 = repo.all_objects()?.iter().map(|(_, n)| n).sum();
        Ok((all, stored))
    })();
    let (all, stored) = match read {
        Ok(v) => v,
        Err(e) => {
            warn!("repository metrics not updated: {e:#}");
            family(
                &mut out,
                "mnbackup_repository_readable",
                "1 if the daemon could read the repository after its last run.",
                0,
            );
            return out;
        }
    };
    family(
        &mut out,
        "mnbackup_repository_readable",
        "1 if the daemon could read the repository after its last run.",
        1,
    );
    let good: Vec<_> = all.iter().filter_map(|r| r.as_ref().ok()).collect();
    family(
        &mut out,
        "mnbackup_snapshots",
        "Snapshots in the repository.",
        all.len(),
    );
    family(
        &mut out,
        "mnbackup_snapshots_incomplete",
        "Snapshots in the repository that are incomplete (have gaps).",
        good.iter().filter(|m| !m.complete).count(),
    );
    family(
        &mut out,
        "mnbackup_snapshots_damaged",
        "Snapshot manifests that cannot be read.",
        all.len() - good.len(),
    );
    family(
        &mut out,
        "mnbackup_repository_bytes",
        "Bytes of all stored objects.",
        stored,
    );
    if let Some(m) = good.last() {
        family(
            &mut out,
            "mnbackup_snapshot_complete",
            "1 if the newest snapshot is complete, 0 if it has gaps.",
            u8::from(m.complete),
        );
        family(
            &mut out,
            "mnbackup_newest_snapshot_timestamp_seconds",
            "Unix time the newest snapshot was taken.",
            m.time.timestamp(),
        );
        family(
            &mut out,
            "mnbackup_newest_snapshot_logical_bytes",
            "Plain size of the newest snapshot's items.",
            m.stats.logical_bytes,
        );
    }
    family(
        &mut out,
        "mnbackup_newest_complete_snapshot_timestamp_seconds",
        "Unix time the newest complete snapshot was taken (0 = none).",
        good.iter()
            .rev()
            .find(|m| m.complete)
            .map(|m| m.time.timestamp())
            .unwrap_or(0),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_metrics_report_age_and_alarm() {
        let now = Utc::now();
        let mut out = String::new();
        binlog_metrics(
            &mut out,
            Some(now - chrono::Duration::seconds(42)),
            300,
            now,
        );
        assert!(out.contains("mnbackup_binlog_lag_seconds 42\n"), "{out}");
        assert!(out.contains("mnbackup_binlog_lag_alarm 0\n"), "{out}");
        assert!(out.contains(&format!(
            "mnbackup_binlog_newest_event_timestamp_seconds {}\n",
            (now - chrono::Duration::seconds(42)).timestamp()
        )));
        let mut out = String::new();
        binlog_metrics(
            &mut out,
            Some(now - chrono::Duration::seconds(301)),
            300,
            now,
        );
        assert!(out.contains("mnbackup_binlog_lag_alarm 1\n"), "{out}");
        let mut out = String::new();
        binlog_metrics(&mut out, None, 300, now);
        assert!(out.contains("mnbackup_binlog_lag_alarm 1\n"), "{out}");
        assert!(!out.contains("mnbackup_binlog_lag_seconds"), "{out}");
    }
}
