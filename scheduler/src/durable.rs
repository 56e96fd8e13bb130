//! The one durable-write helper of the workspace: write a temporary file, fsync it, rename it
//! over the destination, fsync the destination's directory. A reader never sees a half-written
//! file under the final name, and the rename survives a crash once the call returns.
//!
//! Used by the scheduler's state files, the restore journal, the unit file and crontab copy of
//! `mnbackup schedule`, and the local repository backend (`mnbackup::store::local`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Write `data` to `path` atomically, the temporary file beside it (`.NAME.tmp.PID.SEQ`).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_via(&temp_beside(path)?, path, data, None)
}

/// The temporary name [`write_atomic`] uses for `path`: `.NAME.tmp.PID.SEQ` in its directory.
pub fn temp_beside(path: &Path) -> io::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    Ok(parent_dir(path).join(tmp_name))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Write `data` to `path` through the temporary file `tmp` (created exclusively, with exactly
/// `mode` when given — set explicitly, whatever the umask —, removed again on any error): write,
/// fsync, rename, fsync `path`'s directory.
pub fn write_atomic_via(tmp: &Path, path: &Path, data: &[u8], mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        if let Some(m) = mode {
            opts.mode(m);
        }
        let mut f = opts.open(tmp)?;
        if let Some(m) = mode {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(m))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(tmp, path)?;
        fsync_dir(&parent_dir(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// fsync a directory so that a rename or unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leave_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_removes_its_temporary() {
        let t = tempfile::tempdir().unwrap();
        let tmp = t.path().join("x.tmp");
        // The destination's directory does not exist: the rename fails.
        let dest = t.path().join("missing").join("x");
        assert!(write_atomic_via(&tmp, &dest, b"data", Some(0o600)).is_err());
        assert!(!tmp.exists());
    }
}
