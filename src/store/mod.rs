//! Storage backends: where the repository's files live.
//!
//! The repository layer ([`crate::repo`]) speaks only to a [`Backend`]: keys are '/'-separated
//! relative names (`objects/ab/ab12…`, `snapshots/<id>.json`, `locks/<name>.json`, `tmp/…`),
//! values are whole byte strings. [`local::LocalFs`] is today's directory on a (possibly NFS)
//! pool; [`mem::MemBackend`] keeps everything in memory (tests); [`faulty::Faulty`] wraps any
//! backend and injects failures (tests). [`conformance`] is the suite every backend passes.
//!
//! Adding a backend (e.g. `s3://`) is one module implementing [`Backend`] plus one line in
//! [`open`].

pub mod config;
pub mod conformance;
pub mod faulty;
pub mod local;
pub mod mem;
pub mod object;
pub mod retry;
pub mod throttle;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

use thiserror::Error;

use crate::error::MnError;

/// A typed storage error. Each kind maps onto an exit code (see [`StoreError::into_anyhow`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The key does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The store is full (or over quota).
    #[error("{0}")]
    NoSpace(String),
    /// A failure that may pass when tried again (a timeout, a dropped connection).
    #[error("{0}")]
    Transient(String),
    /// A failure that will not pass by retrying (permissions, I/O error, read-only store).
    #[error("{0}")]
    Permanent(String),
    /// The stored entry is not usable as asked: not a regular file (a symbolic link, FIFO or
    /// directory on a local pool), or larger than the caller's limit. Never followed or read.
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// Map from an I/O error of operation `what` on `place`.
    pub fn from_io(e: &std::io::Error, what: &str, place: &str) -> StoreError {
        use std::io::ErrorKind as K;
        let msg = format!("{what} {place}: {e}");
        if crate::error::is_no_space(e) {
            return StoreError::NoSpace(msg);
        }
        match e.kind() {
            K::NotFound => StoreError::NotFound(place.to_string()),
            K::InvalidData => StoreError::Refused(e.to_string()),
            K::Interrupted | K::TimedOut | K::WouldBlock | K::ConnectionReset => {
                StoreError::Transient(msg)
            }
            _ => StoreError::Permanent(msg),
        }
    }

    /// Into the error kinds that decide the process exit code: `NoSpace` keeps exit 7 with the
    /// usual advice, `Refused` is unsafe content (6), `NotFound` missing data (5), the others are
    /// plain failures (1).
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            StoreError::NoSpace(m) => MnError::NoSpace(format!(
                "the pool is full: no space left ({m}). Nothing of this run was committed and \
                 its partial files were removed; free space on the pool (or run `mnbackup \
                 forget` + `mnbackup prune`) and run it again"
            ))
            .into(),
            StoreError::Refused(m) => MnError::Unsafe(m).into(),
            StoreError::NotFound(k) => MnError::Integrity(format!("{k} does not exist")).into(),
            e => anyhow::Error::new(e),
        }
    }
}

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// What [`Backend::stat`] knows about a stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    /// A value that changes whenever the stored bytes may have changed (local: size, mtime,
    /// ctime and inode; in memory: a write counter). None: the backend cannot tell.
    pub identity: Option<(u64, i64, i64, u64)>,
    pub modified: Option<SystemTime>,
}

/// A store of immutable-ish byte strings under '/'-separated keys.
///
/// Writes are all-or-nothing: a reader never sees a partial value under a key.
pub trait Backend: Send + Sync + Debug {
    /// Where this store is, for messages (a path or URL).
    fn location(&self) -> String;

    /// Store `bytes` under `key` unless the key exists. Returns true when written. Of racing
    /// writers of one key exactly one gets true and its whole value is stored (a local directory:
    /// link(2) of a complete temporary file; an object store: `If-None-Match: *`); used for
    /// content-addressed keys, snapshot manifests, the repository marker and lock files.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<bool>;

    /// Store `bytes` under `key`, replacing any value atomically (durable on return).
    fn put_replace(&self, key: &str, bytes: &[u8]) -> StoreResult<()>;

    /// Read a whole value of at most `max` bytes (a larger one is [`StoreError::Refused`]
    /// before it is read).
    fn get(&self, key: &str, max: u64) -> StoreResult<Vec<u8>>;

    /// Read `len` bytes at `offset` (fewer at the end of the value).
    fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Vec<u8>>;

    /// Size (and identity) of a stored value, or [`StoreError::NotFound`].
    fn stat(&self, key: &str) -> StoreResult<Meta>;

    /// Every key starting with `prefix` (recursively), with its size, sorted.
    fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>>;

    /// Remove a key ([`StoreError::NotFound`] when absent). Durable on return.
    fn delete(&self, key: &str) -> StoreResult<()>;

