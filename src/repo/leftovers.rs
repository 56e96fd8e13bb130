//! Leftovers of interrupted runs: temporary files in `tmp/`, and the in-progress records
//! (`tmp/inprogress-<id>`) naming the objects a running snapshot newly wrote.

use anyhow::{Context, Result};

use super::{se, Repo, TMP};
use crate::model::{check_object_id, check_snapshot_id, Manifest};
use crate::store::{Backend, StoreError};
use std::sync::Arc;

impl Repo {
    /// Clean up after interrupted runs. Call only while holding an exclusive lock (nobody else
    /// writes): removes every temporary file, and the objects an interrupted snapshot recorded
    /// in its in-progress record as newly written by it. Nothing else is removed (this is not a
    /// garbage collection: a manifest that does not load never loses objects here; `prune`
    /// decides about unreferenced objects). Returns (files, bytes).
    pub fn clean_leftovers(&self) -> Result<(u64, u64)> {
        let mut files = 0;
        let mut bytes = 0;
        self.store.check_dir(TMP).map_err(se)?;
        let prefix = format!("{TMP}/");
        let mut written: Vec<String> = Vec::new();
        for (key, size) in self.store.list(&prefix).map_err(se)? {
            let name = &key[prefix.len()..];
            if let Some(id) = name.strip_prefix("inprogress-") {
                written.extend(self.interrupted_objects(id, &key));
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
            if keep.contains(&id) {
                continue;
            }
            let size = self.object_size(&id)?.unwrap_or(0);
            if self.delete_object(&id).unwrap_or(false) {
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
        self.store.check_dir(TMP).map_err(se)?;
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
