//! The repository: layout, marker, objects, manifests, locks and leftovers, over any
//! [`Backend`](crate::store::Backend).
//!
//! ```text
//! mnbackup-repo.json      marker: format version, repository id, chunking parameters
//! objects/<xx>/<id>       immutable objects; v1: id = BLAKE3 of the file's bytes; v2: id =
//!                         keyed BLAKE3 of the plain content, file sealed (see `sealing.rs`)
//! snapshots/<id>.json     one manifest per committed snapshot (v2: compressed and sealed)
//! keys/<id>               v2 encrypted: the master key wrapped by a passphrase (`keys.rs`)
//! locks/<name>.json       lock files (host, pid, heartbeat)
//! tmp/                    temporary files; in-progress records of running snapshots
//! damaged/<id>            objects `verify` found damaged (rewritten by the next snapshot)
//! packs/<xx>/<packid>     small objects stored together (repositories with `packs`)
//! index/<packid>          the index of a pack
//! ```
//! `docs/repository-format.md` is the specification. Keys are relative to the store's root.

pub mod codec;
pub mod crypto;
pub mod keys;
pub mod leftovers;
pub mod lock;
pub mod manifests;
pub mod migrate;
pub mod objects;
pub mod packs;
pub mod reader;
pub mod sealing;
pub mod writer;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{integrity, MnError};
use crate::store::{Backend, StoreError};

pub use crate::model::{check_object_id, check_snapshot_id, MAX_MANIFEST, MAX_OBJECT, MAX_PIECE};
pub use leftovers::InProgress;
pub use manifests::{
    decode_manifest, decode_marker, encode_manifest, encode_marker, validate_marker,
};

/// The repository format version `init` creates. This build reads and writes
/// [`FORMAT_V1`] repositories too, exactly as the first release did.
pub const FORMAT_VERSION: u32 = 2;
/// The first format: unencrypted objects named by the BLAKE3 of their bytes, JSON manifests.
pub const FORMAT_V1: u32 = 1;
/// The marker file whose presence makes a directory a repository.
pub const MARKER: &str = "mnbackup-repo.json";
const MARKER_FORMAT: &str = "mnbackup-repository";
/// Magic bytes at the start of every object file.
pub const OBJECT_MAGIC: &[u8; 4] = b"MNBO";

/// The directories of the layout (keys' first components).
pub const OBJECTS: &str = "objects";
pub const SNAPSHOTS: &str = "snapshots";
pub const LOCKS: &str = "locks";
pub const TMP: &str = "tmp";
pub const DAMAGED: &str = "damaged";
pub const KEYS: &str = "keys";

/// The kinds of stored objects (the byte after the magic and version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// A zstd frame of a whole piece.
    Full,
    /// A zstd frame of a fast_rsync delta.
    Delta,
    /// A fast_rsync signature (uncompressed: it does not compress).
    Signature,
}

impl ObjectType {
    pub(crate) fn byte(self) -> u8 {
        match self {
            ObjectType::Full => b'F',
            ObjectType::Delta => b'D',
            ObjectType::Signature => b'S',
        }
    }
    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'F' => Some(ObjectType::Full),
            b'D' => Some(ObjectType::Delta),
            b'S' => Some(ObjectType::Signature),
            _ => None,
        }
    }
}

