//! The snapshot manifest (`snapshots/<id>.json`), its statistics and its gaps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Item;

/// Totals recorded when a snapshot is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub items: u64,
    /// Sum of the plain sizes of all items.
    pub logical_bytes: u64,
    /// Bytes this snapshot wrote to the pool: new objects (data, deltas, signatures) and its own
    /// manifest.
    pub bytes_added: u64,
    /// Of `bytes_added`, the bytes of new signature objects.
    pub signature_bytes_added: u64,
    pub objects_added: u64,
    /// Size of this snapshot's manifest file (included in `bytes_added`; 0 in manifests written
    /// before it was counted).
    #[serde(default)]
    pub manifest_bytes: u64,
    pub pieces_unchanged: u64,
    pub pieces_delta: u64,
    pub pieces_full: u64,
    pub duration_ms: u64,
}

/// Something a snapshot run could not capture: recorded in the manifest, reported by `snapshot`
/// (exit 10), `list`, `show`, `status` and `restore`. A gap is never silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The source that could not capture it: `mariadb`, `cassandra`, `files`, ...
    pub source: String,
    /// What kind of thing is missing, e.g. `routines`, `accounts`, `grants`, `events`,
    /// `consistency`, `table`, `sstable`, `file`, `source` (the whole source).
    pub kind: String,
    /// Which one, when the gap is about a single thing (a table, a file, an SSTable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Why it could not be captured (the server's or the system's own words).
    pub reason: String,
    /// What an operator does to close it (e.g. the exact GRANT to run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Gap {
    pub fn new(source: &str, kind: &str, reason: impl Into<String>) -> Self {
        Gap {
            source: source.into(),
            kind: kind.into(),
            subject: None,
            reason: reason.into(),
            fix: None,
        }
    }
    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }
    pub fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }
    /// One line for an operator: `mariadb routines (zstack.foo): reason — fix: ...`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.source, self.kind);
        if let Some(sub) = &self.subject {
            s.push_str(&format!(" ({sub})"));
        }
        s.push_str(&format!(": {}", self.reason));
        if let Some(f) = &self.fix {
            s.push_str(&format!(" -- fix: {f}"));
        }
        s
    }
}

fn default_true() -> bool {
    true
}

/// A committed snapshot: `snapshots/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub time: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub hostname: String,
    /// `manual`, or `schedule:<job name>`, or `safety` (taken by restore --force).
    pub trigger: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub items: Vec<Item>,
    /// Per-source metadata (e.g. `mariadb`: versions, binlog position, row fingerprints).
    #[serde(default)]
    pub sources: BTreeMap<String, serde_json::Value>,
    pub stats: SnapshotStats,
    /// False when any source could not capture everything it should have (see `gaps`).
    /// Manifests written before this field existed read as complete.
    #[serde(default = "default_true")]
    pub complete: bool,
    /// What this snapshot lacks, one entry per gap; empty when `complete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
}
