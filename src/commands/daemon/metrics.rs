//! The repository metrics of the Prometheus textfile (`[daemon] prometheus_textfile`).

use chrono::Utc;

use super::Ctx;
use anyhow::Result;
use tracing::warn;

/// Repository metrics for the Prometheus textfile, refreshed after every run (reading the
/// repository is too slow to do on every state change).
#[derive(Default)]
pub(super) struct MetricsCache {
    /// Only with `[daemon] prometheus_textfile`.
    pub(super) enabled: bool,
    /// The repository metrics text, and when the last verify ended and whether it was sound.
    pub(super) inner: std::sync::Mutex<(String, Option<VerifyResult>)>,
}

type VerifyResult = (chrono::DateTime<Utc>, bool);

impl MetricsCache {
    pub(super) fn set_verify(&self, at: chrono::DateTime<Utc>, ok: bool) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1 = Some((at, ok));
    }

    pub(super) fn refresh(&self, ctx: &Ctx) {
        if !self.enabled {
            return;
        }
        let text = repo_metrics(ctx);
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0 = text;
    }

    pub(super) fn render(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = g.0.clone();
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
