//! Repository locks that work on NFS without `flock`.
//!
//! A lock is a small JSON file `locks/<id>.json` written atomically (a temporary `.<id>.tmp` in
//! `locks/` itself, renamed: lock files never pass through `tmp/`, which a snapshot empties),
//! carrying host, boot id, pid, the process's start time, a heartbeat refreshed every
//! [`HEARTBEAT`], and whether it is exclusive. To take a lock a process writes its own file, then
//! lists `locks/`: if another live lock conflicts (either of the two is exclusive) it removes its
//! own file and waits or refuses (exit 4). Two processes racing both see each other and both back
//! off, so two writers never interleave.
//!
//! A lock is stale (blocks nothing) when, on this host, it comes from another boot, its process is
//! gone, or its pid now belongs to a process started at another time; on any host when its
//! heartbeat is older than the stale age, or further in the future than the stale age (a clock
//! that jumped). Locks that are certainly dead (this host) are removed by the next lock attempt;
//! `mnbackup unlock` removes every stale lock.
//!
//! A shared (reading) lock that cannot be written because the pool is full or read-only is not
//! needed to read safely: the command proceeds without one (as restic's `--no-lock`), with a
//! warning, after checking that no writer holds the repository.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::MnError;
use crate::repo::fsutil::{fsync_dir, read_regular, temp_name, write_error};

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
    /// `/proc/sys/kernel/random/boot_id` of the holder's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder process's start time (`/proc/PID/stat` field 22, clock ticks since boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start: Option<u64>,
}

impl LockInfo {
    /// Whether the holder is certainly gone: a lock of this host from another boot, of a dead
    /// process, or of a pid that now belongs to another process.
    pub fn is_dead(&self) -> bool {
        if self.host != hostname() {
            return false;
        }
        if let (Some(theirs), Some(ours)) = (&self.boot_id, boot_id()) {
            if *theirs != ours {
                return true;
            }
        }
        if !pid_alive(self.pid) {
            return true;
        }
        match (self.proc_start, process_start(self.pid)) {
            (Some(theirs), Some(now)) => theirs != now,
            _ => false,
        }
    }

    /// Whether this lock no longer blocks anyone.
    pub fn is_stale(&self, now: DateTime<Utc>, stale_after: Duration) -> bool {
        if self.is_dead() {
            return true;
        }
        let age = now.signed_duration_since(self.heartbeat);
        let limit = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        // A heartbeat far in the future comes from a clock that jumped (or a forged file): it
        // does not keep the lock fresh for hours.
        age > limit || -age > limit
    }

