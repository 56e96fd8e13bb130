//! [`ObjectStore`]: a repository in an object store through Apache OpenDAL — S3 and
//! S3-compatible stores (Ceph RGW, MinIO), Alibaba OSS, Tencent COS, Huawei OBS, WebDAV and SFTP.
//!
//! Object-store semantics this backend respects:
//! - no rename: every write is one whole-object PUT (a partial upload is invisible);
//! - "put if absent" is a conditional PUT (`If-None-Match: *`) where the service supports it,
//!   otherwise a HEAD before and a read-after-write check after the PUT; either way it is
//!   idempotent for content-addressed keys;
//! - listing is paged (1000 keys a request) and may lag behind writes: callers treat a listing as
//!   a hint and `put_if_absent` stays correct when it lags;
//! - transient failures (timeouts, 5xx, throttling, dropped connections) are
//!   [`StoreError::Transient`]; the [`super::retry::Retrying`] decorator that [`super::open`]
//!   puts around this backend retries them with exponential backoff and jitter.
//!
//! Locks need nothing special: they are small objects whose heartbeat (a lease) is rewritten
//! while held ([`crate::repo::lock`]).
//!
//! OpenDAL is asynchronous; the [`Backend`] trait is not. Calls run on one process-wide tokio
//! runtime (never dropped); from inside another runtime they run on a scoped helper thread.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;
use std::time::SystemTime;

use opendal::{ErrorKind, Operator};

use super::{check_key, Backend, Meta, StoreError, StoreResult};
use crate::store::config::ObjectStoreConfig;

/// The URL schemes served by [`ObjectStore`].
pub const SCHEMES: &[&str] = &["s3", "oss", "cos", "obs", "webdav", "sftp"];

/// Keys asked for in one listing request.
const PAGE: usize = 1000;

/// A repository in an object store (see the module documentation).
pub struct ObjectStore {
    op: Operator,
    url: String,
    conditional_put: bool,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("url", &self.url)
            .field("conditional_put", &self.conditional_put)
            .finish()
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // reqwest is built without a bundled crypto provider: use ring (as ureq does).
        let _ = rustls::crypto::ring::default_provider().install_default();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mnbackup-objstore")
            .enable_all()
            .build()
            .expect("starting the object-store runtime")
    })
}

/// Run `f` to completion on the object-store runtime, from any thread.
fn block_on<T: Send, F: Future<Output = T> + Send>(f: F) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| runtime().block_on(f))
                .join()
                .expect("object-store call panicked")
        })
    } else {
        runtime().block_on(f)
    }
}

/// A location split into scheme, bucket (or host) and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    pub scheme: String,
    pub bucket: String,
    pub prefix: String,
}