/// Parameters fixed at `init` and stored in the marker (with a `checksum` field over the rest,
/// see [`encode_marker`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: DateTime<Utc>,
    /// Content-defined chunking: minimum, average and maximum piece size in bytes.
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    /// Small objects are written into packs (`packs/`, `index/`). Absent (false) in
    /// repositories of the first release, which stay as they are; packs are read always.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packs: bool,
    /// Format v2: `xchacha20poly1305` or `none` (absent in v1 markers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Format v2 encrypted: a keyed hash proving a master key (a paper key) is this
    /// repository's ([`crypto::MasterKey::check_value`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repo {
    store: Arc<dyn Backend>,
    pub config: RepoConfig,
    pub stale_after: Duration,
    /// The host whose snapshot series this handle works on (`latest`, the delta parent):
    /// the system host name unless the configuration or `--host` says otherwise.
    pub host: String,
    /// Objects to write again even though a file of that name exists (recorded as damaged by
    /// `verify`); set by the snapshot writer.
    pub rewrite: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Objects whose content was checked (read and hashed, or written by this node), with the
    /// stored value's identity then; a value that still has it is not read again (see
    /// [`Repo::object_good`]). Kept on the node between runs by the snapshot writer.
    pub verified: Arc<std::sync::Mutex<std::collections::HashMap<String, StatKey>>>,
    /// The pack index (loaded on first use) and the objects waiting for this handle's next
    /// pack (see [`packs`]).
    packs: Arc<packs::PackState>,
    /// How objects and manifests are named and sealed (v1, v2 plain, v2 with the master key,
    /// or v2 encrypted but not unlocked yet).
    pub(crate) sealing: sealing::Sealing,
    /// The key file that unlocked the repository (`key passwd` replaces it).
    pub key_id: Option<String>,
}

/// A stored value's identity for the verified-objects cache (local: size, mtime, ctime (ns) and
/// inode). Any write to the file (a flipped byte, a truncation, a replacement) changes it.
pub type StatKey = (u64, i64, i64, u64);

/// A storage error as an `anyhow::Error` whose kind decides the exit code.
pub(crate) fn se(e: StoreError) -> anyhow::Error {
    e.into_anyhow()
}

impl Repo {
    fn with_store(store: Arc<dyn Backend>, config: RepoConfig) -> Repo {
        let sealing = sealing::Sealing::for_config(&config);
        Repo {
            sealing,
            key_id: None,
            store,
            config,
            stale_after: lock::DEFAULT_STALE,
            host: lock::hostname(),
            rewrite: Arc::default(),
            verified: Arc::default(),
            packs: Arc::default(),
        }
    }

    /// Create an unencrypted format v2 repository at `location` (a path or URL; an empty or
    /// absent directory). Returns it and a warning when the path is not a separate mount (an
    /// unmounted NFS mount point looks like that). The command `init` encrypts by default
    /// ([`Repo::init_with`]).
    pub fn init(location: &Path) -> Result<(Repo, Option<String>)> {
        Self::init_on(crate::store::open(&location.to_string_lossy())?)
    }

    /// Create an unencrypted format v2 repository in an empty store (small objects in packs).
    pub fn init_on(store: Arc<dyn Backend>) -> Result<(Repo, Option<String>)> {
        Self::init_with(store, FORMAT_VERSION, None, true)
    }

    /// Create a format v1 repository (as the first release did: no packs) in an empty store.
    pub fn init_v1_on(store: Arc<dyn Backend>) -> Result<(Repo, Option<String>)> {
        Self::init_with(store, FORMAT_V1, None, false)
    }

