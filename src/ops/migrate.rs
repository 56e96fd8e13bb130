//! `mnbackup migrate`: a format v1 repository becomes format v2 in place (encrypted unless
//! asked otherwise, small objects in packs), resumably.
//!
//! 1. Every object a snapshot references is read (and checked) as v1 and written as v2 (other
//!    names: the v1 objects stay), then the snapshot's manifest is staged (`migrate/<id>.json`).
//!    Until step 2 the repository is a complete v1 repository; a rerun skips the staged
//!    snapshots.
//! 2. The v2 marker replaces the v1 one (one atomic write).
//! 3. The staged manifests replace the v1 ones; a rerun after a stop here finishes this step.
//! 4. prune removes the v1 objects, which nothing references any more.
//!
//! The caller holds the exclusive lock.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::integrity;
use crate::ops::copy::{read_checked, remap};
use crate::ops::progress::Progress;
use crate::repo::Repo;

/// What a migration did.
#[derive(Debug, Default, Serialize)]
pub struct MigrateReport {
    /// Snapshots rewritten by this run (not those an interrupted run had staged).
    pub snapshots_rewritten: usize,
    /// Snapshots in the repository after the migration.
    pub snapshots: usize,
    pub objects_written: u64,
    pub bytes_written: u64,
    pub encrypted: bool,
    /// The v1 objects removed afterwards.
    pub old_objects_removed: usize,
    pub old_bytes_removed: u64,
    /// The run continued an interrupted one.
    pub resumed: bool,
}

/// Test hook: stop (sleep) after a stage so a test can SIGKILL the process there.
fn pause_point(stage: &str) {
    if std::env::var("MNBACKUP_TEST_MIGRATE_PAUSE").as_deref() == Ok(stage) {
        eprintln!("migrate: paused after {stage}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// Migrate `repo` (opened, and unlocked when it is already v2 and encrypted, i.e. a migration
/// that stopped after the switch); `passphrase`: the new repository's (None: unencrypted).
/// Returns the v2 handle and the report.
pub fn migrate(
    repo: &Repo,
    passphrase: Option<&[u8]>,
    progress: &dyn Progress,
) -> Result<(Repo, MigrateReport)> {
    let mut report = MigrateReport::default();
    if !repo.is_v1() {
        if !repo.migration_started() && repo.staged_manifests()?.is_empty() {
            return Err(crate::error::usage(format!(
                "the repository at {} is already format version {}: nothing to migrate",
                repo.location(),
                repo.config.version
            )));
        }
        // Stopped after the switch: finish it.
        report.resumed = true;
        let target = repo.clone();
        return finish(target, report, progress);
    }
    report.resumed = repo.migration_started();
    let target = repo.migration_target(passphrase)?;
    report.encrypted = target.encrypted();
    let staged: std::collections::HashSet<String> =
        target.staged_manifests()?.into_iter().collect();
    let mut manifests = Vec::new();
    for r in repo.load_all()? {
        match r {
            Ok(m) => manifests.push(m),
            Err((id, e)) => {
                return Err(integrity(format!(
                    "the manifest of snapshot {id} is damaged ({e:#}); nothing was changed. \
                     `mnbackup forget {id}` it (or restore it from a copy), then migrate again"
                )))
            }
        }
    }
    let todo: Vec<_> = manifests
        .into_iter()
        .filter(|m| !staged.contains(&m.id))
        .collect();
    progress.phase(
        &format!("migrate: rewriting {} snapshots", todo.len()),
        None,
    );
    let mut map: HashMap<String, (String, u64)> = HashMap::new();
    for m in todo {
        let mut ids: Vec<String> = Repo::referenced_objects([&m]).into_iter().collect();
        ids.sort();
        for id in ids {
            if map.contains_key(&id) {
                continue;
            }
            let (_, ty, payload) = read_checked(repo, &id).with_context(|| {
                format!(
                    "migrating snapshot {}: nothing was changed in its v1 form; run `mnbackup \
                     verify` and `repair`, then migrate again",
                    m.id
                )
            })?;
            let (nid, size, new) = target.put_object(ty, &payload)?;
            if new {
                report.objects_written += 1;
                report.bytes_written += size;
            }
            map.insert(id, (nid, size));
        }
        let mut m2 = m.clone();
        remap(&mut m2, &map)?;
        target.stage_manifest(&m2)?;
        report.snapshots_rewritten += 1;
        progress.note(&format!("migrate: snapshot {} rewritten", m.id));
        pause_point("staged");
    }
    target.switch_marker()?;
    pause_point("switched");
    finish(target, report, progress)
}

fn finish(
    target: Repo,
    mut report: MigrateReport,
    progress: &dyn Progress,
) -> Result<(Repo, MigrateReport)> {
    progress.phase("migrate: switching the snapshots to format v2", None);
    target.finish_migration()?;
    report.encrypted = target.encrypted();
    let pruned = crate::ops::prune::prune_with_progress(&target, false, progress)?;
    report.old_objects_removed = pruned.objects_removed;
    report.old_bytes_removed = pruned.bytes_removed;
    report.snapshots = target.snapshot_ids()?.len();
    Ok((target, report))
}
