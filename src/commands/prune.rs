//! `mnbackup prune`: remove objects no snapshot references (mark and sweep).
//!
//! Runs under the exclusive lock, so no snapshot is being written meanwhile and nothing a running
//! snapshot needs can go. Delta bases are marked through the kept pieces' chains, so a base a
//! kept delta needs is never removed. A damaged manifest stops the prune: what it references is
//! unknown.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::ui::bytes;

pub use crate::ops::prune::{free_one, prune_locked, prune_with_progress, PruneReport};

pub fn run(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let _lock = if dry_run {
        repo.lock(true, "prune", ctx.lock_wait())?
    } else {
        repo.lock_freeing_space(
            crate::repo::lock::Kind::Exclusive,
            "prune",
            ctx.lock_wait(),
            || free_one(&repo),
        )?
    };
    let progress = crate::ui::StepProgress::new(ctx.quiet || ctx.json, ctx.json);
    let r = prune_with_progress(&repo, dry_run, &progress)?;
    progress.finish();
    print_report(ctx, &r)?;
    Ok(0)
}

pub fn print_report(ctx: &Ctx, r: &PruneReport) -> Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&json!({"prune": r}))?);
    } else {
        ctx.say(format!(
            "{} {} of {} objects ({}); {} kept for {} snapshots",
            if r.dry_run { "would remove" } else { "removed" },
            r.objects_removed,
            r.objects_total,
            bytes(r.bytes_removed),
            bytes(r.bytes_kept),
            r.snapshots
        ));
        if r.packs_removed + r.packs_repacked > 0 {
            ctx.say(format!(
                "{} {} packs whole, {} {} packs without their unused objects",
                if r.dry_run { "would remove" } else { "removed" },
                r.packs_removed,
                if r.dry_run {
                    "would rewrite"
                } else {
                    "rewrote"
                },
                r.packs_repacked
            ));
        }
    }
    Ok(())
}