    /// Create a repository of format `version` in an empty store; v2 with a passphrase is
    /// encrypted (a new random master key, wrapped in the first key file); `packs`: whether
    /// small objects are written into packs (false: every object is its own file).
    pub fn init_with(
        store: Arc<dyn Backend>,
        version: u32,
        passphrase: Option<&[u8]>,
        packs: bool,
    ) -> Result<(Repo, Option<String>)> {
        if store.stat(MARKER).is_ok() {
            return Err(MnError::Usage(format!(
                "{} is already an mnbackup repository; nothing was changed",
                store.location()
            ))
            .into());
        }
        if version == FORMAT_V1 && passphrase.is_some() {
            return Err(crate::error::usage("format v1 has no encryption"));
        }
        let warning = store.create()?;
        for d in [OBJECTS, SNAPSHOTS, LOCKS, TMP] {
            store.ensure_dir(d).map_err(se)?;
        }
        for i in 0..256 {
            store
                .ensure_dir(&format!("{OBJECTS}/{i:02x}"))
                .map_err(se)?;
            if packs {
                store
                    .ensure_dir(&format!("{}/{i:02x}", packs::PACKS))
                    .map_err(se)?;
            }
        }
        if packs {
            store.ensure_dir(packs::INDEX).map_err(se)?;
        }
        let mut config = RepoConfig {
            format: MARKER_FORMAT.into(),
            version,
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: Utc::now(),
            chunk_min: 1 << 20,
            chunk_avg: 4 << 20,
            chunk_max: 8 << 20,
            packs,
            encryption: None,
            key_check: None,
        };
        let mut master = None;
        if version == FORMAT_VERSION {
            config.encryption = Some(crypto::NONE.into());
            if let Some(pass) = passphrase {
                let k = crypto::MasterKey::random();
                config.encryption = Some(crypto::XCHACHA.into());
                config.key_check = Some(k.check_value(&config.id));
                master = Some((k, pass));
            }
        }
        let mut repo = Repo::with_store(store.clone(), config.clone());
        if let Some((k, pass)) = master {
            store.ensure_dir(KEYS).map_err(se)?;
            repo.sealing = sealing::Sealing::Key(Arc::new(k));
            repo.key_id = Some(repo.add_key(pass)?);
        }
        // The marker is written last: a half-initialised directory is not a repository.
        manifests::put_new(&*store, MARKER, &encode_marker(&config)?).map_err(se)?;
        Ok((repo, warning))
    }

    /// Open an existing repository at `location` (a path or `file://` URL); refuse a location
    /// without the marker (which is what an unmounted mount point looks like) and unknown format
    /// versions.
    pub fn open(location: &Path) -> Result<Repo> {
        Self::open_on(crate::store::open(&location.to_string_lossy())?)
    }

