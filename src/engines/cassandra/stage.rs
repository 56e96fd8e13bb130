use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};

use super::digest::{DigestAlgo, HashingReader};
use super::items::OpenFn;
use super::tool::{create_new, TEMP_COUNTER};

/// True when `dir` holds a `*-Data.db` of `size` bytes whose BLAKE3 is `hash`.
pub(crate) fn has_data_content(dir: &Path, size: u64, hash: &blake3::Hash) -> Result<bool> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in rd {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with("-Data.db") {
            continue;
        }
        let md = e.metadata()?;
        if md.is_file() && md.len() == size && blake3_file(&e.path())? == *hash {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Remove `dir` and its subdirectories when they hold no file.
pub(crate) fn remove_empty_dirs(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_empty_dirs(&e.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Removes the listed files on drop unless disarmed.
pub(crate) struct Cleanup(pub(crate) Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            let _ = fs::remove_file(p);
        }
    }
}

pub(crate) fn read_all_limited(open: OpenFn<'_>, what: &str, limit: u64) -> Result<Vec<u8>> {
    let r = open().with_context(|| format!("opening {what} from the backup"))?;
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {what} from the backup"))?;
    if buf.len() as u64 > limit {
        bail!("{what} in the backup is larger than {limit} bytes; the snapshot may be damaged");
    }
    Ok(buf)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// uid and gid of a local user (from /etc/passwd, then `getent passwd`).
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let parse = |text: &str| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[0] == name {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    if let Some(found) = fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| parse(&t))
    {
        return Some(found);
    }
    let out = Command::new("getent")
        .args(["passwd", name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

pub(crate) struct StagedFile {
    pub(crate) tmp: PathBuf,
    pub(crate) dest: PathBuf,
    pub(crate) blake3: blake3::Hash,
    pub(crate) size: u64,
}

pub(crate) fn blake3_file(path: &Path) -> Result<blake3::Hash> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = blake3::Hasher::new();
    io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize())
}

/// Write one component to a temporary name in `dest`'s directory (fsynced), computing BLAKE3 and
/// the SSTable digest when `algo` is given.
pub(crate) fn stage_file(
    reader: &mut dyn Read,
    dest: &Path,
    expected_size: u64,
    algo: Option<DigestAlgo>,
    what: &str,
    cleanup: &mut Cleanup,
) -> Result<(StagedFile, Option<String>)> {
    let dir = dest.parent().expect("component destination has a parent");
    let base = dest
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("component");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".mnbackup-tmp-{}-{n}-{base}", std::process::id()));
    let mut f = create_new(&tmp, 0o644)?;
    cleanup.0.push(tmp.clone());
    let mut hr = HashingReader::new(reader, algo);
    let mut b3 = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = hr
            .read(&mut buf)
            .with_context(|| format!("reading {what} from the backup"))?;
        if n == 0 {
            break;
        }
        b3.update(&buf[..n]);
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    if hr.bytes != expected_size {
        bail!(
            "{what} read back as {} bytes, but the snapshot records {expected_size}; the backup \
             is damaged (run `mnbackup check`)",
            hr.bytes
        );
    }
    let digest = hr.digester.as_ref().map(|d| d.value());
    Ok((
        StagedFile {
            tmp,
            dest: dest.to_path_buf(),
            blake3: b3.finalize(),
            size: hr.bytes,
        },
        digest,
    ))
}

pub(crate) fn create_dir_owned(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_owned(parent, owner)?;
    }
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
    }
    Ok(())
}
