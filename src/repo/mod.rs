//! The repository on the pool: layout, marker, objects, manifests, locks and leftovers.
//!
//! ```text
//! <repo>/mnbackup-repo.json      marker: format version, repository id, chunking parameters
//! <repo>/objects/<xx>/<id>       immutable objects, id = BLAKE3 of the file's bytes
//! <repo>/snapshots/<id>.json     one manifest per committed snapshot
//! <repo>/locks/<name>.json       lock files (host, pid, heartbeat)
//! <repo>/tmp/                    temporary files; in-progress records of running snapshots
//! <repo>/damaged/<id>            objects `verify` found damaged (rewritten by the next snapshot)
//! ```
//! `docs/repository-format.md` is the specification.

pub mod fsutil;
pub mod lock;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{integrity, MnError};
use crate::model::{Encoding, Manifest, PieceData};
use fsutil::{check_real_dir, fsync_dir, read_regular, write_atomic};

/// The largest manifest this build reads (a larger file is refused before it is read).
pub const MAX_MANIFEST: u64 = 64 * 1024 * 1024;
/// The largest marker file.
const MAX_MARKER: u64 = 64 * 1024;
/// The largest object file: a piece's zstd frame (or a delta of it) with headroom.
pub const MAX_OBJECT: u64 = 2 * MAX_PIECE + (1 << 20);