    pub fn describe(&self) -> String {
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

/// This boot's id (`/proc/sys/kernel/random/boot_id`), when the kernel provides one.
pub fn boot_id() -> Option<String> {
    let b = read_regular(Path::new("/proc/sys/kernel/random/boot_id"), 4096).ok()?;
    let s = String::from_utf8_lossy(&b).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// A process's start time: field 22 of `/proc/PID/stat` (after the parenthesised command name,
/// which may itself contain spaces and parentheses).
pub fn process_start(pid: u32) -> Option<u64> {
    let b = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let s = String::from_utf8_lossy(&b);
    let after = &s[s.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state); field 22 is the 20th of them.
    after.split_whitespace().nth(19)?.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A held lock; dropping it removes the lock file.
pub struct Lock {
    /// None: a reading command that proceeds without a lock file (the pool is full or
    /// read-only).
    path: Option<PathBuf>,
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
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
            if let Some(dir) = path.parent() {
                let _ = fsync_dir(dir);
            }
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
        if p.extension().and_then(|s| s.to_str()) != Some("json")
            || entry.file_name().to_string_lossy().starts_with('.')
        {
            continue;
        }
        // Not followed, not blocking, bounded: a FIFO or a huge file is damage, not a lock.
        let info = read_regular(&p, 64 * 1024)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok());
        out.push((p, info));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Write a lock file: a temporary `.NAME.tmp` in `locks/` itself, synced, renamed to `NAME`.
fn write_lock_file(locks_dir: &Path, path: &Path, info: &LockInfo) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = locks_dir.join(format!(".{}", temp_name(&stem)));
    let r = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(locks_dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Whether an I/O error means the pool cannot take a new file (full or read-only).
fn pool_unwritable(e: &std::io::Error) -> bool {
    crate::error::is_no_space(e) || e.raw_os_error() == Some(libc::EROFS)
}

/// Remove what certainly-dead runs of this host left in `locks/`: their lock files and
/// temporaries older than an hour. Best effort.
fn clean_dead(locks_dir: &Path, locks: &[(PathBuf, Option<LockInfo>)]) {
    for (p, info) in locks {
        if info.as_ref().is_some_and(|i| i.is_dead()) && fs::remove_file(p).is_ok() {
            tracing::info!(
                "removed the lock of a process that is gone: {}",
                p.display()
            );
        }
    }
    if let Ok(rd) = fs::read_dir(locks_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.ends_with(".tmp")) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|a| a > Duration::from_secs(3600));
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn locked_error(other: &LockInfo, stale_after: Duration) -> anyhow::Error {
    MnError::Locked(format!(
        "the repository is locked: {}. Wait for it to finish (or retry with --retry-lock 10m / \
         [repository] lock_wait_seconds); if that process is gone (e.g. its host crashed), \
         `mnbackup unlock` removes locks whose heartbeat is older than {} minutes, \
         `mnbackup unlock --remove-all` removes every lock",
        other.describe(),
        stale_after.as_secs() / 60
    ))
    .into()
}

/// Take a lock. Waits up to `wait` for conflicting locks to go away, then refuses with an error
/// naming the holder (exit 4).
pub fn acquire(
    locks_dir: &Path,
    _tmp_dir: &Path,
    exclusive: bool,
    command: &str,
    stale_after: Duration,
    wait: Duration,
) -> Result<Lock> {
    crate::repo::fsutil::check_real_dir(locks_dir)?;
    let start = std::time::Instant::now();
    let boot = boot_id();
    let proc_start = process_start(std::process::id());
    loop {
        let now = Utc::now();
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            exclusive,
            command: command.to_string(),
            started: now,
            heartbeat: now,
            boot_id: boot.clone(),
            proc_start,
        };
        let name = format!(
            "{}-{}-{:016x}.json",
            info.host.replace(['/', '.'], "_"),
            info.pid,
            rand::random::<u64>()
        );
        let path = locks_dir.join(&name);
        let mut own = Some(path.clone());
        if let Err(e) = write_lock_file(locks_dir, &path, &info) {
            if !exclusive && pool_unwritable(&e) {
                tracing::warn!(
                    "cannot write a lock file ({e}); the pool is full or read-only. Reading \
                     without a lock (nothing is written to the pool)"
                );
                own = None;
            } else {
                return Err(write_error(e, "the lock file", &path));
            }
        }
        let locks = list_locks(locks_dir)?;
        clean_dead(locks_dir, &locks);
        let mut conflict = None;
        for (p, other) in locks {
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
                let thread = own.as_ref().map(|p| {
                    spawn_heartbeat(
                        p.clone(),
                        locks_dir.to_path_buf(),
                        info.clone(),
                        stop.clone(),
                    )
                });
                return Ok(Lock {
                    path: own,
                    stop,
                    thread,
                    info,
                });
            }
            Some(other) => {
                if let Some(p) = &own {
                    let _ = fs::remove_file(p);
                }
                if start.elapsed() >= wait {
                    return Err(locked_error(&other, stale_after));
                }
                let jitter = 200 + (rand::random::<u64>() % 800);
                std::thread::sleep(Duration::from_millis(jitter));
            }
        }
    }
}

fn spawn_heartbeat(
    path: PathBuf,
    locks_dir: PathBuf,
    info: Arc<Mutex<LockInfo>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        std::thread::park_timeout(HEARTBEAT);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let i = {
            let mut i = info.lock().unwrap();
            i.heartbeat = Utc::now();
            i.clone()
        };
        if let Err(e) = write_lock_file(&locks_dir, &path, &i) {
            tracing::warn!("could not refresh the lock heartbeat: {e}");
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
