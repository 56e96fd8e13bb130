//! `mnbackup repair`: make the repository consistent again after damage (restic's `repair packs`
//! and `repair snapshots` are the model).
//!
//! Under an exclusive lock it reads every object (as `verify --read-data` does), then:
//! - removes damaged object files (their content is written again by the next snapshot that has
//!   it: a snapshot never reuses a piece whose objects are missing);
//! - rewrites each manifest that needs a missing or damaged object: a lost signature is dropped
//!   (nothing of the content is lost), an item whose data cannot be reconstructed is removed from
//!   the snapshot and recorded as a gap (kind `damaged`), so the snapshot is marked incomplete;
//! - reports every snapshot and what it lost. Manifests that do not load are named and left
//!   alone (restore them from another copy of the pool, or `forget` them).
//!
//! Exit codes: 0 nothing was lost (or nothing to do); 10 some snapshots lost items (now marked
//! incomplete); 5 some manifests are damaged and could not be repaired.

use anyhow::Result;

use super::Ctx;
use crate::ops::repair::repair_locked;

pub fn run(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let _lock = repo.lock(true, "repair", ctx.lock_wait())?;
    let bar = crate::ui::StepProgress::new(ctx.quiet || ctx.json, ctx.json);
    let r = repair_locked(&repo, dry_run, &bar)?;
    bar.finish();
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(r.exit_code);
    }
    let would = if dry_run { "would remove" } else { "removed" };
    for id in &r.objects_removed {
        println!("damaged object {id}: {would} (the next snapshot stores its content anew)");
    }
    for (snap, items) in &r.items_lost {
        println!(
            "snapshot {snap}: {} {} item(s) whose data is lost; the snapshot is marked incomplete:",
            if dry_run { "would lose" } else { "lost" },
            items.len()
        );
        for i in items {
            println!("  {i}");
        }
    }
    for (snap, n) in &r.signatures_dropped {
        println!(
            "snapshot {snap}: {n} delta signature(s) {} (no content lost; the next snapshot \
             stores those pieces in full)",
            if dry_run {
                "would be dropped"
            } else {
                "dropped"
            }
        );
    }
    for (id, e) in &r.damaged_manifests {
        println!(
            "damaged manifest {id}: {e}. repair cannot fix a manifest: put back the file \
             snapshots/{id}.json from another copy of the pool, or `mnbackup forget {id}`"
        );
    }
    if r.objects_removed.is_empty()
        && r.items_lost.is_empty()
        && r.signatures_dropped.is_empty()
        && r.damaged_manifests.is_empty()
    {
        ctx.say("nothing to repair: every snapshot's data reads back intact");
    } else if !r.items_lost.is_empty() && !dry_run {
        ctx.say(
            "Take a new snapshot now (`mnbackup snapshot`) so the current state is fully \
             backed up; `mnbackup prune` removes objects no snapshot needs any more.",
        );
    }
    Ok(r.exit_code)
}
