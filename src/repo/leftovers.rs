//! Leftovers of interrupted runs: temporary files in `tmp/`, and the in-progress records
//! (`tmp/inprogress-<id>`) naming the objects a running snapshot newly wrote.
//!
//! Several snapshots may write at once (each under a shared lock). A record names its writer's
//! lock (`lock <key>` line); the record is *live* while that lock file exists and its holder is
//! not certainly gone (its heartbeat may be stale: a paused NFS client may come back). Only
//! `prune`, under the exclusive lock, cleans up, and it keeps every object and temporary file
//! modified after the start of the oldest live writer (less [`CLOCK_MARGIN`]).

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{se, Repo, TMP};
use crate::model::{check_object_id, check_snapshot_id, Manifest};
use crate::repo::lock::LockInfo;
use crate::store::{Backend, StoreError};

/// How far the clocks of a writer and of the pool may disagree: an object modified less than
/// this before a live writer's start is kept too.
pub const CLOCK_MARGIN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What `prune` must keep for writers that may still run: everything modified at or after
/// `since` (None: no live writer, nothing to keep).
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveWriters {
    pub since: Option<SystemTime>,
}

impl LiveWriters {
    /// Whether a value last modified at `modified` (None: unknown) may belong to a live writer.
    pub fn protects(&self, modified: Option<SystemTime>) -> bool {
        match (self.since, modified) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(since), Some(m)) => m >= since,
        }
    }
}

