//! `mnbackup verify --drill [SNAPSHOT]`: prove a snapshot's MariaDB data restores, without
//! touching the live databases.
//!
//! Every database `D` of the snapshot is loaded into a scratch database `mnbackup_drill_D` on the
//! `[mariadb]` server (or `--target-*`) with the restore's loader (no accounts, grants or
//! events: scratch copies must not change users or run scheduled jobs), every table's row
//! fingerprint is compared with the one recorded at dump time, ZStack's Flyway table
//! `zstack.schema_version` must be present (its fingerprint is among the compared ones) and its
//! last successful version is reported; then the scratch databases are dropped, also when
//! something failed. Scratch databases left by an earlier, killed drill are dropped first.
//!
//! Exit codes: 0 every table matches; 9 a table does not match (or `schema_version` is missing);
//! 5 an item of the snapshot is damaged; 1 the drill could not run.

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::TargetArgs;
use crate::engines::RestoreRequest;

/// Run the drill of snapshot `spec` (exit code as in the module docs).
pub fn run(ctx: &Ctx, spec: &str, target: &TargetArgs) -> Result<i32> {
    let registry = crate::engines::default_registry();
    let env = ctx.ops_env(&registry)?;
    let req = RestoreRequest {
        mariadb_target: Some(target.config(ctx.config.mariadb.as_ref())),
        ..Default::default()
    };
    let progress = crate::ui::StepProgress::new(ctx.quiet || ctx.json, ctx.json);
    let report = crate::ops::drill::run(&env, &req, spec, &progress);
    progress.finish();
    let report = report?;
    let id = &report.snapshot;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("rendering the report")?
        );
    } else {
        print!("{report}");
        if report.ok {
            println!(
                "drill passed: all {} tables of snapshot {id} restore with the recorded rows",
                report.tables_ok
            );
        } else {
            println!(
                "DRILL FAILED: snapshot {id} does not restore to the rows recorded when it was \
                 taken (tables above). Take a new snapshot now and drill it; keep older snapshots \
                 until one passes"
            );
        }
    }
    Ok(report.exit_code)
}
