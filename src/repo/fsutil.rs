//! Crash-safe file writing for a pool that may be NFS: write a temporary name, fsync, rename,
//! fsync the directory. A reader never sees a half-written file under its final name.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::error::{is_no_space, MnError};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary file that no other process or thread will pick:
/// `<stem>.<host>-<pid>-<counter>-<random>.tmp`.
pub fn temp_name(stem: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{stem}.{}-{}-{n}-{:08x}.tmp",
        crate::repo::lock::hostname(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Read a file of the pool that must be a regular file of at most `max` bytes: symlinks are not
/// followed, FIFOs and devices are refused without blocking, and the size is checked before
/// anything is read (a hostile pool cannot make the program hang or allocate without bound).
/// A refused file gives an `InvalidData` error saying why.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is a symbolic link, not a regular file", path.display()),
                )
            } else {
                e
            }
        })?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not a regular file (a FIFO, device or directory)",
                path.display()
            ),
        ));
    }
    if md.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is {} bytes, more than the {max} allowed for it",
                path.display(),
                md.len()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    // Read at most one byte more than allowed: a file growing meanwhile is refused too.
    (&mut f).take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} grew past {max} bytes while read", path.display()),
        ));
    }
    Ok(buf)
}

/// Check that `dir` is a real directory, not a symbolic link (or anything else): a hostile pool
/// could point `tmp/` or `locks/` elsewhere and make clean-ups delete files outside the pool.
pub fn check_real_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(md) if md.file_type().is_dir() => Ok(()),
        Ok(md) => Err(crate::error::unsafe_content(format!(
            "{} is {} where the repository layout has a directory; refusing to use the \
             repository (someone changed the pool). Inspect it; `mnbackup verify` and a fresh \
             repository are the safe way on",
            dir.display(),
            if md.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a directory"
            }
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "the repository directory {} is missing or unreadable; the pool is damaged or not \
             fully mounted",
            dir.display()
        ))),
    }
}

/// fsync a directory so that a rename or unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir)
        .with_context(|| format!("opening directory {} to sync it", dir.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

/// Removes the temporary file on drop unless disarmed.
struct TempGuard(Option<PathBuf>);
impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Turn an I/O error during a pool write into a clear message (and a no-space kind).
pub fn write_error(e: std::io::Error, what: &str, path: &Path) -> anyhow::Error {
    if is_no_space(&e) {
        MnError::NoSpace(format!(
            "the pool is full: no space left while writing {what} ({}). Nothing of this run was \
             committed and its partial files were removed; free space on the pool (or run \
             `mnbackup forget` + `mnbackup prune`) and run it again",
            path.display()
        ))
        .into()
    } else {
        anyhow::Error::new(e).context(format!("writing {what} to {}", path.display()))
    }
}

/// Write `bytes` to `dest` atomically: a temp file in `tmp_dir`, fsync, rename, fsync dest's dir.
/// When `keep_existing` is true and `dest` already exists, nothing is written (content-addressed
/// objects). Returns true when a new file was written.
pub fn write_atomic(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    keep_existing: bool,
) -> Result<bool> {
    if keep_existing && dest.exists() {
        return Ok(false);
    }
    let stem = dest.file_name().and_then(|s| s.to_str()).unwrap_or("file");
    let stem: String = stem.chars().take(24).collect();
    let tmp = tmp_dir.join(temp_name(&stem));
    let mut guard = TempGuard(Some(tmp.clone()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| write_error(e, "a temporary file", &tmp))?;
        f.write_all(bytes)
            .map_err(|e| write_error(e, "a file", &tmp))?;
        f.sync_all().map_err(|e| write_error(e, "a file", &tmp))?;
    }
    let dir = dest.parent().expect("destination has a parent");
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| write_error(e, "a directory", dir))?;
        if let Some(pp) = dir.parent() {
            fsync_dir(pp)?;
        }
    }
    fs::rename(&tmp, dest).map_err(|e| write_error(e, "a rename", dest))?;
    guard.0 = None;
    fsync_dir(dir)?;
    Ok(true)
}
