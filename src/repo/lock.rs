//! Repository locks that work on NFS without `flock`.
//!
//! A lock is a small JSON file `locks/<id>.json` written atomically (a temporary `.<id>.tmp` in
//! `locks/` itself, renamed: lock files never pass through `tmp/`, which prune cleans),
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
//! Several snapshots may hold shared locks at once (each writer's own lock file; see
//! [`crate::repo::leftovers`]); `forget` takes a lock shared with those writers only
//! ([`Kind::Forget`]); only prune and repair (and `forget --prune`) take the exclusive one.
//!
//! A shared (reading) lock that cannot be written because the pool is full or read-only is not
//! needed to read safely: the command proceeds without one (as restic's `--no-lock`), with a
//! warning, after checking that no writer holds the repository.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::MnError;
use crate::repo::{se, LOCKS};
use crate::store::local::read_regular;
use crate::store::{Backend, StoreError};

/// The locks' place in the store.
type Store = Arc<dyn Backend>;

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
    /// What the lock is for: `reader`, `writer`, `forget` or `exclusive` (see [`Kind`]); empty
    /// in lock files of older releases (read as `reader`, or `exclusive` by its flag).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
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
    let b = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
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
    store: Store,
    /// None: a reading command that proceeds without a lock file (the pool is full or
    /// read-only).
    key: Option<String>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    info: Arc<Mutex<LockInfo>>,
}

impl Lock {
    pub fn info(&self) -> LockInfo {
        self.info.lock().unwrap().clone()
    }

    /// The lock file's key (None: a reader proceeding without a lock file).
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Some(key) = &self.key {
            let _ = self.store.delete(key);
        }
    }
}

/// All lock files in `locks/` with their parsed content (unparseable files are reported as
/// `None`: a half-written lock never exists, so such a file is damage, treated as stale).
pub fn list_locks(store: &Store) -> Result<Vec<(String, Option<LockInfo>)>> {
    let mut out = Vec::new();
    let prefix = format!("{LOCKS}/");
    for (key, _) in store.list(&prefix).map_err(se)? {
        let name = &key[prefix.len()..];
        if !name.ends_with(".json") || name.starts_with('.') || name.contains('/') {
            continue;
        }
        // Not followed, not blocking, bounded: a FIFO or a huge file is damage, not a lock.
        let info = store
            .get(&key, 64 * 1024)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok());
        out.push((key, info));
    }
    Ok(out)
}

/// Write a lock file (atomically; a local store keeps its temporary in `locks/` itself): a new
/// one with "put if absent" (a conditional PUT on an object store), a held one's heartbeat by
/// replacing it.
fn write_lock_file(
    store: &Store,
    key: &str,
    info: &LockInfo,
    new: bool,
) -> std::result::Result<(), StoreError> {
    let bytes =
        serde_json::to_vec_pretty(info).map_err(|e| StoreError::Permanent(e.to_string()))?;
    if new {
        crate::repo::manifests::put_new(&**store, key, &bytes)
    } else {
        store.put_replace(key, &bytes)
    }
}

/// Whether a write error means the pool cannot take a new file (full or read-only).
fn pool_unwritable(e: &StoreError) -> bool {
    match e {
        StoreError::NoSpace(_) => true,
        StoreError::Permanent(m) => m.contains("Read-only file system"),
        _ => false,
    }
}

