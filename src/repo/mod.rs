//! The repository on the pool: layout, marker, objects, manifests, locks and leftovers.
//!
//! ```text
//! <repo>/mnbackup-repo.json      marker: format version, repository id, chunking parameters
//! <repo>/objects/<xx>/<id>       immutable objects, id = BLAKE3 of the file's bytes
//! <repo>/snapshots/<id>.json     one manifest per committed snapshot
//! <repo>/locks/<name>.json       lock files (host, pid, heartbeat)
//! <repo>/tmp/                    temporary files; in-progress markers of running snapshots
//! ```
//! `docs/repository-format.md` is the specification.

pub mod fsutil;
pub mod lock;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{integrity, MnError};
use crate::model::{Encoding, Manifest, PieceData};
use fsutil::{fsync_dir, write_atomic};

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

/// Parameters fixed at `init` and stored in the marker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
            &serde_json::to_vec_pretty(&config)?,
            false,
        )?;
        fsync_dir(path)?;
        Ok((
            Repo {
                root: path.to_path_buf(),
                config,
                stale_after: lock::DEFAULT_STALE,
            },
            warning,
        ))
    }

    /// Open an existing repository; refuse a directory without the marker (which is what an
    /// unmounted mount point looks like) and unknown format versions.
    pub fn open(path: &Path) -> Result<Repo> {
        let marker = path.join(MARKER);
        let bytes = match fs::read(&marker) {
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
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", marker.display()));
            }
        };
        let config: RepoConfig = serde_json::from_slice(&bytes).map_err(|e| {
            integrity(format!(
                "the repository marker {} is damaged ({e}); restore it from another copy of the \
                 pool or contact support before writing anything",
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
        Ok(Repo {
            root: path.to_path_buf(),
            config,
            stale_after: lock::DEFAULT_STALE,
        })
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

    /// Store an object; returns (id, file size, whether it was newly written).
    pub fn put_object(&self, ty: ObjectType, payload: &[u8]) -> Result<(String, u64, bool)> {
        let mut bytes = Vec::with_capacity(payload.len() + 6);
        bytes.extend_from_slice(OBJECT_MAGIC);
        bytes.push(1);
        bytes.push(ty.byte());
        bytes.extend_from_slice(payload);
        let id = blake3::hash(&bytes).to_hex().to_string();
        let path = self.object_path(&id)?;
        let written = write_atomic(&self.tmp_dir(), &path, &bytes, true)?;
        Ok((id, bytes.len() as u64, written))
    }

    /// Read an object, check its hash and type, return its payload.
    pub fn get_object(&self, id: &str, expect: ObjectType) -> Result<Vec<u8>> {
        let path = self.object_path(id)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(integrity(format!(
                    "object {id} is missing from the repository"
                )));
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
        let bytes =
            fs::read(&path).with_context(|| format!("reading manifest {}", path.display()))?;
        decode_manifest(&bytes).map_err(|e| {
            if let Some(MnError::Unsafe(msg)) = e.downcast_ref::<MnError>() {
                return crate::error::unsafe_content(format!("snapshot {id} is not used: {msg}"));
            }
            integrity(format!(
                "the manifest of snapshot {id} is damaged: {e:#}. That snapshot cannot be \
                 used; other snapshots are not affected (`mnbackup verify` checks them)"
            ))
        })
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
        if spec == "latest" {
            return ids.last().cloned().ok_or_else(|| {
                MnError::Usage(format!(
                    "the repository at {} has no snapshots yet; take one with `mnbackup snapshot`",
                    self.root.display()
                ))
                .into()
            });
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
    /// writes): removes every temporary file, and when an interrupted snapshot left its
    /// in-progress marker, removes the objects no manifest references. Returns (files, bytes).
    pub fn clean_leftovers(&self) -> Result<(u64, u64)> {
        let mut files = 0;
        let mut bytes = 0;
        let mut interrupted = false;
        for e in fs::read_dir(self.tmp_dir())? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("inprogress-") {
                interrupted = true;
            }
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(e.path())
                .with_context(|| format!("removing leftover {}", e.path().display()))?;
            files += 1;
        }
        if interrupted {
            let manifests: Vec<Manifest> = self
                .load_all()?
                .into_iter()
                .filter_map(|r| r.ok())
                .collect();
            let keep = Self::referenced_objects(&manifests);
            for (id, size) in self.all_objects()? {
                if !keep.contains(&id) {
                    fs::remove_file(self.object_path(&id)?)?;
                    files += 1;
                    bytes += size;
                }
            }
        }
        if files > 0 {
            fsync_dir(&self.tmp_dir())?;
        }
        Ok((files, bytes))
    }

    /// Mark a snapshot as in progress (removed on commit or clean abort).
    pub fn mark_in_progress(&self, id: &str) -> Result<PathBuf> {
        let p = self.tmp_dir().join(format!("inprogress-{id}"));
        write_atomic(&self.tmp_dir(), &p, id.as_bytes(), false)?;
        Ok(p)
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
