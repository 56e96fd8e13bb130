//! [`LocalFs`]: a repository directory on a local or NFS-mounted pool.
//!
//! - writes go through a temporary file in `tmp/` (keys under `locks/`: a `.NAME….tmp` in
//!   `locks/` itself, since prune cleans `tmp/`), fsync, rename, fsync of the directory
//!   ([`mnbackup_scheduler::durable`]); a crash leaves at most a temporary file;
//! - reads never follow a symbolic link, never block on a FIFO or device, and check the size
//!   before reading: a hostile pool cannot make the program hang or allocate without bound;
//! - `put_if_absent` writes a complete, fsynced temporary file and hard-links it to the key:
//!   link(2) fails when the name exists, atomically also on NFS (as O_EXCL), so of racing writers
//!   exactly one wins and a reader only ever sees a whole value. A filesystem without hard links
//!   (some FUSE or SMB mounts) falls back to check-then-rename, with a warning: there two racing
//!   writers of one key may both succeed, the last rename winning (content-addressed objects are
//!   unaffected, snapshot ids and lock names are random);
//! - the pool is private: every file is created 0600 and every directory 0700, set explicitly
//!   (never left to the umask); `create` makes the repository directory itself 0700 even when it
//!   existed (empty) before;
//! - `create` warns when the directory is not on a separately mounted filesystem (an unmounted
//!   NFS mount point looks like that).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use mnbackup_scheduler::durable;

use super::{check_key, Backend, Meta, StoreError, StoreResult};
use crate::error::MnError;

/// The directory that takes temporary files (except for `locks/`).
pub const TMP_DIR: &str = "tmp";
/// The directory whose temporary files stay inside it.
pub const LOCKS_DIR: &str = "locks";

/// A repository directory.
#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The mode of every file mnbackup creates on the pool and in its local cache.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory mnbackup creates on the pool and in its local cache.
pub const DIR_MODE: u32 = 0o700;

/// Create `path` and its missing parents as private directories ([`DIR_MODE`], set explicitly
/// whatever the umask). Existing directories keep their mode.
pub fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match fs::symlink_metadata(path) {
        // As create_dir_all: an existing directory (also through a symbolic link, which the
        // callers' `check_dir` refuses with its own message) is left alone.
        Ok(_) if path.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)),
        // Another process or thread made it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create a new private file ([`FILE_MODE`], set explicitly whatever the umask); fails when the
/// name exists.
pub fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Whether a failed link(2) means the filesystem cannot make hard links at all.
/// Runs `f`, which writes the temporary file `tmp`; when that fails because the temporary
/// directory is missing (the empty `tmp/` of a pool copied with git, `rclone` through an object
/// store or some sync tools), makes the directory (private, durable) and runs `f` once more.
fn with_temp_dir<T>(tmp: &Path, f: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    match f() {
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && tmp
                    .parent()
                    .is_some_and(|d| fs::symlink_metadata(d).is_err()) =>
        {
            let dir = tmp.parent().expect("checked above");
            create_private_dir_all(dir)?;
            if let Some(pp) = dir.parent() {
                durable::fsync_dir(pp)?;
            }
            f()
        }
        r => r,
    }
}

fn no_hard_links(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EXDEV | libc::EMLINK)
    )
}

/// A name for a temporary file that no other process or thread will pick:
/// `<stem>.<host>-<pid>-<counter>-<random>.tmp`.
pub fn temp_name(stem: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{stem}.{}-{}-{n}-{:08x}.tmp",
        gethostname::gethostname().to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Open a file of the pool for reading: symlinks are not followed, FIFOs and devices are
/// refused without blocking, and a file over `max` bytes is refused before it is read. A refused
/// file gives an `InvalidData` error saying why.
fn open_regular(path: &Path, max: u64) -> std::io::Result<(fs::File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                invalid(format!(
                    "{} is a symbolic link, not a regular file",
                    path.display()
                ))
            } else {
                e
            }
        })?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(invalid(format!(
            "{} is not a regular file (a FIFO, device or directory)",
            path.display()
        )));
    }
    if md.len() > max {
        return Err(invalid(format!(
            "{} is {} bytes, more than the {max} allowed for it",
            path.display(),
            md.len()
        )));
    }
    Ok((f, md))
}

/// Read a regular file of at most `max` bytes (see [`open_regular`]); a file growing past `max`
/// while read is refused too.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (f, md) = open_regular(path, max)?;
    let mut buf = Vec::with_capacity(md.len().min(max) as usize);
    f.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} grew past {max} bytes while read", path.display()),
        ));
    }
    Ok(buf)
}

fn identity(md: &fs::Metadata) -> (u64, i64, i64, u64) {
    (
        md.len(),
        md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        md.ino(),
    )
}

