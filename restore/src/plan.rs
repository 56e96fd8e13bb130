//! A restore plan: the steps (what goes where, sizes, an estimate) and the preflight checks.
//!
//! What each engine loads is its own business (`mnbackup::engines`); this module only holds the
//! engine-independent shape of a plan.
//!
//! The restore plan shown by `mnbackup restore --plan` is a list of [`PlanStep`]s (what goes
//! where, sizes, an estimate) and [`Check`]s (the preflight results); nothing is changed to make
//! it.

use serde::Serialize;

/// Conservative load rate of SQL items into MariaDB (bytes/s): an old disk, InnoDB with
/// secondary indexes, a few connections.
pub const SQL_LOAD_RATE: u64 = 8 << 20;
/// Conservative rate of reading a table back for its fingerprint (bytes/s of dump text).
pub const FINGERPRINT_RATE: u64 = 40 << 20;
/// Conservative rate of writing files and SSTables from the pool (bytes/s; NFS, zstd, fsync).
pub const FILE_RATE: u64 = 40 << 20;

/// Seconds to move `bytes` at `rate` bytes/s (at least 1 when there is anything).
pub fn estimate_secs(bytes: u64, rate: u64) -> u64 {
    if bytes == 0 {
        0
    } else {
        bytes.div_ceil(rate.max(1)).max(1)
    }
}

/// One step of a restore plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    /// Step name (`mariadb accounts`, `mariadb data`, `files`, …).
    pub step: String,
    /// What is loaded or placed.
    pub what: String,
    /// Where it goes.
    pub destination: String,
    pub items: usize,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Conservative estimate of the step's duration.
    pub estimate_secs: u64,
    /// Skipped (by an option, or already done according to the journal), and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The outcome of one preflight check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    /// Not blocking, but the operator should read it.
    Warn,
    /// Blocks the restore (unless `--force` where the message says so).
    Fail,
    /// Not run (not applicable, or disabled).
    Skipped,
}

/// One preflight check and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub message: String,
}

impl Check {
    pub fn new(name: &str, status: CheckStatus, message: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            status,
            message: message.into(),
        }
    }
}

/// The whole plan: steps in order, preflight checks, totals.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub snapshot: String,
    pub steps: Vec<PlanStep>,
    pub checks: Vec<Check>,
    pub bytes: u64,
    pub estimate_secs: u64,
    /// Whether the restore would proceed (no failed check).
    pub would_proceed: bool,
}

impl RestorePlan {
    /// Assemble and total.
    pub fn new(snapshot: String, steps: Vec<PlanStep>, checks: Vec<Check>) -> RestorePlan {
        let active = steps.iter().filter(|s| s.skipped.is_none());
        let bytes = active.clone().map(|s| s.bytes).sum();
        let estimate_secs = active.map(|s| s.estimate_secs).sum();
        let would_proceed = !checks.iter().any(|c| c.status == CheckStatus::Fail);
        RestorePlan {
            snapshot,
            steps,
            checks,
            bytes,
            estimate_secs,
            would_proceed,
        }
    }
}

/// Human-readable byte count (binary units).
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < U.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

/// `1h02m03s` style duration.
pub fn human_secs(s: u64) -> String {
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl std::fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Restore plan for snapshot {} (nothing has been changed)",
            self.snapshot
        )?;
        writeln!(f)?;
        writeln!(f, "Steps, in order:")?;
        for (i, s) in self.steps.iter().enumerate() {
            let rows = s.rows.map(|r| format!(", {r} rows")).unwrap_or_default();
            write!(
                f,
                "  {:>2}. {:<22} {} -> {} ({} items, {}{rows}",
                i + 1,
                s.step,
                s.what,
                s.destination,
                s.items,
                human_bytes(s.bytes)
            )?;
            match &s.skipped {
                Some(why) => writeln!(f, "): SKIPPED, {why}")?,
                None => writeln!(f, ", ~{})", human_secs(s.estimate_secs))?,
            }
        }
        writeln!(f)?;
        writeln!(f, "Preflight checks:")?;
        for c in &self.checks {
            let tag = match c.status {
                CheckStatus::Ok => "ok  ",
                CheckStatus::Warn => "WARN",
                CheckStatus::Fail => "FAIL",
                CheckStatus::Skipped => "skip",
            };
            writeln!(f, "  [{tag}] {}: {}", c.name, c.message)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Total {} to restore, estimated {} at conservative rates ({}/s SQL load, {}/s files).",
            human_bytes(self.bytes),
            human_secs(self.estimate_secs),
            human_bytes(SQL_LOAD_RATE),
            human_bytes(FILE_RATE)
        )?;
        if self.would_proceed {
            writeln!(
                f,
                "The restore would proceed: run the same command without --plan."
            )
        } else {
            writeln!(
                f,
                "The restore would be REFUSED: fix the failed checks above (their messages say how)."
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates() {
        assert_eq!(estimate_secs(1, SQL_LOAD_RATE), 1);
        assert_eq!(estimate_secs(0, SQL_LOAD_RATE), 0);
        assert_eq!(human_secs(3723), "1h02m03s");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