impl ObjectUrl {
    /// Parse `scheme://bucket/prefix` (`sftp://host/path`, `webdav://host/path`).
    pub fn parse(location: &str) -> anyhow::Result<ObjectUrl> {
        let (scheme, rest) = location
            .split_once("://")
            .ok_or_else(|| crate::error::usage(format!("`{location}` is not a URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() || prefix.split('/').any(|c| c == "." || c == "..") {
            return Err(crate::error::usage(format!(
                "`{location}`: give {scheme}://BUCKET/PREFIX (a bucket, then an optional path)"
            )));
        }
        Ok(ObjectUrl {
            scheme: scheme.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    fn root(&self) -> String {
        if self.prefix.is_empty() {
            "/".into()
        } else {
            format!("/{}/", self.prefix)
        }
    }
}

/// The OpenDAL options for a URL and the `[repository.s3]` settings.
fn service_options(
    u: &ObjectUrl,
    c: &ObjectStoreConfig,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let key_id = c.access_key_id()?;
    let secret = c.secret()?;
    let mut o: Vec<(&'static str, String)> = vec![("root", u.root())];
    let mut add = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            o.push((k, v));
        }
    };
    match u.scheme.as_str() {
        "s3" => {
            add("bucket", Some(u.bucket.clone()));
            add("endpoint", c.endpoint()?);
            add("region", Some(c.region()));
            add("access_key_id", key_id);
            add("secret_access_key", secret);
            add(
                "enable_virtual_host_style",
                Some((!c.path_style).to_string()),
            );
            // Credentials come from the configuration only, never from ~/.aws or EC2 metadata.
            add("disable_config_load", Some("true".into()));
            add("disable_ec2_metadata", Some("true".into()));
        }
        "oss" => {
            add("bucket", Some(u.bucket.clone()));
            add("endpoint", c.endpoint()?);
            add("access_key_id", key_id);
            add("access_key_secret", secret);
        }
        "cos" => {
            add("bucket", Some(u.bucket.clone()));
            add("endpoint", c.endpoint()?);
            add("secret_id", key_id);
            add("secret_key", secret);
        }
        "obs" => {
            add("bucket", Some(u.bucket.clone()));
            add("endpoint", c.endpoint()?);
            add("access_key_id", key_id);
            add("secret_access_key", secret);
        }
        "webdav" => {
            let ep = c
                .endpoint()?
                .unwrap_or_else(|| format!("https://{}", u.bucket));
            add("endpoint", Some(ep));
            add("username", key_id);
            add("password", secret);
        }
        "sftp" => {
            add(
                "endpoint",
                Some(c.endpoint()?.unwrap_or_else(|| u.bucket.clone())),
            );
            add("user", key_id);
            add(
                "key",
                c.secret_access_key_file
                    .clone()
                    .map(|p| p.display().to_string()),
            );
        }
        other => {
            return Err(crate::error::usage(format!(
                "unknown object-store scheme `{other}://`"
            )))
        }
    }
    Ok(o)
}

impl ObjectStore {
    /// Connect (lazily: no request is made) to the store at `location`.
    pub fn open(location: &str, c: &ObjectStoreConfig) -> anyhow::Result<ObjectStore> {
        let u = ObjectUrl::parse(location)?;
        let opts = service_options(&u, c)?;
        opendal::init_default_registry();
        let op = {
            let _guard = runtime().enter();
            Operator::via_iter(
                u.scheme.as_str(),
                opts.into_iter().map(|(k, v)| (k.to_string(), v)),
            )
            .map_err(|e| crate::error::usage(format!("cannot use {location}: {e}")))?
            .layer(opendal::layers::TimeoutLayer::new().with_timeout(c.timeout()))
        };
        let can = op.info().full_capability().write_with_if_not_exists;
        let conditional_put = c.conditional_put.unwrap_or(can);
        let url = format!("{}://{}/{}", u.scheme, u.bucket, u.prefix);
        Ok(ObjectStore {
            op,
            url: url.trim_end_matches('/').to_string(),
            conditional_put,
        })
    }

    /// Whether `put_if_absent` uses a conditional PUT (else HEAD + PUT + read-after-write).
    pub fn conditional_put(&self) -> bool {
        self.conditional_put
    }

    fn err(&self, e: opendal::Error, what: &str, key: &str) -> StoreError {
        map_error(e, what, &format!("{}/{key}", self.url))
    }

    fn write(&self, key: &str, bytes: &[u8], if_not_exists: bool) -> opendal::Result<()> {
        let buf = bytes.to_vec();
        block_on(async {
            self.op
                .write_with(key, buf)
                .if_not_exists(if_not_exists)
                .await
                .map(|_| ())
        })
    }
}

/// Map an OpenDAL error of operation `what` on `place` to a [`StoreError`].
pub fn map_error(e: opendal::Error, what: &str, place: &str) -> StoreError {
    let msg = format!("{what} {place}: {e}");
    match e.kind() {
        ErrorKind::NotFound => StoreError::NotFound(place.to_string()),
        ErrorKind::RateLimited => StoreError::Transient(msg),
        _ if e.is_temporary() || e.is_persistent() => StoreError::Transient(msg),
        _ if msg.contains("QuotaExceeded") || msg.contains("EntityTooLarge") => {
            StoreError::NoSpace(msg)
        }
        _ => StoreError::Permanent(msg),
    }
}

/// A stable identity from what the store says about an object: size, modification time and a
/// hash of the ETag (content-derived for single-part uploads).
fn identity(
    size: u64,
    modified: Option<SystemTime>,
    etag: Option<&str>,
) -> Option<(u64, i64, i64, u64)> {
    let etag = etag?;
    let (s, ns) = modified
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| (d.as_secs() as i64, d.subsec_nanos() as i64))
        .unwrap_or((0, 0));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    etag.hash(&mut h);
    Some((size, s, ns, h.finish()))
}

impl Backend for ObjectStore {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<bool> {
        check_key(key)?;
        if self.conditional_put {
            return match self.write(key, bytes, true) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
                Err(e) => Err(self.err(e, "writing", key)),
            };
        }
        match self.stat(key) {
            Ok(_) => return Ok(false),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.write(key, bytes, false)
            .map_err(|e| self.err(e, "writing", key))?;
        // Read after write: the object must be there, whole.
        let m = self.stat(key)?;
        if m.size != bytes.len() as u64 {
            return Err(StoreError::Transient(format!(
                "writing {}/{key}: the store shows {} bytes after writing {}",
                self.url,
                m.size,
                bytes.len()
            )));
        }
        Ok(true)
    }

    fn put_replace(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.write(key, bytes, false)
            .map_err(|e| self.err(e, "writing", key))
    }

    fn get(&self, key: &str, max: u64) -> StoreResult<Vec<u8>> {
        let m = self.stat(key)?;
        if m.size > max {
            return Err(StoreError::Refused(format!(
                "{}/{key} is {} bytes, over the limit of {max}",
                self.url, m.size
            )));
        }
        let v = block_on(async { self.op.read(key).await })
            .map_err(|e| self.err(e, "reading", key))?
            .to_vec();
        if v.len() as u64 > max {
            return Err(StoreError::Refused(format!(
                "{}/{key} grew over the limit of {max} while read",
                self.url
            )));
        }
        Ok(v)
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Vec<u8>> {
        check_key(key)?;
        if len == 0 {
            return self.stat(key).map(|_| Vec::new());
        }
        let end = offset.saturating_add(len);
        match block_on(async { self.op.read_with(key).range(offset..end).await }) {
            Ok(b) => Ok(b.to_vec()),
            Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => Ok(Vec::new()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(self.err(e, "reading", key)),
            Err(e) => {
                // A range past the end is short, not an error (the trait's contract); some
                // servers answer it with the whole remainder and the reader then complains
                // of too little data: read what exists.
                let size = self.stat(key)?.size;
                if offset >= size {
                    return Ok(Vec::new());
                }
                if end <= size {
                    return Err(self.err(e, "reading", key));
                }
                block_on(async { self.op.read_with(key).range(offset..size).await })
                    .map(|b| b.to_vec())
                    .map_err(|e| self.err(e, "reading", key))
            }
        }
    }

    fn stat(&self, key: &str) -> StoreResult<Meta> {
        check_key(key)?;
        let m = block_on(async { self.op.stat(key).await })
            .map_err(|e| self.err(e, "looking up", key))?;
        if m.is_dir() {
            return Err(StoreError::Refused(format!(
                "{}/{key} is a directory",
                self.url
            )));
        }
        let modified = m.last_modified().map(SystemTime::from);
        let size = m.content_length();
        Ok(Meta {
            size,
            identity: identity(size, modified, m.etag()),
            modified,
        })
    }

    fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        // List the "directory" holding the prefix and keep the keys that start with it.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        if !dir.is_empty() {
            check_key(dir.trim_end_matches('/'))?;
        }
        let entries = block_on(async {
            self.op
                .list_with(if dir.is_empty() { "/" } else { dir })
                .recursive(true)
                .limit(PAGE)
                .await
        });
        let entries = match entries {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.err(e, "listing", dir)),
        };
        let mut out: Vec<(String, u64)> = entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/') && e.path().starts_with(prefix))
            .map(|e| {
                let n = e.metadata().content_length();
                (e.path().to_string(), n)
            })
            .collect();
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        // A DELETE of a missing key succeeds on object stores; the contract says NotFound.
        self.stat(key)?;
        block_on(async { self.op.delete(key).await }).map_err(|e| self.err(e, "removing", key))
    }

    fn create(&self) -> anyhow::Result<Option<String>> {
        let any = block_on(async { self.op.list_with("/").limit(1).await })
            .map_err(|e| self.err(e, "listing", "").into_anyhow())?;
        if any.iter().any(|e| e.path() != "/" && !e.path().is_empty()) {
            return Err(crate::error::usage(format!(
                "{} is not empty; a new repository needs an empty bucket or prefix",
                self.url
            )));
        }
        Ok(None)
    }

    fn explain_missing(&self) -> String {
        format!(
            "no `mnbackup-repo.json` object under {}; check the bucket, the prefix and the \
             [repository.s3] endpoint",
            self.url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let u = ObjectUrl::parse("s3://bkt/a/b/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("bkt", "a/b"));
        assert_eq!(u.root(), "/a/b/");
        assert_eq!(ObjectUrl::parse("s3://bkt").unwrap().root(), "/");
        assert!(ObjectUrl::parse("s3:///x").is_err());
        assert!(ObjectUrl::parse("s3://b/../x").is_err());
    }

    #[test]
    fn errors_map_to_store_errors() {
        let nf = opendal::Error::new(ErrorKind::NotFound, "gone");
        assert!(map_error(nf, "reading", "s3://b/k").is_not_found());
        let t = opendal::Error::new(ErrorKind::Unexpected, "reset").set_temporary();
        assert!(matches!(
            map_error(t, "reading", "k"),
            StoreError::Transient(_)
        ));
        let r = opendal::Error::new(ErrorKind::RateLimited, "slow down");
        assert!(matches!(
            map_error(r, "reading", "k"),
            StoreError::Transient(_)
        ));
        let p = opendal::Error::new(ErrorKind::PermissionDenied, "no");
        assert!(matches!(
            map_error(p, "reading", "k"),
            StoreError::Permanent(_)
        ));
    }
}