fn is_separate_mount(path: &Path) -> Option<bool> {
    let canon = path.canonicalize().ok()?;
    let parent = canon.parent()?;
    let a = fs::metadata(&canon).ok()?;
    let b = fs::metadata(parent).ok()?;
    Some(a.dev() != b.dev() || a.ino() == b.ino())
}

impl LocalFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalFs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key (the key is checked: it never leaves the root).
    pub fn path(&self, key: &str) -> StoreResult<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, e: std::io::Error, what: &str, p: &Path) -> StoreError {
        StoreError::from_io(&e, what, &p.display().to_string())
    }

    /// Where the temporary file of a write to `key` goes.
    fn temp_for(&self, key: &str, dest: &Path) -> PathBuf {
        let stem: String = dest
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("file")
            .chars()
            .take(24)
            .collect();
        // Locks and cluster claims are rewritten while held: their temp files stay beside them,
        // out of the leftover cleanup's reach.
        if key.starts_with("locks/") || key.starts_with("cluster/") {
            let stem = stem.strip_suffix(".json").unwrap_or(&stem).to_string();
            dest.with_file_name(format!(".{}", temp_name(&stem)))
        } else {
            self.root.join(TMP_DIR).join(temp_name(&stem))
        }
    }

    /// Make the directory of `dest` (private, durable) when it is missing.
    fn parent_dir(&self, dest: &Path) -> StoreResult<PathBuf> {
        let dir = dest.parent().expect("a key has a parent").to_path_buf();
        if fs::symlink_metadata(&dir).is_err() {
            create_private_dir_all(&dir).map_err(|e| self.io(e, "creating", &dir))?;
            if let Some(pp) = dir.parent() {
                durable::fsync_dir(pp).map_err(|e| self.io(e, "syncing", pp))?;
            }
        }
        Ok(dir)
    }

    fn write(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        let dest = self.path(key)?;
        self.parent_dir(&dest)?;
        let tmp = self.temp_for(key, &dest);
        with_temp_dir(&tmp, || {
            durable::write_atomic_via(&tmp, &dest, bytes, Some(FILE_MODE))
        })
        .map_err(|e| self.io(e, "writing", &dest))
    }

    /// `put_if_absent` where hard links are missing: check, then rename (see the module doc).
    fn put_if_absent_without_links(&self, key: &str, bytes: &[u8]) -> StoreResult<bool> {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "the filesystem of {} makes no hard links: creating files with check-then-rename, \
                 which is not atomic between two writers of one name",
                self.root.display()
            )
        });
        if fs::symlink_metadata(self.path(key)?).is_ok() {
            return Ok(false);
        }
        self.write(key, bytes)?;
        Ok(true)
    }

    fn list_into(&self, dir: &Path, key: &str, out: &mut Vec<(String, u64)>) -> StoreResult<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(e, "listing", dir)),
        };
        for e in rd {
            let e = e.map_err(|e| self.io(e, "listing", dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let k = if key.is_empty() {
                name
            } else {
                format!("{key}/{name}")
            };
            // Not followed: a symbolic link is listed as an entry of its own.
            // An entry removed between listing and looking (another writer's temporary file
            // renamed into place) is simply not there: listing is not atomic on any store.
            let md = match fs::symlink_metadata(e.path()) {
                Ok(md) => md,
                Err(er) if er.kind() == std::io::ErrorKind::NotFound => continue,
                Err(er) => return Err(self.io(er, "reading", &e.path())),
            };
            if md.is_dir() {
                self.list_into(&e.path(), &k, out)?;
            } else {
                out.push((k, md.len()));
            }
        }
        Ok(())
    }
}