/// Remove what certainly-dead runs of this host left in `locks/`: their lock files and
/// temporaries older than an hour. Best effort.
fn clean_dead(store: &Store, locks: &[(String, Option<LockInfo>)]) {
    for (k, info) in locks {
        if info.as_ref().is_some_and(|i| i.is_dead()) && store.delete(k).is_ok() {
            tracing::info!("removed the lock of a process that is gone: {k}");
        }
    }
    let prefix = format!("{LOCKS}/");
    for (key, _) in store.list(&prefix).unwrap_or_default() {
        let name = &key[prefix.len()..];
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let old = store
            .stat(&key)
            .ok()
            .and_then(|m| m.modified)
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|a| a > Duration::from_secs(3600));
        if old {
            let _ = store.delete(&key);
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
/// naming the holder (exit 4). A shared lock of a reader proceeds without a file on a full or
/// read-only pool (see the module's doc).
pub fn acquire(
    store: &Store,
    exclusive: bool,
    command: &str,
    stale_after: Duration,
    wait: Duration,
) -> Result<Lock> {
    let kind = if exclusive {
        Kind::Exclusive
    } else {
        Kind::Reader
    };
    acquire_kind(store, kind, command, stale_after, wait)
}

/// What a lock is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared, reading only: may proceed without a lock file on a full or read-only pool.
    Reader,
    /// Shared, writing (a snapshot): several at once, but never without a lock file (prune
    /// must see it).
    Writer,
    /// `forget`: shared with writers only. Forget deletes manifests and nothing else, so a
    /// snapshot may run meanwhile: the delta parent it chose may lose its manifest, but the
    /// objects it builds on stay until prune, and prune takes the exclusive lock, which waits for
    /// the snapshot's lock; the new manifest then references those objects and prune keeps them.
    /// Not shared with readers (a `verify` or `restore` would see a listed manifest vanish) nor
    /// with another forget (two policies applied at once could together remove what each keeps).
    Forget,
    /// Exclusive (prune, repair, forget --prune).
    Exclusive,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Reader => "reader",
            Kind::Writer => "writer",
            Kind::Forget => "forget",
            Kind::Exclusive => "exclusive",
        }
    }

    /// Whether a lock of this kind must wait for `other`.
    pub fn conflicts_with(self, other: &LockInfo) -> bool {
        let theirs = match other.kind.as_str() {
            _ if other.exclusive => Kind::Exclusive,
            "writer" => Kind::Writer,
            "forget" => Kind::Forget,
            _ => Kind::Reader,
        };
        match (self, theirs) {
            (Kind::Exclusive, _) | (_, Kind::Exclusive) => true,
            (Kind::Forget, k) | (k, Kind::Forget) => k != Kind::Writer,
            _ => false,
        }
    }
}

/// Take a lock of `kind` (see [`acquire`]).
pub fn acquire_kind(
    store: &Store,
    kind: Kind,
    command: &str,
    stale_after: Duration,
    wait: Duration,
) -> Result<Lock> {
    let exclusive = kind == Kind::Exclusive;
    store.layout_dir(LOCKS).map_err(se)?;
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
            kind: kind.label().to_string(),
        };
        let key = format!(
            "{LOCKS}/{}-{}-{:016x}.json",
            info.host.replace(['/', '.'], "_"),
            info.pid,
            rand::random::<u64>()
        );
        let mut own = Some(key.clone());
        if let Err(e) = write_lock_file(store, &key, &info, true) {
            if kind == Kind::Reader && pool_unwritable(&e) {
                tracing::warn!(
                    "cannot write a lock file ({e}); the pool is full or read-only. Reading \
                     without a lock (nothing is written to the pool)"
                );
                own = None;
            } else {
                return Err(se(e).context("writing the lock file"));
            }
        }
        let locks = list_locks(store)?;
        clean_dead(store, &locks);
        let conflict = locks.into_iter().find_map(|(k, other)| {
            let other = other.filter(|_| k != key)?;
            let blocks = !other.is_stale(Utc::now(), stale_after) && kind.conflicts_with(&other);
            blocks.then_some(other)
        });
        let Some(other) = conflict else {
            let info = Arc::new(Mutex::new(info));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = own
                .as_ref()
                .map(|k| spawn_heartbeat(store.clone(), k.clone(), info.clone(), stop.clone()));
            return Ok(Lock {
                store: store.clone(),
                key: own,
                stop,
                thread,
                info,
            });
        };
        if let Some(k) = &own {
            let _ = store.delete(k);
        }
        if start.elapsed() >= wait {
            return Err(locked_error(&other, stale_after));
        }
        let jitter = 200 + (rand::random::<u64>() % 800);
        std::thread::sleep(Duration::from_millis(jitter));
    }
}

fn spawn_heartbeat(
    store: Store,
    key: String,
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
        if let Err(e) = write_lock_file(&store, &key, &i, false) {
            tracing::warn!("could not refresh the lock heartbeat: {e}");
        }
    })
}

/// Remove stale locks (or all, with `all`). Returns the removed locks.
pub fn remove_locks(
    store: &Store,
    stale_after: Duration,
    all: bool,
) -> Result<Vec<(String, Option<LockInfo>)>> {
    let mut removed = Vec::new();
    for (k, info) in list_locks(store)? {
        let stale = match &info {
            None => true,
            Some(i) => i.is_stale(Utc::now(), stale_after),
        };
        if all || stale {
            store
                .delete(&k)
                .map_err(se)
                .with_context(|| format!("removing lock {k}"))?;
            removed.push((k, info));
        }
    }
    Ok(removed)
}
