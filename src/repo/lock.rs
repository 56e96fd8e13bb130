//! Repository locks that work on NFS without `flock`.
//!
//! A lock is a small JSON file `locks/<id>.json` written atomically, carrying host, pid, start
//! time, a heartbeat refreshed every [`HEARTBEAT`], and whether it is exclusive. To take a lock a
//! process writes its own file, then lists `locks/`: if another live lock conflicts (either of the
//! two is exclusive) it removes its own file and waits or refuses. Two processes racing both see
//! each other and both back off, so two writers never interleave. A lock whose heartbeat is older
//! than the stale age (or whose process is gone, when it is on this host) is stale: it blocks
//! nothing and `mnbackup unlock` removes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::MnError;
use crate::repo::fsutil::write_atomic;

/// How often a held lock's heartbeat is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// Default age of the heartbeat after which a lock is considered stale.
pub const DEFAULT_STALE: Duration = Duration::from_secs(30 * 60);

/// The content of a lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub exclusive: bool,
    pub command: String,
    pub started: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
}

impl LockInfo {
    /// Whether this lock no longer blocks anyone.
    pub fn is_stale(&self, now: DateTime<Utc>, stale_after: Duration) -> bool {
        if self.host == hostname() && !pid_alive(self.pid) {
            return true;
        }
        let age = now.signed_duration_since(self.heartbeat);
        age.to_std().map(|a| a > stale_after).unwrap_or(false)
    }

    fn describe(&self) -> String {
        format!(
            "{} lock held by `{}` (pid {} on host {}, started {}, last heartbeat {})",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.command,
            self.pid,
            self.host,
            self.started.format("%Y-%m-%d %H:%M:%S UTC"),
            self.heartbeat.format("%Y-%m-%d %H:%M:%S UTC"),
        )
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A held lock; dropping it removes the lock file.
pub struct Lock {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    info: Arc<Mutex<LockInfo>>,
}

impl Lock {
    pub fn info(&self) -> LockInfo {
        self.info.lock().unwrap().clone()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = crate::repo::fsutil::fsync_dir(dir);
        }
    }
}

/// All lock files in `locks_dir` with their parsed content (unparseable files are reported as
/// `None`: a half-written lock never exists, so such a file is damage, treated as stale).
pub fn list_locks(locks_dir: &Path) -> Result<Vec<(PathBuf, Option<LockInfo>)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(locks_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", locks_dir.display())),
    };
    for entry in rd {
        let entry = entry?;
        let p = entry.path();
        if p.extension().and_then(|s| s.to_str()) != Some("json") {
            continue;
        }
        let info = fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok());
        out.push((p, info));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Take a lock. Waits up to `wait` for conflicting locks to go away, then refuses with an error
/// naming the holder.
pub fn acquire(
    locks_dir: &Path,
    tmp_dir: &Path,
    exclusive: bool,
    command: &str,
    stale_after: Duration,
    wait: Duration,
) -> Result<Lock> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let now = Utc::now();
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            exclusive,
            command: command.to_string(),
            started: now,
            heartbeat: now,
        };
        let name = format!(
            "{}-{}-{:016x}.json",
            info.host.replace(['/', '.'], "_"),
            info.pid,
            rand::random::<u64>()
        );
        let path = locks_dir.join(&name);
        write_atomic(tmp_dir, &path, &serde_json::to_vec_pretty(&info)?, false)
            .context("writing the lock file")?;
        let mut conflict = None;
        for (p, other) in list_locks(locks_dir)? {
            if p == path {
                continue;
            }
            let Some(other) = other else { continue };
            if other.is_stale(Utc::now(), stale_after) {
                continue;
            }
            if exclusive || other.exclusive {
                conflict = Some(other);
                break;
            }
        }
        match conflict {
            None => {
                let info = Arc::new(Mutex::new(info));
                let stop = Arc::new(AtomicBool::new(false));
                let thread = spawn_heartbeat(
                    path.clone(),
                    tmp_dir.to_path_buf(),
                    info.clone(),
                    stop.clone(),
                );
                return Ok(Lock {
                    path,
                    stop,
                    thread: Some(thread),
                    info,
                });
            }
            Some(other) => {
                let _ = fs::remove_file(&path);
                if std::time::Instant::now() >= deadline {
                    return Err(MnError::Locked(format!(
                        "the repository is locked: {}. Wait for it to finish; if that process \
                         is gone (e.g. its host crashed), `mnbackup unlock` removes locks whose \
                         heartbeat is older than {} minutes, `mnbackup unlock --remove-all` \
                         removes every lock",
                        other.describe(),
                        stale_after.as_secs() / 60
                    ))
                    .into());
                }
                let jitter = 200 + (rand::random::<u64>() % 800);
                std::thread::sleep(Duration::from_millis(jitter));
            }
        }
    }
}

fn spawn_heartbeat(
    path: PathBuf,
    tmp_dir: PathBuf,
    info: Arc<Mutex<LockInfo>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        std::thread::park_timeout(HEARTBEAT);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let bytes = {
            let mut i = info.lock().unwrap();
            i.heartbeat = Utc::now();
            serde_json::to_vec_pretty(&*i).unwrap_or_default()
        };
        if let Err(e) = write_atomic(&tmp_dir, &path, &bytes, false) {
            tracing::warn!("could not refresh the lock heartbeat: {e:#}");
        }
    })
}

/// Remove stale locks (or all, with `all`). Returns the removed locks.
pub fn remove_locks(
    locks_dir: &Path,
    stale_after: Duration,
    all: bool,
) -> Result<Vec<(PathBuf, Option<LockInfo>)>> {
    let mut removed = Vec::new();
    for (p, info) in list_locks(locks_dir)? {
        let stale = match &info {
            None => true,
            Some(i) => i.is_stale(Utc::now(), stale_after),
        };
        if all || stale {
            fs::remove_file(&p).with_context(|| format!("removing lock {}", p.display()))?;
            removed.push((p, info));
        }
    }
    if !removed.is_empty() {
        crate::repo::fsutil::fsync_dir(locks_dir)?;
    }
    Ok(removed)
}
