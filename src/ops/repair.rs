//! Repair: make the repository consistent again after damage (the use case;
//! `commands/repair.rs` prints it and maps it to the exit code).
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

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::{EXIT_INCOMPLETE, EXIT_INTEGRITY};
use crate::model::{Gap, PieceData};
use crate::ops::progress::Progress;
use crate::ops::verify::{verify, Subset};
use crate::repo::Repo;

/// What `repair` did (or would do, with `--dry-run`).
#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    /// Damaged object files removed.
    pub objects_removed: Vec<String>,
    /// Snapshot id -> items removed from it (their data could not be reconstructed).
    pub items_lost: BTreeMap<String, Vec<String>>,
    /// Snapshot id -> number of signatures dropped (no content lost).
    pub signatures_dropped: BTreeMap<String, usize>,
    /// Manifests that do not load (left alone).
    pub damaged_manifests: Vec<(String, String)>,
    pub exit_code: i32,
}

fn chain_bad(p: &PieceData, bad: &BTreeSet<String>) -> bool {
    crate::model::chain(p).any(|c| bad.contains(c.data.object().0))
}

/// Repair `repo` (the caller holds the exclusive lock): read every object, remove the damaged
/// ones and rewrite the manifests that needed them (nothing is changed with `dry_run`).
pub fn repair_locked(repo: &Repo, dry_run: bool, progress: &dyn Progress) -> Result<RepairReport> {
    let v = verify(repo, true, Subset::All, u32::MAX, progress)
        .context("repair could not read the repository")?;
    let mut r = RepairReport {
        dry_run,
        damaged_manifests: v.damaged_manifests.clone(),
        ..Default::default()
    };
    let mut bad: BTreeSet<String> = BTreeSet::new();
    for p in &v.missing {
        bad.insert(p.object.clone());
    }
    for p in &v.damaged {
        bad.insert(p.object.clone());
        // Only objects that are themselves damaged are removed; a piece that does not
        // reconstruct although its objects read fine is dropped from the manifests below.
        if p.problem.starts_with("does not reconstruct") {
            continue;
        }
        r.objects_removed.push(p.object.clone());
    }
    if !dry_run && !r.objects_removed.is_empty() {
        // Object files one by one; packs holding damaged objects are written again without
        // all of them at once.
        for id in &r.objects_removed {
            repo.delete_loose_object(id)?;
        }
        repo.unpack_objects(&r.objects_removed.iter().cloned().collect())?;
        for id in &r.objects_removed {
            repo.clear_damaged(id);
        }
    }
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    for res in repo.load_all()? {
        let Ok(mut m) = res else { continue };
        let mut lost = Vec::new();
        let mut sigs = 0usize;
        let mut items = Vec::with_capacity(m.items.len());
        for mut item in std::mem::take(&mut m.items) {
            if item.pieces.iter().any(|p| chain_bad(&p.piece, &bad)) {
                lost.push(item);
                continue;
            }
            for p in &mut item.pieces {
                if p.sig.as_ref().is_some_and(|s| bad.contains(s)) {
                    p.sig = None;
                    p.sig_size = None;
                    sigs += 1;
                }
            }
            items.push(item);
        }
        m.items = items;
        if lost.is_empty() && sigs == 0 {
            continue;
        }
        for item in &lost {
            let source = item.name.split('/').next().unwrap_or("files");
            m.gaps.push(
                Gap::new(
                    source,
                    "damaged",
                    format!(
                        "its stored data was damaged or missing; removed from the snapshot by \
                         `mnbackup repair` on {now}"
                    ),
                )
                .subject(item.name.clone())
                .fix("take a new snapshot; restore this item from another snapshot that has it"),
            );
            m.stats.items = m.stats.items.saturating_sub(1);
            m.stats.logical_bytes = m.stats.logical_bytes.saturating_sub(item.size);
        }
        if !lost.is_empty() {
            m.complete = false;
            r.items_lost
                .insert(m.id.clone(), lost.iter().map(|i| i.name.clone()).collect());
        }
        if sigs > 0 {
            r.signatures_dropped.insert(m.id.clone(), sigs);
        }
        if !dry_run {
            repo.replace_manifest(&m)
                .with_context(|| format!("rewriting the manifest of snapshot {}", m.id))?;
        }
    }
    r.exit_code = if !r.damaged_manifests.is_empty() {
        EXIT_INTEGRITY
    } else if !r.items_lost.is_empty() {
        EXIT_INCOMPLETE
    } else {
        0
    };
    Ok(r)
}
