//! The drill: prove a snapshot restores, without touching the live data. Every component that
//! has a drill loads its part of the snapshot into scratch names (the restore's load-and-prove,
//! see `Component::drill`; MariaDB: `mnbackup_drill_D`, no accounts, grants or events) and
//! drops them again, also when something failed.

use anyhow::Result;
use mnbackup_restore::report::RestoreReport;

use super::progress::Progress;
use super::Env;
use crate::engines::{RestoreEnv, RestoreRequest};
use crate::error::{usage, EXIT_MISMATCH};

/// Drill snapshot `spec`; the report's exit code is 0 (every table matches) or 9.
/// Each component's drill is a step of `progress`.
pub fn run(
    env: &Env,
    req: &RestoreRequest,
    spec: &str,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let t0 = std::time::Instant::now();
    let started = chrono::Utc::now();
    let repo = &env.repo;
    let _lock = repo.lock(false, "verify --drill", env.lock_wait)?;
    let id = repo.resolve(spec)?;
    let m = repo.load_manifest(&id)?;
    let renv = RestoreEnv {
        config: env.config,
        repo,
        manifest: &m,
        req,
    };
    let mut report = RestoreReport {
        snapshot: id.clone(),
        kind: "drill".into(),
        target: "-".into(),
        started: started.to_rfc3339(),
        ..Default::default()
    };
    let mut drilled = false;
    for c in env.registry.iter() {
        if c.has_data(&m) {
            progress.phase(&format!("drill: {}", c.name()), None);
        }
        let Some(r) = c.drill(&renv, &mut report) else {
            continue;
        };
        drilled = true;
        if let Err(e) = r {
            let warnings: String = report
                .warnings
                .iter()
                .map(|w| format!("; warning: {w}"))
                .collect();
            return Err(e.context(format!(
                "the drill of snapshot {id} could not complete: this snapshot's {} data did not \
                 load{warnings}",
                c.title()
            )));
        }
    }
    if !drilled {
        return Err(usage(format!(
            "snapshot {id} has nothing to drill: none of its components has a drill (MariaDB \
             has one; `mnbackup show {id}` lists its items)"
        )));
    }
    report.tally();
    report.duration_ms = t0.elapsed().as_millis() as u64;
    report.exit_code = if report.tables_mismatched > 0 || report.exit_code == EXIT_MISMATCH {
        EXIT_MISMATCH
    } else {
        0
    };
    report.ok = report.exit_code == 0;
    Ok(report)
}
