//! The interfaces between engines and the repository: [`ItemSink`] (what is backed up goes to the
//! snapshot writer) and [`ItemSource`] (what is restored comes from a snapshot's items).
//!
//! A source walks what it backs up and hands every item to an [`ItemSink`]. The sink is shared
//! between threads (`&self` methods, `Send + Sync`): a source may call it from several worker
//! threads at once. Calls block while the item is chunked, delta-encoded, compressed and written,
//! so async sources call it through `tokio::task::spawn_blocking` (or `block_in_place`).

use std::io::Read;

use crate::model::{EntryKind, FileMeta, Gap, Item};

/// What a source says about one item.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    /// Relative '/'-separated item name; must be unique within a snapshot, must not contain `..`
    /// components or start with '/'. Prefix by source: `files/`, `mariadb/`, `cassandra/`.
    pub name: String,
    pub kind: EntryKind,
    pub meta: Option<FileMeta>,
    /// Symlink target (only for [`EntryKind::Symlink`]).
    pub target: Option<String>,
    /// Whether this item may be stored as an rsync delta against the parent snapshot's item of
    /// the same name (true for dumps and config files; false for immutable files such as
    /// SSTables, which are only ever deduplicated whole).
    pub delta: bool,
}

impl ItemSpec {
    /// A regular content item with no filesystem metadata (e.g. a SQL dump piece).
    pub fn content(name: impl Into<String>, delta: bool) -> Self {
        ItemSpec {
            name: name.into(),
            kind: EntryKind::File,
            meta: None,
            target: None,
            delta,
        }
    }
}

/// Where sources put items.
pub trait ItemSink: Send + Sync {
    /// Store a content item, reading it to the end from `reader`. Memory stays bounded whatever
    /// the size: the content is cut into bounded pieces as it is read.
    fn put_reader(&self, spec: ItemSpec, reader: &mut dyn Read) -> anyhow::Result<()>;

    /// Store a content item held in memory.
    fn put_bytes(&self, spec: ItemSpec, data: &[u8]) -> anyhow::Result<()> {
        let mut r = data;
        self.put_reader(spec, &mut r)
    }

    /// Record a directory or a symlink (no content).
    fn put_entry(&self, spec: ItemSpec) -> anyhow::Result<()>;

    /// Record per-source metadata in the manifest under `sources.<source>` (replaces any earlier
    /// value for that source).
    fn set_source_info(&self, source: &str, info: serde_json::Value);

    /// Record something the source could not capture. The snapshot is still committed, but as
    /// incomplete: `complete: false` with this gap in the manifest, and `snapshot` exits 10.
    fn gap(&self, gap: Gap);

    /// Take back an item stored by this run (a file that changed while it was read is read
    /// again). Returns false when the sink cannot (then the item stays as stored).
    fn retract(&self, _name: &str) -> bool {
        false
    }

    /// The previous snapshot's source info of `source` (what its run recorded), if any: lets a
    /// source tell which of its files are unchanged since then.
    fn parent_source_info(&self, _source: &str) -> Option<serde_json::Value> {
        None
    }

    /// Record `spec` (a file) as unchanged since the previous snapshot, without reading it: its
    /// content is the previous snapshot's item of the same name. Only for content that cannot
    /// change under the same name, size, mtime and inode (Cassandra's immutable SSTables).
    /// Returns false (and records nothing) when the previous snapshot has no such file item of
    /// `size` bytes; the caller then stores the content.
    fn put_unchanged(&self, _spec: ItemSpec, _size: u64) -> anyhow::Result<bool> {
        Ok(false)
    }
}

/// Whole items by name, read and checked (the MariaDB loader's input: small SQL pieces).
/// `repo::reader::RepoItems` reads them from a repository.
pub trait ItemsByName: Send + Sync {
    /// The content of the item named `name`.
    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>>;
}

/// Where restores take items from: the content of one stored item as a stream, every piece
/// checked before its bytes are handed on (`repo::reader::ItemReader` over a repository).
pub trait ItemSource: Send + Sync {
    /// Open `item`'s content for reading.
    fn open_item<'a>(&'a self, item: &'a Item) -> anyhow::Result<Box<dyn Read + Send + 'a>>;
}
