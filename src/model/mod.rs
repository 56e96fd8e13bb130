//! The repository's data model: snapshot manifests, items, pieces and their encodings.
//!
//! These types are serialized as JSON into `snapshots/<id>.json`; `docs/repository-format.md`
//! is their specification. Changing a field here changes the format: bump
//! [`crate::repo::FORMAT_VERSION`] and the spec together.

pub mod cassandra_info;
pub mod files_info;
pub mod ids;
pub mod item;
pub mod manifest;
pub mod mariadb_info;

pub use ids::{
    chain, check_object_id, check_snapshot_id, MAX_CHAIN_HARD, MAX_MANIFEST, MAX_MARKER,
    MAX_OBJECT, MAX_PIECE,
};
pub use item::{ItemSink, ItemSource, ItemSpec, ItemsByName};
pub use manifest::{Gap, GroupBy, Manifest, SnapshotStats};

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
