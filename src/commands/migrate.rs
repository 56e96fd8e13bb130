//! `mnbackup migrate`: format v1 → v2 in place (see `ops::migrate`).

use anyhow::Result;

use super::Ctx;
use crate::ui::{bytes, StepProgress};

pub fn run(ctx: &Ctx, no_encryption: bool) -> Result<i32> {
    let path = ctx.repo_path()?;
    let location = path.to_string_lossy().into_owned();
    let mut repo = ctx.open_locked(&location)?;
    let _lock = repo.lock(true, "migrate", ctx.lock_wait())?;
    let pass = if no_encryption {
        None
    } else if repo.is_v1() && !repo.migration_started() {
        Some(super::password::for_init(ctx, &location)?)
    } else {
        // Continuing: the passphrase the interrupted run started with.
        Some(super::password::current(ctx, &location, false)?)
    };
    if !repo.is_v1() && repo.encrypted() {
        if let Some(p) = &pass {
            repo.unlock(p.as_bytes())?;
        }
    }
    let progress = StepProgress::new(ctx.quiet || ctx.json, ctx.json);
    let done = crate::ops::migrate::migrate(&repo, pass.as_ref().map(|p| p.as_bytes()), &progress);
    progress.finish();
    let (repo, report) = done?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        ctx.say(format!(
            "migrated the repository at {} ({}){}: {} snapshots ({} rewritten by \
             this run), {} objects written ({}), {} old objects removed ({})",
            repo.location(),
            repo.encryption_summary(),
            if report.resumed {
                ", continuing an interrupted migrate"
            } else {
                ""
            },
            report.snapshots,
            report.snapshots_rewritten,
            report.objects_written,
            bytes(report.bytes_written),
            report.old_objects_removed,
            bytes(report.old_bytes_removed)
        ));
        if repo.encrypted() {
            ctx.say(
                "losing every passphrase (and the paper key) loses every backup: keep a copy \
                 off this node now with `mnbackup key export` (docs/security.md)",
            );
        }
    }
    Ok(0)
}
