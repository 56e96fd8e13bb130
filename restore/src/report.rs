//! What a restore (or a drill) did: per step the time, items, rows and bytes; per table the
//! fingerprint check; warnings and what was changed besides the load. Printed as text or, with
//! `--json`, as JSON.

use std::fmt;

use serde::Serialize;

use crate::plan::{human_bytes, Check};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Done,
    /// Done by an earlier, interrupted run (from the journal).
    AlreadyDone,
    /// Not run (by an option, or nothing to do).
    Skipped,
    Failed,
}

/// One step of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub status: StepStatus,
    pub items: usize,
    pub rows: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl StepReport {
    /// A new report line.
    pub fn new(step: impl Into<String>, status: StepStatus) -> StepReport {
        StepReport {
            step: step.into(),
            status,
            items: 0,
            rows: 0,
            bytes: 0,
            duration_ms: 0,
            note: None,
        }
    }

    /// With a note.
    pub fn note(mut self, n: impl Into<String>) -> StepReport {
        self.note = Some(n.into());
        self
    }
}

/// The fingerprint check of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    /// The table in the snapshot (`db.table`).
    pub table: String,
    /// Where it was restored (`db.table` after renames).
    pub target: String,
    pub expected_rows: u64,
    pub expected_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub ok: bool,
    /// Why the table could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A post-restore hook and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct HookReport {
    pub command: String,
    pub exit_code: Option<i32>,
    pub ok: bool,
    /// The last lines of its output.
    pub output: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RestoreReport {
    pub snapshot: String,
    /// `restore` or `drill`.
    pub kind: String,
    pub target: String,
    pub started: String,
    pub duration_ms: u64,
    pub steps: Vec<StepReport>,
    pub checks: Vec<Check>,
    pub fingerprints: Vec<TableCheck>,
    pub tables_ok: usize,
    pub tables_mismatched: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_snapshot: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Facts worth showing (e.g. the Flyway schema version of the drill).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub ok: bool,
    pub exit_code: i32,
}

impl RestoreReport {
    /// Count the fingerprint results.
    pub fn tally(&mut self) {
        self.tables_ok = self.fingerprints.iter().filter(|t| t.ok).count();
        self.tables_mismatched = self.fingerprints.len() - self.tables_ok;
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of snapshot {} into {}, started {}, took {}",
            if self.kind == "drill" {
                "Drill"
            } else {
                "Restore"
            },
            self.snapshot,
            self.target,
            self.started,
            secs(self.duration_ms)
        )?;
        if let Some(s) = &self.safety_snapshot {
            writeln!(f, "safety snapshot of what was replaced: {s}")?;
        }
        for c in &self.checks {
            if c.status != crate::plan::CheckStatus::Ok {
                writeln!(f, "preflight {}: {:?}: {}", c.name, c.status, c.message)?;
            }
        }
        writeln!(
            f,
            "{:<34} {:>13} {:>8} {:>10} {:>11} {:>8}",
            "step", "status", "items", "rows", "bytes", "time"
        )?;
        for s in &self.steps {
            let status = match s.status {
                StepStatus::Done => "done",
                StepStatus::AlreadyDone => "already done",
                StepStatus::Skipped => "skipped",
                StepStatus::Failed => "FAILED",
            };
            writeln!(
                f,
                "{:<34} {:>13} {:>8} {:>10} {:>11} {:>8}",
                s.step,
                status,
                s.items,
                s.rows,
                human_bytes(s.bytes),
                secs(s.duration_ms)
            )?;
            if let Some(n) = &s.note {
                writeln!(f, "    {n}")?;
            }
        }
        if !self.fingerprints.is_empty() {
            writeln!(
                f,
                "row fingerprints: {} of {} tables match the snapshot",
                self.tables_ok,
                self.fingerprints.len()
            )?;
            for t in self.fingerprints.iter().filter(|t| !t.ok) {
                match &t.error {
                    Some(e) => writeln!(f, "  MISMATCH {} (restored as {}): {e}", t.table, t.target)?,
                    None => writeln!(
                        f,
                        "  MISMATCH {} (restored as {}): {} rows, hash {} — the snapshot recorded {} rows, hash {}",
                        t.table,
                        t.target,
                        t.rows.unwrap_or(0),
                        t.hash.as_deref().unwrap_or("-"),
                        t.expected_rows,
                        t.expected_hash
                    )?,
                }
            }
        }
        for c in &self.changes {
            writeln!(f, "changed: {c}")?;
        }
        for h in &self.hooks {
            writeln!(
                f,
                "hook `{}`: {}",
                h.command,
                if h.ok {
                    "ok".to_string()
                } else {
                    format!("FAILED (exit {:?}): {}", h.exit_code, h.output.trim())
                }
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_gives_each_steps_time() {
        let mut data = StepReport::new("mariadb data", StepStatus::Done);
        data.duration_ms = 12_340;
        data.rows = 1000;
        let mut schema = StepReport::new("mariadb schema", StepStatus::Done);
        schema.duration_ms = 2_060;
        let r = RestoreReport {
            snapshot: "s".into(),
            kind: "restore".into(),
            duration_ms: 15_000,
            steps: vec![schema, data, StepReport::new("files", StepStatus::Skipped)],
            ..Default::default()
        };
        let text = r.to_string();
        let line = |step: &str| {
            text.lines()
                .find(|l| l.starts_with(step))
                .unwrap_or_else(|| panic!("no line for {step}: {text}"))
                .to_string()
        };
        assert!(
            text.lines()
                .any(|l| l.starts_with("step") && l.ends_with("time")),
            "{text}"
        );
        assert!(line("mariadb schema").ends_with(" 2.1s"), "{text}");
        assert!(line("mariadb data").ends_with(" 12.3s"), "{text}");
        assert!(line("files").ends_with(" 0.0s"), "{text}");
        assert!(text.starts_with("Restore of snapshot s into "), "{text}");
        assert!(
            text.lines().next().unwrap().ends_with("took 15.0s"),
            "{text}"
        );
    }
}
