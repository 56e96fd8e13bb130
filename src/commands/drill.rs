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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::engines::mariadb::load::{self as rm, LoadOptions, Loader};
use crate::engines::mariadb::plan::MariadbSource;
use anyhow::{Context, Result};
use mnbackup_restore::report::{RestoreReport, StepReport, StepStatus};

use super::restore::{runtime, RepoItems, TargetArgs};
use super::Ctx;
use crate::error::{usage, EXIT_MISMATCH};

/// The scratch name of a database in the drill.
pub fn scratch_name(db: &str) -> String {
    format!("mnbackup_drill_{db}")
}

/// Run the drill of snapshot `spec` (exit code as in the module docs).
pub fn run(ctx: &Ctx, spec: &str, target: &TargetArgs) -> Result<i32> {
    let t0 = Instant::now();
    let started = chrono::Utc::now();
    let repo = ctx.open_repo()?;
    let _lock = repo.lock(false, "verify --drill", ctx.lock_wait())?;
    let id = repo.resolve(spec)?;
    let m = repo.load_manifest(&id)?;
    let Some(info) = m.sources.get("mariadb") else {
        return Err(usage(format!(
            "snapshot {id} has no MariaDB data: there is nothing to drill (`mnbackup show {id}` \
             lists its items)"
        )));
    };
    let sizes: BTreeMap<String, u64> = m
        .items
        .iter()
        .filter(|i| i.name.starts_with("mariadb/"))
        .map(|i| (i.name.clone(), i.size))
        .collect();
    let src = Arc::new(MariadbSource::from_info(info, &sizes)?);
    let mut renames = BTreeMap::new();
    for d in &src.databases {
        let s = scratch_name(d);
        if s.len() > 64 {
            return Err(usage(format!(
                "database {d} has a name too long for its scratch copy {s} (MariaDB allows 64 \
                 characters)"
            )));
        }
        renames.insert(d.clone(), s);
    }
    let scratch: Vec<String> = renames.values().cloned().collect();
    let (_, t) = target.target(ctx)?;
    let workers = ctx
        .config
        .mariadb
        .as_ref()
        .map(|m| m.workers())
        .unwrap_or(2);
    let rt = runtime()?;
    let items = Arc::new(RepoItems::mariadb(&repo, &m));
    let mut report = RestoreReport {
        snapshot: id.clone(),
        kind: "drill".into(),
        target: t.address.clone(),
        started: started.to_rfc3339(),
        ..Default::default()
    };
    ctx.say(format!(
        "drill: loading snapshot {id} into scratch databases {} on {}",
        scratch.join(", "),
        t.address
    ));
    let result: Result<()> = rt.block_on(async {
        let mut c = rm::connect(&t, "preparing the drill").await?;
        // Leftovers of an earlier drill that was killed.
        rm::drop_databases(&mut c, &scratch).await?;
        let loader = Loader {
            target: t.clone(),
            src: src.clone(),
            items: items.clone(),
            opts: LoadOptions {
                renames: renames.clone(),
                with_accounts: false,
                skip_events: true,
                workers,
                ..LoadOptions::default()
            },
            journal: None,
            checked: Default::default(),
        };
        let steps = loader.run().await?;
        report.steps.extend(steps);
        let tf = Instant::now();
        let early = loader.checked.lock().expect("checked").clone();
        report.fingerprints = rm::check_fingerprints(&t, &src, &renames, workers, &early).await?;
        let mut s = StepReport::new("mariadb fingerprints", StepStatus::Done);
        s.items = report.fingerprints.len();
        s.rows = report.fingerprints.iter().filter_map(|c| c.rows).sum();
        s.duration_ms = tf.elapsed().as_millis() as u64;
        report.steps.push(s);
        if src.databases.iter().any(|d| d == "zstack") {
            let v = rm::flyway_version(&mut c, &scratch_name("zstack")).await?;
            match v {
                Some(v) => report.notes.push(format!(
                    "ZStack schema (Flyway schema_version, last successful migration): {v}"
                )),
                None => report.notes.push(
                    "zstack.schema_version has no successful migration in the snapshot".into(),
                ),
            }
        }
        c.disconnect().await.ok();
        Ok(())
    });
    // Always drop the scratch databases.
    let dropped: Result<()> = rt.block_on(async {
        let mut c = rm::connect(&t, "dropping the drill's scratch databases").await?;
        rm::drop_databases(&mut c, &scratch).await?;
        c.disconnect().await.ok();
        Ok(())
    });
    if let Err(e) = dropped {
        report.warnings.push(format!(
            "the scratch databases {} could not be dropped ({e:#}); drop them by hand \
             (`DROP DATABASE …`), or run the drill again (it drops them first)",
            scratch.join(", ")
        ));
    } else {
        report
            .notes
            .push(format!("scratch databases dropped: {}", scratch.join(", ")));
    }
    if let Err(e) = result {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        return Err(e.context(format!(
            "the drill of snapshot {id} could not complete: this snapshot's MariaDB data did not \
             load"
        )));
    }
    report.tally();
    let mut problems = Vec::new();
    if src.databases.iter().any(|d| d == "zstack")
        && !src.fingerprints.contains_key("zstack.schema_version")
    {
        problems.push(
            "the snapshot's zstack database has no schema_version table (Flyway): a ZStack \
             database without it cannot be upgraded or checked; was the right database backed up?"
                .to_string(),
        );
    }
    report.warnings.extend(problems.iter().cloned());
    report.duration_ms = t0.elapsed().as_millis() as u64;
    report.exit_code = if report.tables_mismatched > 0 || !problems.is_empty() {
        EXIT_MISMATCH
    } else {
        0
    };
    report.ok = report.exit_code == 0;
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

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_names() {
        assert_eq!(super::scratch_name("zstack"), "mnbackup_drill_zstack");
    }
}
