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

/// Run the drill of snapshot `spec` (exit code as in the module docs); with `until`, the base
/// the point-in-time plan chooses, then the binlog replayed into the scratch databases.
pub fn run(ctx: &Ctx, spec: &str, target: &TargetArgs, until: Option<&str>) -> Result<i32> {
    let registry = crate::engines::default_registry();
    let env = ctx.ops_env(&registry)?;
    let mut req = RestoreRequest {
        mariadb_target: Some(target.config(ctx.config.mariadb.as_ref())),
        ..Default::default()
    };
    let mut spec = spec.to_string();
    if let Some(u) = super::binlog::parse_until(until, None)? {
        if spec != "latest" {
            return Err(crate::error::usage(
                "verify --drill SNAPSHOT --until: with --until the base snapshot is chosen by \
                 the point-in-time plan; give --drill without a snapshot",
            ));
        }
        let plan = super::binlog::plan(ctx, &u)?;
        spec = plan.base.id.clone();
        let params = target.config(ctx.config.mariadb.as_ref()).resolve()?;
        let base = crate::ops::binlog::ReplayTarget {
            client_args: crate::ops::binlog::client_args(&params),
            password: params.password.clone(),
            databases: None,
            rename: Vec::new(),
            progress: None,
            resume_from: None,
        };
        let repo = env.repo.clone();
        req.after_drill_load = Some(crate::engines::DrillHook(std::sync::Arc::new(
            move |renames: &std::collections::BTreeMap<String, String>| {
                let t = crate::ops::binlog::ReplayTarget {
                    databases: Some(renames.keys().cloned().collect()),
                    rename: renames
                        .iter()
                        .map(|(a, b)| (a.clone(), b.clone()))
                        .collect(),
                    ..base.clone()
                };
                let rep = crate::ops::binlog::replay_plan(&repo, &plan, &t)
                    .context("replaying the binlog into the scratch databases")?;
                Ok(format!(
                    "point in time: {}",
                    super::binlog::replay_text(&rep).trim_end()
                ))
            },
        )));
    }
    let progress = crate::ui::StepProgress::new(ctx.quiet || ctx.json, ctx.json);
    let report = crate::ops::drill::run(&env, &req, &spec, &progress);
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