    /// Open the repository in `store`.
    pub fn open_on(store: Arc<dyn Backend>) -> Result<Repo> {
        let loc = store.location();
        let bytes = match store.get(MARKER, crate::model::MAX_MARKER) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Err(MnError::NoRepo(format!(
                    "no mnbackup repository at {loc} ({}). Mount the pool, or create a \
                     repository with `mnbackup -r {loc} init`",
                    store.explain_missing()
                ))
                .into());
            }
            Err(StoreError::Permanent(m)) if m.contains("Not a directory") => {
                return Err(MnError::NoRepo(format!(
                    "no mnbackup repository at {loc}: it is not a directory. Give the \
                     repository directory with -r (e.g. the pool's mnbackup directory)"
                ))
                .into());
            }
            Err(StoreError::Refused(e)) => {
                return Err(crate::error::unsafe_content(format!(
                    "the repository marker is not usable: {e}; refusing to use {loc}"
                )));
            }
            Err(e) => return Err(se(e).context(format!("reading the marker of {loc}"))),
        };
        let config = decode_marker(&bytes).map_err(|e| {
            if let Some(MnError::NoRepo(_) | MnError::Usage(_) | MnError::Unsafe(_)) =
                e.downcast_ref::<MnError>()
            {
                return e;
            }
            integrity(format!(
                "the repository marker {loc}/{MARKER} is damaged or was changed ({e:#}); \
                 nothing was written. Restore the marker from another copy of the pool (or a \
                 copy of the file taken at `init`) before using the repository"
            ))
        })?;
        if !(FORMAT_V1..=FORMAT_VERSION).contains(&config.version) {
            return Err(MnError::Usage(format!(
                "the repository at {loc} has format version {}, this mnbackup reads versions \
                 {FORMAT_V1} and {FORMAT_VERSION}; use a matching mnbackup release",
                config.version,
            ))
            .into());
        }
        sealing::check_marker_encryption(&store, &config)?;
        for d in [OBJECTS, SNAPSHOTS] {
            store.check_dir(d).map_err(se)?;
        }
        // locks/ and tmp/ may be empty, and copies of a pool often drop empty directories: a
        // command that writes into one recreates it (`Backend::layout_dir`); a reader does not
        // need them.
        for d in [LOCKS, TMP, DAMAGED, packs::PACKS, packs::INDEX] {
            if store.has_dir(d) {
                store.check_dir(d).map_err(se)?;
            }
        }
        let tops: &[&str] = if store.has_dir(packs::PACKS) {
            &[OBJECTS, packs::PACKS]
        } else {
            &[OBJECTS]
        };
        for i in 0..256 {
            for top in tops {
                let sub = format!("{top}/{i:02x}");
                if store.has_dir(&sub) {
                    store.check_dir(&sub).map_err(se)?;
                }
            }
        }
        Ok(Repo::with_store(store, config))
    }

    /// This handle with its store wrapped by a decorator (e.g. [`crate::store::throttle`]); the
    /// pack and cache state is shared with `self`.
    pub fn with_store_wrapped(
        &self,
        wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
    ) -> Repo {
        let mut r = self.clone();
        r.store = wrap(r.store.clone());
        r
    }

    /// The store the repository lives in.
    pub fn store(&self) -> &Arc<dyn Backend> {
        &self.store
    }

    /// Where the repository is (a path or URL), for messages.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The repository's directory when it is on a local (or NFS) filesystem.
    pub fn local_root(&self) -> Option<&Path> {
        self.store.local_root()
    }

    /// Take a lock on the repository.
    pub fn lock(&self, exclusive: bool, command: &str, wait: Duration) -> Result<lock::Lock> {
        lock::acquire(&self.store, exclusive, command, self.stale_after, wait)
    }

    /// Take a writer's shared lock (a snapshot): several writers at once, never without a lock
    /// file.
    pub fn lock_writer(&self, command: &str, wait: Duration) -> Result<lock::Lock> {
        lock::acquire_kind(
            &self.store,
            lock::Kind::Writer,
            command,
            self.stale_after,
            wait,
        )
    }

    /// Take a lock of `kind` (see [`lock::Kind`]).
    pub fn lock_kind(&self, kind: lock::Kind, command: &str, wait: Duration) -> Result<lock::Lock> {
        lock::acquire_kind(&self.store, kind, command, self.stale_after, wait)
    }

    /// Remove stale locks (or all, with `all`). Returns the removed locks.
    pub fn remove_locks(&self, all: bool) -> Result<Vec<(String, Option<lock::LockInfo>)>> {
        lock::remove_locks(&self.store, self.stale_after, all)
    }

    /// Take the lock (`kind`: exclusive, or forget's) of a command that frees space (`forget`,
    /// `prune`) even on a full pool: when the lock file cannot be written for lack of space and
    /// no live lock of another process exists (so no writer runs: a writer always holds a lock
    /// file), `free` removes one thing it would remove anyway (returns false when it has nothing
    /// left), then the lock is taken again. The lock is held for everything after the first
    /// freed file.
    pub fn lock_freeing_space(
        &self,
        kind: lock::Kind,
        command: &str,
        wait: Duration,
        mut free: impl FnMut() -> Result<bool>,
    ) -> Result<lock::Lock> {
        loop {
            match self.lock_kind(kind, command, wait) {
                Ok(l) => return Ok(l),
                Err(e) if crate::error::exit_code(&e) == crate::error::EXIT_NO_SPACE => {
                    let now = Utc::now();
                    let live = lock::list_locks(&self.store)?
                        .into_iter()
                        .filter_map(|(_, i)| i)
                        .find(|i| !i.is_stale(now, self.stale_after));
                    if let Some(other) = live {
                        return Err(MnError::Locked(format!(
                            "the pool is full and the repository is locked: {}; wait for it to \
                             end, then run `mnbackup {command}` again",
                            other.describe()
                        ))
                        .into());
                    }
                    tracing::warn!(
                        "the pool is full: no lock file can be written; no other process holds \
                         the repository, so `{command}` frees space before taking the lock"
                    );
                    if !free()? {
                        return Err(e.context(format!(
                            "`{command}` has nothing to remove that would make room for its \
                             lock; free space on the pool by other means"
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests;