    /// Append to a value, creating it when absent (an in-progress record). Not atomic: a crash
    /// may leave a prefix of the appended bytes. The default reads and replaces the value.
    fn append(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        let mut v = match self.get(key, u64::MAX) {
            Ok(v) => v,
            Err(StoreError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        v.extend_from_slice(bytes);
        self.put_replace(key, &v)
    }

    /// Create the "directory" `prefix` where the backend has directories (local: mkdir -p);
    /// a no-op elsewhere.
    fn ensure_dir(&self, _prefix: &str) -> StoreResult<()> {
        Ok(())
    }

    /// Check that `prefix` is a real directory where the backend has directories (a local pool
    /// whose `tmp/` was replaced by a symbolic link is refused); Ok elsewhere. Errors are
    /// [`StoreError::Refused`] (not a directory) or [`StoreError::NotFound`] (missing).
    fn check_dir(&self, _prefix: &str) -> StoreResult<()> {
        Ok(())
    }

    /// A layout directory a command is about to write into (`locks/`, `tmp/`): recreated when it
    /// is missing (copies of a pool made with git, `rclone` through an object store or some
    /// sync tools drop empty directories; the marker was read already, so the pool is mounted),
    /// then checked like [`Backend::check_dir`] (a symbolic link is still refused).
    fn layout_dir(&self, prefix: &str) -> StoreResult<()> {
        if !self.has_dir(prefix) {
            self.ensure_dir(prefix)?;
        }
        self.check_dir(prefix)
    }

    /// Whether `prefix` exists as a directory where the backend has directories (true elsewhere).
    fn has_dir(&self, _prefix: &str) -> bool {
        true
    }

    /// Prepare a new, empty store for `init`. Refuses a location that holds anything; returns
    /// a warning worth showing (local: the directory is not a separate mount).
    fn create(&self) -> anyhow::Result<Option<String>>;

    /// Why a repository marker is missing here, in words (for the "no repository" error).
    fn explain_missing(&self) -> String {
        "the location has no repository marker".into()
    }

    /// The local directory of this store, when it is one (free-space checks, `check`).
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }
}

/// The schemes [`open`] knows.
pub const SCHEMES: &[&str] = &[
    "file://",
    "s3://",
    "oss://",
    "cos://",
    "obs://",
    "webdav://",
    "sftp://",
    "mem:// (tests)",
];

/// Open a backend from a location: a plain path, a URL `file:///abs/path`, or an object-store
/// URL (`s3://bucket/prefix`, ...) reached with the default `[repository.s3]` settings (the
/// environment variables only).
pub fn open(location: &str) -> anyhow::Result<Arc<dyn Backend>> {
    open_with(
        location,
        &crate::store::config::ObjectStoreConfig::default(),
    )
}

/// [`open`] with the `[repository.s3]` settings for object-store URLs.
pub fn open_with(
    location: &str,
    s3: &crate::store::config::ObjectStoreConfig,
) -> anyhow::Result<Arc<dyn Backend>> {
    if let Some((scheme, rest)) = location.split_once("://") {
        return match scheme {
            s if object::SCHEMES.contains(&s) => Ok(retry::Retrying::new(
                Arc::new(object::ObjectStore::open(location, s3)?),
                retry::Policy {
                    retries: s3.retries,
                    ..Default::default()
                },
            )),
            "file" => {
                if !rest.starts_with('/') {
                    return Err(crate::error::usage(format!(
                        "`{location}`: a file:// URL needs an absolute path (file:///srv/pool)"
                    )));
                }
                Ok(Arc::new(local::LocalFs::new(rest)))
            }
            "mem" => Ok(mem::MemBackend::named(rest)),
            other => Err(crate::error::usage(format!(
                "unknown repository scheme `{other}://` in `{location}`; supported: a plain \
                 path, {}",
                SCHEMES.join(", ")
            ))),
        };
    }
    Ok(Arc::new(local::LocalFs::new(location)))
}

/// Check a key: relative, '/'-separated, no empty, `.` or `..` components, no NUL.
pub fn check_key(key: &str) -> StoreResult<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\0')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(StoreError::Refused(format!(
            "`{}` is not a valid store key",
            key.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_knows_paths_and_file_urls_and_names_the_schemes() {
        let b = open("/srv/pool/mnbackup").unwrap();
        assert_eq!(b.location(), "/srv/pool/mnbackup");
        let b = open("file:///srv/pool/mnbackup").unwrap();
        assert_eq!(b.location(), "/srv/pool/mnbackup");
        let b = open("s3://bucket/x/y/").unwrap();
        assert_eq!(b.location(), "s3://bucket/x/y");
        let e = open("gs://bucket/x").unwrap_err().to_string();
        assert!(e.contains("s3://") && e.contains("file://"), "{e}");
        assert_eq!(crate::error::exit_code(&open("ftp://h/x").unwrap_err()), 2);
        assert!(open("file://relative").is_err());
    }

    #[test]
    fn keys_must_be_relative_and_clean() {
        for k in ["", "/a", "a//b", "a/../b", "./a", "a/"] {
            assert!(check_key(k).is_err(), "{k}");
        }
        check_key("objects/ab/abc").unwrap();
    }

    #[test]
    fn store_errors_map_to_exit_codes() {
        use crate::error::exit_code;
        assert_eq!(exit_code(&StoreError::NoSpace("x".into()).into_anyhow()), 7);
        assert_eq!(exit_code(&StoreError::Refused("x".into()).into_anyhow()), 6);
        assert_eq!(
            exit_code(&StoreError::NotFound("x".into()).into_anyhow()),
            5
        );
        assert_eq!(
            exit_code(&StoreError::Transient("x".into()).into_anyhow()),
            1
        );
    }
}