impl Backend for LocalFs {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<bool> {
        let dest = self.path(key)?;
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(false);
        }
        // The complete, fsynced file is linked into place: link(2) fails when the name exists
        // (atomic also on NFS, like O_EXCL), so one of racing writers wins, with a whole value.
        let dir = self.parent_dir(&dest)?;
        let tmp = self.temp_for(key, &dest);
        let written = with_temp_dir(&tmp, || {
            create_private_file(&tmp).and_then(|mut f| {
                std::io::Write::write_all(&mut f, bytes)?;
                f.sync_all()
            })
        });
        let linked = written.and_then(|_| fs::hard_link(&tmp, &dest));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                durable::fsync_dir(&dir).map_err(|e| self.io(e, "syncing", &dir))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) if no_hard_links(&e) => self.put_if_absent_without_links(key, bytes),
            Err(e) => Err(self.io(e, "writing", &dest)),
        }
    }

    fn put_replace(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.write(key, bytes)
    }

    fn get(&self, key: &str, max: u64) -> StoreResult<Vec<u8>> {
        let p = self.path(key)?;
        read_regular(&p, max).map_err(|e| self.io(e, "reading", &p))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Vec<u8>> {
        let p = self.path(key)?;
        let (mut f, _) = open_regular(&p, u64::MAX).map_err(|e| self.io(e, "reading", &p))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io(e, "reading", &p))?;
        let mut buf = Vec::new();
        f.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.io(e, "reading", &p))?;
        Ok(buf)
    }

    fn stat(&self, key: &str) -> StoreResult<Meta> {
        let p = self.path(key)?;
        let md = fs::symlink_metadata(&p).map_err(|e| self.io(e, "reading", &p))?;
        if !md.file_type().is_file() {
            return Err(StoreError::Refused(format!(
                "{} is not a regular file",
                p.display()
            )));
        }
        Ok(Meta {
            size: md.len(),
            identity: Some(identity(&md)),
            modified: md.modified().ok(),
        })
    }

    fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        // The directory holding the prefix, listed recursively, filtered by the full prefix.
        let dir_key = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let dir = if dir_key.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_key)?
        };
        let mut out = Vec::new();
        self.list_into(&dir, dir_key, &mut out)?;
        out.retain(|(k, _)| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        let p = self.path(key)?;
        fs::remove_file(&p).map_err(|e| self.io(e, "removing", &p))?;
        let dir = p.parent().expect("a key has a parent");
        durable::fsync_dir(dir).map_err(|e| self.io(e, "syncing", dir))
    }

    fn append(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        use std::io::Write;
        let p = self.path(key)?;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(&p)
            .map_err(|e| self.io(e, "writing", &p))?;
        let mode = f.metadata().map(|m| m.mode() & 0o7777).unwrap_or(FILE_MODE);
        if mode != FILE_MODE {
            f.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .map_err(|e| self.io(e, "writing", &p))?;
        }
        f.write_all(bytes).map_err(|e| self.io(e, "writing", &p))
    }

    fn ensure_dir(&self, prefix: &str) -> StoreResult<()> {
        let p = self.path(prefix.trim_end_matches('/'))?;
        create_private_dir_all(&p).map_err(|e| self.io(e, "creating", &p))
    }

    fn check_dir(&self, prefix: &str) -> StoreResult<()> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        match fs::symlink_metadata(&dir) {
            Ok(md) if md.file_type().is_dir() => Ok(()),
            Ok(md) => Err(StoreError::Refused(format!(
                "{} is {} where the repository layout has a directory; refusing to use the \
                 repository (someone changed the pool). Inspect it; `mnbackup verify` and a \
                 fresh repository are the safe way on",
                dir.display(),
                if md.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "not a directory"
                }
            ))),
            Err(e) => Err(StoreError::Permanent(format!(
                "the repository directory {} is missing or unreadable ({e}); the pool is \
                 damaged or not fully mounted",
                dir.display()
            ))),
        }
    }

    fn has_dir(&self, prefix: &str) -> bool {
        self.path(prefix.trim_end_matches('/'))
            .map(|p| fs::symlink_metadata(p).is_ok())
            .unwrap_or(false)
    }

    fn create(&self) -> anyhow::Result<Option<String>> {
        let path = &self.root;
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
        create_private_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        // An existing (empty) directory becomes private too: the repository is the node's
        // secrets (docs/repository-format.md, "Modes").
        // Where that is refused (a mount point owned by another user, e.g. under root_squash)
        // the directories and files inside are private all the same: a warning, not a failure.
        {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)) {
                tracing::warn!(
                    "cannot make {} mode 0700 ({e}); the repository's own files and directories \
                     are private (0600/0700) all the same",
                    path.display()
                );
            }
        }
        // The repository directory itself is normally a subdirectory of the mount: check the
        // directory and its parent.
        let mounted = is_separate_mount(path).unwrap_or(false)
            || path.parent().and_then(is_separate_mount).unwrap_or(false);
        Ok((!mounted).then(|| {
            format!(
                "{} is not on a separately mounted filesystem (neither it nor its parent is a \
                 mount point). If the pool is an NFS mount, check that it is mounted before \
                 backing up: a repository on the local disk is lost with the node.",
                path.display()
            )
        }))
    }

    fn explain_missing(&self) -> String {
        let path = &self.root;
        if !path.exists() {
            "the directory does not exist".to_string()
        } else if !path.is_dir() {
            "it is not a directory".to_string()
        } else if fs::read_dir(path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
        {
            "the directory is empty: if the pool is an NFS mount, it is probably not mounted \
             (check `mount` / `df`)"
                .to_string()
        } else {
            "the directory has no repository marker".to_string()
        }
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}
