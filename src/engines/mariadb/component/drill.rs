//! The MariaDB drill: the restore's load-and-prove into scratch databases, then a drop step
//! (also when something failed). Scratch databases left by a killed drill are dropped first.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engines::mariadb::load::{self as rm, LoadOptions};
use anyhow::Result;
use mnbackup_restore::report::RestoreReport;

use super::{load_and_prove, resolve_target, runtime, source_of, target_config, Mariadb, PREFIX};
use crate::engines::{Component, RestoreEnv};
use crate::error::usage;
use crate::repo::reader::RepoItems;

/// Run the drill of `env.manifest`; the report gets the steps, fingerprints and notes.
pub(super) fn run(c: &Mariadb, env: &RestoreEnv, report: &mut RestoreReport) -> Result<()> {
    let Some(src) = source_of(env.manifest)? else {
        return Ok(());
    };
    let src = Arc::new(src);
    let mut renames = BTreeMap::new();
    for d in &src.databases {
        let s = c.scratch_name(d);
        if s.len() > 64 {
            return Err(usage(format!(
                "database {d} has a name too long for its scratch copy {s} (MariaDB allows 64 \
                 characters)"
            )));
        }
        renames.insert(d.clone(), s);
    }
    let scratch: Vec<String> = renames.values().cloned().collect();
    let t = resolve_target(&target_config(env.config, env.req))?;
    report.target = t.address.clone();
    let workers = env.config.mariadb().map(|m| m.workers()).unwrap_or(2);
    let rt = runtime()?;
    let items = Arc::new(RepoItems::with_prefix(env.repo, env.manifest, PREFIX));
    tracing::info!(
        "drill: loading snapshot {} into scratch databases {} on {}",
        env.manifest.id,
        scratch.join(", "),
        t.address
    );
    let zstack = c.scratch_name("zstack");
    let result: Result<()> = rt.block_on(async {
        let mut conn = rm::connect(&t, "preparing the drill").await?;
        // Leftovers of an earlier drill that was killed.
        rm::drop_databases(&mut conn, &scratch).await?;
        let opts = LoadOptions {
            renames: renames.clone(),
            with_accounts: false,
            skip_events: true,
            workers,
            memory_budget: env.config.memory() / 2,
            ..LoadOptions::default()
        };
        let (steps, checks) = load_and_prove(&t, &src, items, opts, None).await?;
        report.steps.extend(steps);
        report.fingerprints = checks;
        if src.databases.iter().any(|d| d == "zstack") {
            match rm::flyway_version(&mut conn, &zstack).await? {
                Some(v) => report.notes.push(format!(
                    "ZStack schema (Flyway schema_version, last successful migration): {v}"
                )),
                None => report.notes.push(
                    "zstack.schema_version has no successful migration in the snapshot".into(),
                ),
            }
        }
        conn.disconnect().await.ok();
        if let Some(hook) = &env.req.after_drill_load {
            report.notes.push((hook.0)(&renames)?);
        }
        Ok(())
    });
    // The drop step: always.
    let dropped: Result<()> = rt.block_on(async {
        let mut conn = rm::connect(&t, "dropping the drill's scratch databases").await?;
        rm::drop_databases(&mut conn, &scratch).await?;
        conn.disconnect().await.ok();
        Ok(())
    });
    match dropped {
        Err(e) => report.warnings.push(format!(
            "the scratch databases {} could not be dropped ({e:#}); drop them by hand (`DROP \
             DATABASE …`), or run the drill again (it drops them first)",
            scratch.join(", ")
        )),
        Ok(()) => report
            .notes
            .push(format!("scratch databases dropped: {}", scratch.join(", "))),
    }
    result?;
    if src.databases.iter().any(|d| d == "zstack")
        && !src.fingerprints.contains_key("zstack.schema_version")
    {
        report.warnings.push(
            "the snapshot's zstack database has no schema_version table (Flyway): a ZStack \
             database without it cannot be upgraded or checked; was the right database backed up?"
                .to_string(),
        );
        report.exit_code = crate::error::EXIT_MISMATCH;
    }
    Ok(())
}