impl Repo {
    /// The writers that may still run: the oldest start among live in-progress records.
    pub fn live_writers(&self) -> Result<LiveWriters> {
        let prefix = format!("{TMP}/inprogress-");
        let mut oldest: Option<DateTime<Utc>> = None;
        for (key, _) in self.store.list(&prefix).map_err(se)? {
            if let Some(start) = self.live_record_start(&key) {
                oldest = Some(oldest.map_or(start, |o| o.min(start)));
            }
        }
        let since = oldest.map(|o| {
            let t: SystemTime = o.into();
            t.checked_sub(CLOCK_MARGIN)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
        Ok(LiveWriters { since })
    }

    /// The start of a record's writer when the record is live (see the module's doc).
    fn live_record_start(&self, record: &str) -> Option<DateTime<Utc>> {
        let bytes = self.store.get(record, 1 << 30).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let lock = text.lines().find_map(|l| l.strip_prefix("lock "))?;
        if !lock.starts_with(&format!("{}/", super::LOCKS)) {
            return None;
        }
        let info = self.store.get(lock, 64 * 1024).ok()?;
        let info: LockInfo = serde_json::from_slice(&info).ok()?;
        (!info.is_dead()).then_some(info.started)
    }

    /// Whether the value under `key` was modified after `live.since` (or its time is unknown).
    pub(crate) fn recent(&self, key: &str, live: &LiveWriters) -> bool {
        live.since.is_some() && live.protects(self.store.stat(key).ok().and_then(|m| m.modified))
    }

    /// Whether object `id` may belong to a live writer (see [`Repo::live_writers`]).
    pub fn object_recent(&self, id: &str, live: &LiveWriters) -> bool {
        live.since.is_some() && super::objects::object_key(id).is_ok_and(|k| self.recent(&k, live))
    }

    /// Clean up after interrupted runs. Call only while holding the exclusive lock: removes the
    /// temporary files and in-progress records of writers that are gone, and the objects such
    /// a writer recorded as newly written by it, unless a manifest references them or a live
    /// writer may (see the module's doc). Nothing else is removed (this is not a garbage
    /// collection: a manifest that does not load never loses objects here; `prune` decides
    /// about unreferenced objects). Returns (files, bytes).
    pub fn clean_leftovers(&self) -> Result<(u64, u64)> {
        let mut files = 0;
        let mut bytes = 0;
        self.store.layout_dir(TMP).map_err(se)?;
        let live = self.live_writers()?;
        let prefix = format!("{TMP}/");
        let mut written: Vec<String> = Vec::new();
        for (key, size) in self.store.list(&prefix).map_err(se)? {
            let name = &key[prefix.len()..];
            if let Some(id) = name.strip_prefix("inprogress-") {
                if self.live_record_start(&key).is_some() {
                    continue;
                }
                written.extend(self.interrupted_objects(id, &key));
            } else if self.recent(&key, &live) {
                continue;
            }
            self.store
                .delete(&key)
                .map_err(se)
                .with_context(|| format!("removing leftover {}/{key}", self.location()))?;
            bytes += size;
            files += 1;
        }
        if written.is_empty() {
            return Ok((files, bytes));
        }
        let all = self.load_all()?;
        if all.iter().any(|r| r.is_err()) {
            tracing::warn!(
                "an interrupted snapshot left {} objects; they are kept because some manifest \
                 does not load (`mnbackup verify` names it; `mnbackup prune` removes \
                 unreferenced objects once every manifest loads)",
                written.len()
            );
            return Ok((files, bytes));
        }
        let manifests: Vec<Manifest> = all.into_iter().filter_map(|r| r.ok()).collect();
        let keep = Self::referenced_objects(&manifests);
        for id in written {
            if keep.contains(&id) || self.object_recent(&id, &live) {
                continue;
            }
            // Packed objects go with their pack (prune: a pack whose objects are unreferenced).
            let size = self.object_size(&id)?.unwrap_or(0);
            if self.delete_loose_object(&id).unwrap_or(false) {
                files += 1;
                bytes += size;
            }
        }
        Ok((files, bytes))
    }

    /// The objects an interrupted snapshot recorded as written by it (none when its manifest
    /// was committed after all, or the record is not readable).
    fn interrupted_objects(&self, id: &str, record: &str) -> Vec<String> {
        if check_snapshot_id(id).is_err() || self.has_manifest(id) {
            return Vec::new();
        }
        let Ok(bytes) = self.store.get(record, 1 << 30) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines();
        if lines.next() != Some(id) {
            return Vec::new();
        }
        lines
            .filter(|l| check_object_id(l).is_ok())
            .map(|l| l.to_string())
            .collect()
    }

    /// Start the in-progress record of a snapshot: its id, then (see [`InProgress::record`])
    /// every object it newly writes. Removed on commit or clean abort.
    pub fn mark_in_progress(&self, id: &str) -> Result<InProgress> {
        check_snapshot_id(id)?;
        self.store.layout_dir(TMP).map_err(se)?;
        let key = format!("{TMP}/inprogress-{id}");
        match self.store.put_if_absent(&key, format!("{id}\n").as_bytes()) {
            Ok(true) => {}
            Ok(false) => {
                return Err(anyhow::anyhow!(
                    "the in-progress record {key} exists already"
                ))
            }
            Err(e) => return Err(se(e)).context("writing the in-progress record"),
        }
        Ok(InProgress {
            store: self.store.clone(),
            key,
        })
    }
}

/// The in-progress record of a running snapshot (`tmp/inprogress-<id>`).
#[derive(Debug)]
pub struct InProgress {
    store: Arc<dyn Backend>,
    pub key: String,
}

impl InProgress {
    /// Name the lock its writer holds (see [`Repo::live_writers`]).
    pub fn note_lock(&self, lock_key: &str) -> Result<()> {
        self.store
            .append(&self.key, format!("lock {lock_key}\n").as_bytes())
            .map_err(se)
            .context("writing the in-progress record")
    }

    /// Append the ids of newly written objects (so an interrupted run's objects, and only
    /// those, are removed by the next clean-up).
    pub fn record(&self, ids: &[String]) -> Result<()> {
        let mut text = String::new();
        for id in ids {
            text.push_str(id);
            text.push('\n');
        }
        self.store
            .append(&self.key, text.as_bytes())
            .map_err(se)
            .context("writing the in-progress record")
    }

    /// Remove the record.
    pub fn remove(&self) {
        match self.store.delete(&self.key) {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!("could not remove the in-progress record: {e}"),
        }
    }
}
