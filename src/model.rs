//! The repository's data model: snapshot manifests, items, pieces and their encodings.
//!
//! These types are serialized as JSON into `snapshots/<id>.json`; `docs/repository-format.md`
//! is their specification. Changing a field here changes the format: bump
//! [`crate::repo::FORMAT_VERSION`] and the spec together.

pub mod cassandra_info;
pub mod files_info;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of filesystem entry an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Regular content (a file, a SQL dump piece, an SSTable component).
    File,
    /// A directory (no content).
    Dir,
    /// A symbolic link (no content; `target` holds the link text).
    Symlink,
}

/// Ownership, permissions and times of a filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FileMeta {
    /// Permission bits (including setuid/setgid/sticky), `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// User and group names at backup time; restore prefers the names, falls back to the ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// How one piece's bytes are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "enc", rename_all = "lowercase")]
pub enum Encoding {
    /// A zstd frame of the whole piece; `stored` is the object file's size.
    Full { object: String, stored: u64 },
    /// A zstd-compressed fast_rsync delta against `base`; `depth` is the chain length (1 when the
    /// base is full).
    Delta {
        object: String,
        stored: u64,
        depth: u32,
        base: Box<PieceData>,
    },
}

impl Encoding {
    /// The object holding this encoding's data, and its file size.
    pub fn object(&self) -> (&str, u64) {
        match self {
            Encoding::Full { object, stored } | Encoding::Delta { object, stored, .. } => {
                (object, *stored)
            }
        }
    }

    /// Number of deltas to apply to reconstruct (0 for full).
    pub fn depth(&self) -> u32 {
        match self {
            Encoding::Full { .. } => 0,
            Encoding::Delta { depth, .. } => *depth,
        }
    }
}

/// A piece's plain identity plus how to get its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceData {
    /// Plain (decoded) size in bytes.
    pub size: u64,
    /// BLAKE3 of the plain bytes, lowercase hex.
    pub blake3: String,
    #[serde(flatten)]
    pub data: Encoding,
}

/// One bounded piece of an item's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    #[serde(flatten)]
    pub piece: PieceData,
    /// Object id of the fast_rsync signature of this piece's plain bytes, when the item takes
    /// deltas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// Size of the signature object file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig_size: Option<u64>,
}

/// One named thing in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Relative '/'-separated name, e.g. `files/etc/my.cnf`, `mariadb/zstack/VmInstanceEO.000.sql`.
    pub name: String,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<FileMeta>,
    /// Symlink target text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Plain content size (0 for dirs and symlinks).
    #[serde(default)]
    pub size: u64,
    /// BLAKE3 of the whole plain content (of the empty string for dirs and symlinks).
    pub blake3: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Piece>,
}

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