/// The repository format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The marker file whose presence makes a directory a repository.
pub const MARKER: &str = "mnbackup-repo.json";
const MARKER_FORMAT: &str = "mnbackup-repository";
/// Magic bytes at the start of every object file.
pub const OBJECT_MAGIC: &[u8; 4] = b"MNBO";
const MANIFEST_HEADER: &str = "mnbackup-manifest";

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
    fn byte(self) -> u8 {
        match self {
            ObjectType::Full => b'F',
            ObjectType::Delta => b'D',
            ObjectType::Signature => b'S',
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
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
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
    pub config: RepoConfig,
    pub stale_after: Duration,
    /// Objects to write again even though a file of that name exists (recorded as damaged by
    /// `verify`); set by the snapshot writer.
    pub rewrite: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Objects whose content was checked (read and hashed, or written by this node), with the
    /// file's identity then; a file that still has it is not read again (see
    /// [`Repo::object_good`]). Kept on the node between runs by the snapshot writer.
    pub verified: Arc<std::sync::Mutex<std::collections::HashMap<String, StatKey>>>,
}

/// A file's identity for the verified-objects cache: size, mtime, ctime (ns) and inode. Any write
/// to the file (a flipped byte, a truncation, a replacement) changes it.
pub type StatKey = (u64, i64, i64, u64);

fn stat_key(md: &fs::Metadata) -> StatKey {
    (
        md.len(),
        md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        md.ino(),
    )
}

/// The largest piece this build accepts from a manifest (a larger declared size is refused as
/// malformed before anything is allocated or written).
pub const MAX_PIECE: u64 = 64 * 1024 * 1024;

fn is_separate_mount(path: &Path) -> Option<bool> {
    let canon = path.canonicalize().ok()?;
    let parent = canon.parent()?;
    let a = fs::metadata(&canon).ok()?;
    let b = fs::metadata(parent).ok()?;
    Some(a.dev() != b.dev() || a.ino() == b.ino())
}

impl Repo {
    /// Create a repository at `path` (an empty or absent directory). Returns it and a warning
    /// when the path is not a separate mount (an unmounted NFS mount point looks like that).
    pub fn init(path: &Path) -> Result<(Repo, Option<String>)> {
        if path.join(MARKER).exists() {
            return Err(MnError::Usage(format!(
                "{} is already an mnbackup repository; nothing was changed",
                path.display()
            ))
            .into());
        }
        if path.exists() {
            let non_empty = fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .next()
                .is_some();
            if non_empty {
                return Err(MnError::Usage(format!(
                    "{} exists and is not empty; `init` only creates a repository in an empty \
                     or new directory (choose a subdirectory of the pool, e.g. {}/mnbackup)",
                    path.display(),
                    path.display()
                ))
                .into());
            }
        }
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let mut warning = None;
        // The repository directory itself is normally a subdirectory of the mount: check the
        // directory and its parent.
        let mounted = is_separate_mount(path).unwrap_or(false)
            || path.parent().and_then(is_separate_mount).unwrap_or(false);
        if !mounted {
            warning = Some(format!(
                "{} is not on a separately mounted filesystem (neither it nor its parent is a \
                 mount point). If the pool is an NFS mount, check that it is mounted before \
                 backing up: a repository on the local disk is lost with the node.",
                path.display()
            ));
        }
        for d in ["objects", "snapshots", "locks", "tmp"] {
            fs::create_dir_all(path.join(d))?;
        }
        for i in 0..256 {
            fs::create_dir_all(path.join("objects").join(format!("{i:02x}")))?;
        }
        let config = RepoConfig {
            format: MARKER_FORMAT.into(),
            version: FORMAT_VERSION,
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: Utc::now(),
            chunk_min: 1 << 20,
            chunk_avg: 4 << 20,
            chunk_max: 8 << 20,
        };
        // The marker is written last: a half-initialised directory is not a repository.
        write_atomic(
            &path.join("tmp"),
            &path.join(MARKER),
            &encode_marker(&config)?,
            false,
        )?;
        fsync_dir(path)?;
        Ok((
            Repo {
                root: path.to_path_buf(),
                config,
                stale_after: lock::DEFAULT_STALE,
                rewrite: Arc::default(),
                verified: Arc::default(),
            },
            warning,
        ))
    }

    /// Open an existing repository; refuse a directory without the marker (which is what an
    /// unmounted mount point looks like) and unknown format versions.
    pub fn open(path: &Path) -> Result<Repo> {
        let marker = path.join(MARKER);
        let bytes = match read_regular(&marker, MAX_MARKER) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let hint = if !path.exists() {
                    "the directory does not exist".to_string()
                } else if fs::read_dir(path)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
                {
                    "the directory is empty: if the pool is an NFS mount, it is probably not \
                     mounted (check `mount` / `df`)"
                        .to_string()
                } else {
                    "the directory has no repository marker".to_string()
                };
                return Err(MnError::NoRepo(format!(
                    "no mnbackup repository at {} ({hint}). Mount the pool, or create a \
                     repository with `mnbackup -r {} init`",
                    path.display(),
                    path.display()
                ))
                .into());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(MnError::NoRepo(format!(
                    "no mnbackup repository at {}: it is not a directory. Give the repository \
                     directory with -r (e.g. the pool's mnbackup directory)",
                    path.display()
                ))
                .into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(crate::error::unsafe_content(format!(
                    "the repository marker is not usable: {e}; refusing to use {}",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", marker.display()));
            }
        };
        let config = decode_marker(&bytes).map_err(|e| {
            if let Some(MnError::NoRepo(_) | MnError::Usage(_) | MnError::Unsafe(_)) =
                e.downcast_ref::<MnError>()
            {
                return e;
            }
            integrity(format!(
                "the repository marker {} is damaged or was changed ({e:#}); nothing was \
                 written. Restore the marker from another copy of the pool (or a copy of the \
                 file taken at `init`) before using the repository",
                marker.display()
            ))
        })?;
        if config.format != MARKER_FORMAT {
            return Err(MnError::NoRepo(format!(
                "{} is not an mnbackup repository marker",
                marker.display()
            ))
            .into());
        }
        if config.version != FORMAT_VERSION {
            return Err(MnError::Usage(format!(
                "the repository at {} has format version {}, this mnbackup reads version {}; \
                 use a matching mnbackup release",
                path.display(),
                config.version,
                FORMAT_VERSION
            ))
            .into());
        }
        for d in ["objects", "snapshots", "locks"] {
            check_real_dir(&path.join(d))?;
        }
        // tmp/ is needed only by writers (which check it again); a reader does not use it.
        if fs::symlink_metadata(path.join("tmp")).is_ok() {
            check_real_dir(&path.join("tmp"))?;
        }
        for i in 0..256 {
            let sub = path.join("objects").join(format!("{i:02x}"));
            if fs::symlink_metadata(&sub).is_ok() {
                check_real_dir(&sub)?;
            }
        }
        let damaged = path.join("damaged");
        if fs::symlink_metadata(&damaged).is_ok() {
            check_real_dir(&damaged)?;
        }
        Ok(Repo {
            root: path.to_path_buf(),
            config,
            stale_after: lock::DEFAULT_STALE,
            rewrite: Arc::default(),
            verified: Arc::default(),
        })
    }

    /// The directory of `damaged/` records.
    pub fn damaged_dir(&self) -> PathBuf {
        self.root.join("damaged")
    }

    /// The objects recorded as damaged (by `verify`).
    pub fn damaged_objects(&self) -> Result<HashSet<String>> {
        let dir = self.damaged_dir();
        let mut out = HashSet::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        check_real_dir(&dir)?;
        for e in rd {
            let name = e?.file_name().to_string_lossy().into_owned();
            if check_object_id(&name).is_ok() {
                out.insert(name);
            }
        }
        Ok(out)
    }

    /// Record an object as damaged: the next snapshot writes its content anew when it has it.
    pub fn mark_damaged(&self, id: &str) -> Result<()> {
        check_object_id(id)?;
        let dir = self.damaged_dir();
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        check_real_dir(&dir)?;
        let p = dir.join(id);
        match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(_) => fsync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).with_context(|| format!("recording {}", p.display())),
        }
    }

    /// Remove an object's damaged record (it was rewritten, removed, or reads fine).
    pub fn clear_damaged(&self, id: &str) {
        if check_object_id(id).is_ok() && check_real_dir(&self.damaged_dir()).is_ok() {
            let _ = fs::remove_file(self.damaged_dir().join(id));
        }
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The path of an object file. The id must be 64 lowercase hex digits (checked: ids come
    /// from manifests, which may be damaged or hostile).
    pub fn object_path(&self, id: &str) -> Result<PathBuf> {
        check_object_id(id)?;
        Ok(self.root.join("objects").join(&id[..2]).join(id))
    }

    /// Store an object; returns (id, file size, whether the file did not exist before).
    ///
    /// An existing file of that name is kept only when it is a regular file of the right size
    /// and not recorded as damaged; otherwise it is replaced by the new bytes (which hash to the
    /// name by construction), so a damaged object is repaired by the next write of its content.
    pub fn put_object(&self, ty: ObjectType, payload: &[u8]) -> Result<(String, u64, bool)> {
        let mut bytes = Vec::with_capacity(payload.len() + 6);
        bytes.extend_from_slice(OBJECT_MAGIC);
        bytes.push(1);
        bytes.push(ty.byte());
        bytes.extend_from_slice(payload);
        let id = blake3::hash(&bytes).to_hex().to_string();
        let path = self.object_path(&id)?;
        let existed = match fs::symlink_metadata(&path) {
            Ok(_) => {
                if self.object_good(&id, bytes.len() as u64) {
                    return Ok((id, bytes.len() as u64, false));
                }
                tracing::info!("object {id} was damaged; writing it again");
                true
            }
            Err(_) => false,
        };
        write_atomic(&self.tmp_dir(), &path, &bytes, false)?;
        if let Ok(md) = fs::symlink_metadata(&path) {
            self.verified
                .lock()
                .unwrap()
                .insert(id.clone(), stat_key(&md));
        }
        if existed {
            self.rewrite.lock().unwrap().remove(&id);
            self.clear_damaged(&id);
        }
        Ok((id, bytes.len() as u64, !existed))
    }

    /// Whether an object file exists as a regular file of the given size, is not recorded as
    /// damaged, and holds the content its name promises: checked by reading and hashing it
    /// unless it was checked (or written) before and the file has not changed since (same size,
    /// mtime, ctime and inode). This is the check before a stored piece is built on.
    pub fn object_good(&self, id: &str, size: u64) -> bool {
        let Ok(path) = self.object_path(id) else {
            return false;
        };
        let md = match fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_file() && md.len() == size => md,
            _ => return false,
        };
        if self.rewrite.lock().unwrap().contains(id) {
            return false;
        }
        let key = stat_key(&md);
        if self.verified.lock().unwrap().get(id) == Some(&key) {
            return true;
        }
        let good = read_regular(&path, size)
            .map(|b| b.len() as u64 == size && blake3::hash(&b).to_hex().as_str() == id)
            .unwrap_or(false);
        if good {
            self.verified.lock().unwrap().insert(id.to_string(), key);
        }
        good
    }

    /// Load the verified-objects cache (a file on the node; missing or unreadable: empty).
    pub fn load_verified(&self, file: &Path) {
        let Ok(b) = read_regular(file, 1 << 30) else {
            return;
        };
        let mut map = self.verified.lock().unwrap();
        for line in String::from_utf8_lossy(&b).lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() != 5 || check_object_id(f[0]).is_err() {
                continue;
            }
            if let (Ok(a), Ok(b), Ok(c), Ok(d)) =
                (f[1].parse(), f[2].parse(), f[3].parse(), f[4].parse())
            {
                map.insert(f[0].to_string(), (a, b, c, d));
            }
        }
    }

    /// Save the verified-objects cache (best effort: a failing cache never fails a backup).
    pub fn save_verified(&self, file: &Path) {
        let Some(dir) = file.parent() else { return };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let mut text = String::new();
        for (id, (a, b, c, d)) in self.verified.lock().unwrap().iter() {
            text.push_str(&format!("{id} {a} {b} {c} {d}\n"));
        }
        let tmp = dir.join(fsutil::temp_name("verified"));
        if fs::write(&tmp, text).is_ok() && fs::rename(&tmp, file).is_ok() {
            return;
        }
        let _ = fs::remove_file(&tmp);
    }

    /// Read an object, check its hash and type, return its payload.
    pub fn get_object(&self, id: &str, expect: ObjectType) -> Result<Vec<u8>> {
        self.get_object_sized(id, expect, None)
    }

    /// Read an object whose file size is recorded (`stored`): a file of another size is refused
    /// before it is read.
    pub fn get_object_sized(
        &self,
        id: &str,
        expect: ObjectType,
        stored: Option<u64>,
    ) -> Result<Vec<u8>> {
        let path = self.object_path(id)?;
        if let Some(want) = stored.filter(|s| *s > 0) {
            if let Ok(md) = fs::symlink_metadata(&path) {
                if md.len() != want {
                    return Err(integrity(format!(
                        "object {id} is damaged: its file is {} bytes, recorded {want}",
                        md.len()
                    )));
                }
            }
        }
        let max = stored
            .filter(|s| *s > 0)
            .unwrap_or(MAX_OBJECT)
            .min(MAX_OBJECT);
        let bytes = match read_regular(&path, max) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(integrity(format!(
                    "object {id} is missing from the repository"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(integrity(format!("object {id} is damaged: {e}")));
            }
            Err(e) => return Err(e).with_context(|| format!("reading object {}", path.display())),
        };
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if actual != id {
            return Err(integrity(format!(
                "object {id} is damaged (its content hashes to {actual})"
            )));
        }
        if bytes.len() < 6 || &bytes[..4] != OBJECT_MAGIC || bytes[4] != 1 {
            return Err(integrity(format!("object {id} has no valid header")));
        }
        let ty = ObjectType::from_byte(bytes[5]);
        if ty != Some(expect) {
            return Err(integrity(format!(
                "object {id} is a {:?} object where a {expect:?} object was expected",
                ty
            )));
        }
        Ok(bytes[6..].to_vec())
    }

    /// Size of an object file, or None when it is missing.
    pub fn object_size(&self, id: &str) -> Result<Option<u64>> {
        match fs::metadata(self.object_path(id)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// All snapshot ids, oldest first (ids sort by time).
    pub fn snapshot_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(self.snapshots_dir())
            .with_context(|| format!("listing {}", self.snapshots_dir().display()))?
        {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if !id.contains('.') {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Load and check one manifest.
    pub fn load_manifest(&self, id: &str) -> Result<Manifest> {
        check_snapshot_id(id)?;
        let path = self.snapshots_dir().join(format!("{id}.json"));
        let bytes = match read_regular(&path, MAX_MANIFEST) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(crate::error::unsafe_content(format!(
                    "snapshot {id} is not used: its manifest {e}"
                )));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading manifest {}", path.display()))
            }
        };
        let m = decode_manifest(&bytes).map_err(|e| {
            if let Some(MnError::Unsafe(msg)) = e.downcast_ref::<MnError>() {
                return crate::error::unsafe_content(format!("snapshot {id} is not used: {msg}"));
            }
            integrity(format!(
                "the manifest of snapshot {id} is damaged: {e:#}. That snapshot cannot be \
                 used; other snapshots are not affected (`mnbackup verify` checks them)"
            ))
        })?;
        if m.id != id {
            return Err(crate::error::unsafe_content(format!(
                "snapshot {id} is not used: its manifest names itself `{}` (a manifest was \
                 copied or renamed by hand)",
                m.id.escape_debug()
            )));
        }
        Ok(m)
    }

    /// Load every manifest; damaged ones are returned as errors beside the good ones.
    pub fn load_all(&self) -> Result<Vec<std::result::Result<Manifest, (String, anyhow::Error)>>> {
        Ok(self
            .snapshot_ids()?
            .into_iter()
            .map(|id| self.load_manifest(&id).map_err(|e| (id, e)))
            .collect())
    }

    /// Resolve `latest`, a full id or a unique prefix of one.
    pub fn resolve(&self, spec: &str) -> Result<String> {
        let ids = self.snapshot_ids()?;
        if spec == "latest" || spec == "latest:safety" {
            // `latest` is the newest snapshot of the node's own sources, never a safety snapshot
            // that `restore --force` took of the target; `latest:safety` is the newest of those.
            // A manifest that does not load is returned as it is, so its error is what the
            // operator sees.
            let want_safety = spec == "latest:safety";
            for id in ids.iter().rev() {
                let is_safety = match self.load_manifest(id) {
                    Ok(m) => m.trigger == "safety",
                    Err(_) => return Ok(id.clone()),
                };
                if is_safety == want_safety {
                    return Ok(id.clone());
                }
            }
            return Err(MnError::Usage(if want_safety {
                format!(
                    "the repository at {} has no safety snapshot (restore --force takes one)",
                    self.root.display()
                )
            } else {
                format!(
                    "the repository at {} has no snapshots yet; take one with `mnbackup snapshot`",
                    self.root.display()
                )
            })
            .into());
        }
        if ids.iter().any(|i| i == spec) {
            return Ok(spec.to_string());
        }
        let m: Vec<_> = ids.iter().filter(|i| i.starts_with(spec)).collect();
        match m.len() {
            1 => Ok(m[0].clone()),
            0 => Err(MnError::Usage(format!(
                "no snapshot `{spec}` in {}; `mnbackup list` shows the snapshots",
                self.root.display()
            ))
            .into()),
            n => Err(MnError::Usage(format!(
                "`{spec}` matches {n} snapshots; give more of the id (`mnbackup list`)"
            ))
            .into()),
        }
    }

    /// Commit a manifest: the snapshot exists from the moment the rename is durable.
    pub fn commit_manifest(&self, m: &Manifest) -> Result<u64> {
        let bytes = encode_manifest(m)?;
        let path = self.snapshots_dir().join(format!("{}.json", m.id));
        write_atomic(&self.tmp_dir(), &path, &bytes, false)?;
        Ok(bytes.len() as u64)
    }

    /// Remove a manifest (forget). Durable on return.
    pub fn remove_manifest(&self, id: &str) -> Result<()> {
        check_snapshot_id(id)?;
        let p = self.snapshots_dir().join(format!("{id}.json"));
        fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        fsync_dir(&self.snapshots_dir())
    }

    /// Take a lock on the repository.
    pub fn lock(&self, exclusive: bool, command: &str, wait: Duration) -> Result<lock::Lock> {
        lock::acquire(
            &self.locks_dir(),
            &self.tmp_dir(),
            exclusive,
            command,
            self.stale_after,
            wait,
        )
    }

    /// Take the exclusive lock of a command that frees space (`forget`, `prune`) even on a full
    /// pool: when the lock file cannot be written for lack of space and no live lock of another
    /// process exists (so no writer runs: a writer always holds a lock file), `free` removes one
    /// thing it would remove anyway (returns false when it has nothing left), then the lock is
    /// taken again. The lock is held for everything after the first freed file.
    pub fn lock_freeing_space(
        &self,
        command: &str,
        wait: Duration,
        mut free: impl FnMut() -> Result<bool>,
    ) -> Result<lock::Lock> {
        loop {
            match self.lock(true, command, wait) {
                Ok(l) => return Ok(l),
                Err(e) if crate::error::exit_code(&e) == crate::error::EXIT_NO_SPACE => {
                    let now = Utc::now();
                    let live = lock::list_locks(&self.locks_dir())?
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

    /// Every object id referenced by the given manifests (pieces, delta bases, signatures).
    pub fn referenced_objects<'a>(
        manifests: impl IntoIterator<Item = &'a Manifest>,
    ) -> HashSet<String> {
        let mut set = HashSet::new();
        for m in manifests {
            for item in &m.items {
                for p in &item.pieces {
                    mark_piece(&p.piece, &mut set);
                    if let Some(s) = &p.sig {
                        set.insert(s.clone());
                    }
                }
            }
        }
        set
    }

    /// Every object id in the repository with its file size.
    pub fn all_objects(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let objects = self.root.join("objects");
        for sub in
            fs::read_dir(&objects).with_context(|| format!("listing {}", objects.display()))?
        {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if check_object_id(&name).is_ok() {
                    out.push((name, f.metadata()?.len()));
                }
            }
        }
        Ok(out)
    }

    /// Clean up after interrupted runs. Call only while holding an exclusive lock (nobody else
    /// writes): removes every temporary file, and the objects an interrupted snapshot recorded
    /// in its in-progress record as newly written by it. Nothing else is removed (this is not a
    /// garbage collection: a manifest that does not load never loses objects here; `prune`
    /// decides about unreferenced objects). Returns (files, bytes).
    pub fn clean_leftovers(&self) -> Result<(u64, u64)> {
        let mut files = 0;
        let mut bytes = 0;
        let tmp = self.tmp_dir();
        check_real_dir(&tmp)?;
        let mut written: Vec<String> = Vec::new();
        for e in fs::read_dir(&tmp)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix("inprogress-") {
                written.extend(self.interrupted_objects(id, &e.path()));
            }
            let md = e.path().symlink_metadata();
            bytes += md.as_ref().map(|m| m.len()).unwrap_or(0);
            if md.map(|m| m.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(e.path())
            } else {
                fs::remove_file(e.path())
            }
            .with_context(|| format!("removing leftover {}", e.path().display()))?;
            files += 1;
        }
        if !written.is_empty() {
            let all = self.load_all()?;
            if all.iter().any(|r| r.is_err()) {
                tracing::warn!(
                    "an interrupted snapshot left {} objects; they are kept because some \
                     manifest does not load (`mnbackup verify` names it; `mnbackup prune` \
                     removes unreferenced objects once every manifest loads)",
                    written.len()
                );
            } else {
                let manifests: Vec<Manifest> = all.into_iter().filter_map(|r| r.ok()).collect();
                let keep = Self::referenced_objects(&manifests);
                for id in written {
                    if keep.contains(&id) {
                        continue;
                    }
                    let p = self.object_path(&id)?;
                    if let Ok(md) = fs::symlink_metadata(&p) {
                        if fs::remove_file(&p).is_ok() {
                            files += 1;
                            bytes += md.len();
                        }
                    }
                }
            }
        }
        if files > 0 {
            fsync_dir(&tmp)?;
        }
        Ok((files, bytes))
    }

    /// The objects an interrupted snapshot recorded as written by it (none when its manifest
    /// was committed after all, or the record is not readable).
    fn interrupted_objects(&self, id: &str, record: &Path) -> Vec<String> {
        if check_snapshot_id(id).is_err()
            || fs::symlink_metadata(self.snapshots_dir().join(format!("{id}.json"))).is_ok()
        {
            return Vec::new();
        }
        let Ok(bytes) = read_regular(record, 1 << 30) else {
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
        let tmp = self.tmp_dir();
        check_real_dir(&tmp)?;
        let p = tmp.join(format!("inprogress-{id}"));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&p)
            .map_err(|e| fsutil::write_error(e, "the in-progress record", &p))?;
        f.write_all(format!("{id}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| fsutil::write_error(e, "the in-progress record", &p))?;
        fsync_dir(&tmp)?;
        Ok(InProgress {
            path: p,
            file: std::sync::Mutex::new(f),
        })
    }
}

/// The in-progress record of a running snapshot (`tmp/inprogress-<id>`).
#[derive(Debug)]
pub struct InProgress {
    pub path: PathBuf,
    file: std::sync::Mutex<fs::File>,
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
        self.file
            .lock()
            .unwrap()
            .write_all(text.as_bytes())
            .map_err(|e| fsutil::write_error(e, "the in-progress record", &self.path))
    }

    /// Remove the record.
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn mark_piece(p: &PieceData, set: &mut HashSet<String>) {
    set.insert(p.data.object().0.to_string());
    if let Encoding::Delta { base, .. } = &p.data {
        mark_piece(base, set);
    }
}

/// Check that an object id is 64 lowercase hex digits.
pub fn check_object_id(id: &str) -> Result<()> {
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(crate::error::unsafe_content(format!(
            "malformed object id `{}` in the repository",
            id.escape_debug()
        )))
    }
}

/// Check a snapshot id: letters, digits and '-' only (it becomes a file name).
pub fn check_snapshot_id(id: &str) -> Result<()> {
    if !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(crate::error::unsafe_content(format!(
            "malformed snapshot id `{}`",
            id.escape_debug()
        )))
    }
}

/// Serialize a manifest: a header line with the format version and the BLAKE3 of the JSON body,
/// then the body.
pub fn encode_manifest(m: &Manifest) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(m)?;
    let mut out = format!(
        "{MANIFEST_HEADER} v{FORMAT_VERSION} blake3={}\n",
        blake3::hash(&body).to_hex()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parse and check a manifest file.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .context("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).context("header is not text")?;
    let mut parts = header.split(' ');
    if parts.next() != Some(MANIFEST_HEADER) {
        bail!("not a manifest header");
    }
    let version = parts.next().unwrap_or("");
    if version != format!("v{FORMAT_VERSION}") {
        bail!("unknown manifest version `{version}`");
    }
    let hash = parts
        .next()
        .and_then(|h| h.strip_prefix("blake3="))
        .context("no checksum in the header")?;
    let body = &bytes[nl + 1..];
    if blake3::hash(body).to_hex().as_str() != hash {
        bail!("checksum mismatch (the file was changed or truncated)");
    }
    let m: Manifest = serde_json::from_slice(body).context("body is not a valid manifest")?;
    crate::codec::validate_manifest(&m)?;
    Ok(m)
}

/// Serialize the marker: the configuration's fields plus `checksum`, the BLAKE3 of the compact
/// JSON of the other fields.
pub fn encode_marker(c: &RepoConfig) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(c)?;
    let mut v = serde_json::to_value(c)?;
    v["checksum"] = serde_json::Value::String(blake3::hash(&body).to_hex().to_string());
    Ok(serde_json::to_vec_pretty(&v)?)
}

/// Parse, checksum-check and validate a marker.
pub fn decode_marker(bytes: &[u8]) -> Result<RepoConfig> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).context("not valid JSON")?;
    let obj = v.as_object_mut().context("not a JSON object")?;
    if obj.get("format").and_then(|f| f.as_str()) != Some(MARKER_FORMAT) {
        return Err(
            MnError::NoRepo("the marker is not an mnbackup repository marker".into()).into(),
        );
    }
    let version = obj.get("version").and_then(|f| f.as_u64());
    if version != Some(FORMAT_VERSION as u64) {
        return Err(MnError::Usage(format!(
            "the repository has format version {}, this mnbackup reads version {FORMAT_VERSION}; \
             use a matching mnbackup release",
            version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(none)".into())
        ))
        .into());
    }
    // A marker written before the checksum existed (every repository of the first release) has
    // none: it stays readable, and the validation below still refuses every unsafe value.
    let sum = match obj.remove("checksum") {
        Some(serde_json::Value::String(s)) => Some(s),
        None => None,
        Some(_) => bail!("its checksum is not a string"),
    };
    let c: RepoConfig = serde_json::from_value(v).context("its fields are not valid")?;
    if let Some(sum) = sum {
        let body = serde_json::to_vec(&c)?;
        if blake3::hash(&body).to_hex().as_str() != sum {
            bail!("checksum mismatch (a value was changed)");
        }
    }
    validate_marker(&c)?;
    Ok(c)
}

/// Check every field of the marker against what this build accepts.
pub fn validate_marker(c: &RepoConfig) -> Result<()> {
    use fastcdc::v2020 as cdc;
    if c.id.len() != 32
        || !c
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(crate::error::unsafe_content(format!(
            "the repository id `{}` is not 32 lowercase hex digits",
            c.id.escape_debug()
        )));
    }
    let ok = (cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&c.chunk_min)
        && (cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&c.chunk_avg)
        && (cdc::MAXIMUM_MIN..=cdc::MAXIMUM_MAX).contains(&c.chunk_max)
        && c.chunk_min <= c.chunk_avg
        && c.chunk_avg <= c.chunk_max
        && (c.chunk_max as u64) <= MAX_PIECE;
    if !ok {
        return Err(crate::error::unsafe_content(format!(
            "the repository's chunk sizes (min {}, avg {}, max {}) are outside what this build \
             accepts (min {}..={}, avg {}..={}, max {}..={}, min <= avg <= max)",
            c.chunk_min,
            c.chunk_avg,
            c.chunk_max,
            cdc::MINIMUM_MIN,
            cdc::MINIMUM_MAX,
            cdc::AVERAGE_MIN,
            cdc::AVERAGE_MAX,
            cdc::MAXIMUM_MIN,
            cdc::MAXIMUM_MAX
        )));
    }
    Ok(())
}
