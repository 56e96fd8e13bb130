//! Prune: remove objects no snapshot references (mark and sweep): object files one by one,
//! packs whole when none of their objects is referenced, rewritten without the unreferenced
//! ones when more than half of their bytes are (see [`Repo::prune_packs`]).
//!
//! Runs under the exclusive lock, so no snapshot (they hold shared locks) is being written
//! meanwhile. A writer whose lock went stale but whose holder may still run (its in-progress
//! record and lock file are still there) is respected all the same: objects modified after the
//! oldest such writer started are kept (see [`crate::repo::leftovers`]). Delta bases are marked through the kept pieces' chains, so a base a
//! kept delta needs is never removed. A damaged manifest stops the prune: what it references is
//! unknown.

use anyhow::Result;
use serde::Serialize;

use crate::error::integrity;
use crate::model::Manifest;
use crate::ops::progress::{NoProgress, Progress};
use crate::repo::Repo;

/// What a prune removed (or would remove).
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub objects_total: usize,
    pub objects_removed: usize,
    pub bytes_removed: u64,
    pub bytes_kept: u64,
    pub leftovers_removed: u64,
    /// Packs removed whole (all their objects unreferenced).
    pub packs_removed: usize,
    /// Packs written again without their unreferenced objects (more than half unused).
    pub packs_repacked: usize,
    pub dry_run: bool,
}

/// Prune `repo`; the caller holds the exclusive lock.
pub fn prune_locked(repo: &Repo, dry_run: bool) -> Result<PruneReport> {
    prune_with_progress(repo, dry_run, &NoProgress)
}

/// [`prune_locked`], reporting its steps (reading the manifests, listing the objects, removing
/// the unreferenced ones, with their bytes) to `progress`.
pub fn prune_with_progress(
    repo: &Repo,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    progress.phase("prune: reading the snapshots", None);
    let mut manifests: Vec<Manifest> = Vec::new();
    for r in repo.load_all()? {
        match r {
            Ok(m) => manifests.push(m),
            Err((id, e)) => {
                return Err(integrity(format!(
                    "prune stopped: the manifest of snapshot {id} is damaged ({e:#}), so what it \
                     needs is unknown and nothing was removed. If that snapshot is lost, `mnbackup \
                     forget {id}` first, then prune again"
                )))
            }
        }
    }
    let mut report = PruneReport {
        snapshots: manifests.len(),
        dry_run,
        ..Default::default()
    };
    if !dry_run {
        report.leftovers_removed = repo.clean_leftovers()?.0;
    }
    let keep = Repo::referenced_objects(&manifests);
    let live = repo.live_writers()?;
    progress.phase("prune: listing the objects", None);
    let all = repo.loose_objects()?;
    report.objects_total = all.len();
    let mut gone = Vec::new();
    for (id, size) in all {
        if keep.contains(&id) || repo.object_recent(&id, &live) {
            report.bytes_kept += size;
        } else {
            report.objects_removed += 1;
            report.bytes_removed += size;
            gone.push((id, size));
        }
    }
    if !dry_run {
        progress.phase(
            &format!("prune: removing {} unreferenced objects", gone.len()),
            Some(gone.iter().map(|(_, s)| *s).sum()),
        );
        for (id, size) in gone {
            repo.delete_loose_object(&id)?;
            repo.clear_damaged(&id);
            progress.advance(size);
        }
    }
    progress.phase("prune: packs", None);
    let packs = repo.prune_packs(&keep, &live, dry_run)?;
    report.objects_total += packs.objects_total;
    report.objects_removed += packs.objects_removed;
    report.bytes_removed += packs.bytes_removed;
    report.bytes_kept += packs.bytes_kept;
    report.packs_removed = packs.packs_removed;
    report.packs_repacked = packs.packs_repacked;
    Ok(report)
}

/// On a full pool with no other process holding the repository: remove one object no manifest
/// references (what prune removes anyway), so the lock file fits.
pub fn free_one(repo: &Repo) -> Result<bool> {
    let mut manifests = Vec::new();
    for r in repo.load_all()? {
        match r {
            Ok(m) => manifests.push(m),
            Err(_) => return Ok(false),
        }
    }
    let keep = Repo::referenced_objects(&manifests);
    let live = repo.live_writers()?;
    for (id, _) in repo.loose_objects()? {
        if !keep.contains(&id) && !repo.object_recent(&id, &live) {
            repo.delete_loose_object(&id)?;
            return Ok(true);
        }
    }
    // Then a pack none of whose objects is referenced.
    let idx = repo.pack_index()?.clone().unwrap_or_default();
    for (pack, entries) in &idx.packs {
        if entries.iter().all(|e| !keep.contains(&e.id))
            && !repo.recent(&crate::repo::packs::pack_key(pack)?, &live)
        {
            repo.remove_pack(pack)?;
            repo.reload_pack_index();
            return Ok(true);
        }
    }
    Ok(false)
}
