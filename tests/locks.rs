//! Locks (issue 12 items 10 and 11, issue 14 items 2, 3 and 4): lock files never pass through
//! `tmp/`, a conflict is exit 4, stale locks are recognised by boot id, process start time and
//! absurd heartbeats, dead locks are cleaned, reading works on a full or read-only pool and
//! forget/prune can free space on a full pool.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mnbackup::repo::lock::{boot_id, hostname, process_start};

fn small_tree(root: &Path, seed: u64) {
    let mut rng = Rng(seed);
    fs::create_dir_all(root).unwrap();
    for i in 0..3 {
        fs::write(root.join(format!("f{i}.txt")), text(&mut rng, 20_000)).unwrap();
    }
}

fn forge_lock(repo: &Path, name: &str, v: serde_json::Value) -> std::path::PathBuf {
    let p = repo.join("locks").join(name);
    fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    p
}

fn lock_json(
    host: &str,
    pid: u32,
    boot: Option<String>,
    start: Option<u64>,
    heartbeat: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "host": host, "pid": pid, "exclusive": true, "command": "snapshot",
        "started": heartbeat, "heartbeat": heartbeat,
    });
    if let Some(b) = boot {
        v["boot_id"] = b.into();
    }
    if let Some(s) = start {
        v["proc_start"] = s.into();
    }
    v
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    small_tree(&src, 1);
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let s = src.to_str().unwrap().to_string();
    (t, repo, s)
}

/// Issue 14 item 2: a reader's lock never goes through tmp/ (which a snapshot empties).
#[test]
fn reader_lock_does_not_need_tmp() {
    let (_t, repo, s) = setup();
    ok(&repo, &["snapshot", "--only-files", "--files", &s]);
    fs::remove_dir_all(repo.join("tmp")).unwrap();
    let item = format!("files{s}/f0.txt");
    let o = ok(&repo, &["cat", "latest", &item]);
    assert_eq!(o.stdout, fs::read(Path::new(&s).join("f0.txt")).unwrap());
    ok(&repo, &["verify"]);
}

/// Issue 14 item 2: readers running during snapshots end with 0 or 4 (locked), never 1.
#[test]
fn readers_during_snapshots_never_fail_with_exit_1() {
    let (_t, repo, s) = setup();
    ok(&repo, &["snapshot", "--only-files", "--files", &s]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let repo = repo.clone();
        let s = s.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                // A changed file each time: every snapshot writes objects through tmp/.
                fs::write(
                    Path::new(&s).join("f0.txt"),
                    format!("version {i}\n").repeat(500),
                )
                .unwrap();
                let o = mnb(&repo, &["snapshot", "--only-files", "--files", &s]);
                assert!(
                    matches!(o.status.code(), Some(0) | Some(4)),
                    "{}",
                    stderr(&o)
                );
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut runs = 0;
    let mut codes = std::collections::BTreeMap::new();
    let item = format!("files{s}/f1.txt");
    while !stop.load(std::sync::atomic::Ordering::SeqCst) || runs < 300 {
        let o = if runs % 2 == 0 {
            mnb(&repo, &["verify"])
        } else {
            mnb(&repo, &["cat", "latest", &item])
        };
        let c = o.status.code().unwrap_or(-1);
        assert!(c == 0 || c == 4, "reader exit {c}: {}", stderr(&o));
        *codes.entry(c).or_insert(0) += 1;
        runs += 1;
    }
    writer.join().unwrap();
    eprintln!("reader exit codes over {runs} runs: {codes:?}");
}

/// Issue 14 item 3: a lock of this host whose pid is alive but from another boot, or whose pid
/// now belongs to a process started at another time, is stale and removed by the next run.
#[test]
fn live_pid_from_another_boot_or_process_start_is_stale() {
    let (_t, repo, s) = setup();
    let now = chrono::Utc::now();
    let other_boot = forge_lock(
        &repo,
        "a.json",
        lock_json(
            &hostname(),
            1,
            Some("00000000-0000-0000-0000-000000000000".into()),
            process_start(1),
            now,
        ),
    );
    let other_start = forge_lock(
        &repo,
        "b.json",
        lock_json(
            &hostname(),
            std::process::id(),
            boot_id(),
            Some(process_start(std::process::id()).unwrap() + 12345),
            now,
        ),
    );
    let o = mnb(&repo, &["snapshot", "--only-files", "--files", &s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !other_boot.exists() && !other_start.exists(),
        "dead locks cleaned"
    );
}

/// A live lock of another process conflicts: exit 4, also after waiting with --retry-lock.
#[test]
fn live_lock_is_exit_4_and_retry_lock_waits() {
    let (_t, repo, s) = setup();
    let me = std::process::id();
    forge_lock(
        &repo,
        "live.json",
        lock_json(
            &hostname(),
            me,
            boot_id(),
            process_start(me),
            chrono::Utc::now(),
        ),
    );
    let o = mnb(&repo, &["snapshot", "--only-files", "--files", &s]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    let t0 = Instant::now();
    let o = mnb(
        &repo,
        &[
            "--retry-lock",
            "2s",
            "snapshot",
            "--only-files",
            "--files",
            &s,
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(t0.elapsed() >= Duration::from_secs(2));
    // A reader under a shared lock is not blocked by... an exclusive lock: it is.
    let o = mnb(&repo, &["verify"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}

/// Issue 12 item 11: a heartbeat hours in the future does not keep a lock fresh; unlock removes it.
#[test]
fn heartbeat_in_the_future_is_stale() {
    let (_t, repo, s) = setup();
    let future = chrono::Utc::now() + chrono::Duration::hours(3);
    let p = forge_lock(
        &repo,
        "skewed.json",
        lock_json("some-other-host", 4242, None, None, future),
    );
    let o = mnb(&repo, &["snapshot", "--only-files", "--files", &s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    ok(&repo, &["unlock"]);
    assert!(!p.exists());
}

/// Issue 12 item 9: a FIFO as a lock file hangs nothing.
#[test]
fn fifo_lock_file_does_not_hang() {
    let (_t, repo, s) = setup();
    let p = repo.join("locks/fifo.json");
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let t0 = Instant::now();
    ok(&repo, &["snapshot", "--only-files", "--files", &s]);
    ok(&repo, &["unlock"]);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(fs::symlink_metadata(&p).is_err(), "unlock removed the FIFO");
}

/// Issue 12 item 12: a huge lock wait is a configuration error, not a panic.
#[test]
fn huge_lock_wait_is_refused() {
    let (t, repo, _s) = setup();
    let c = t.path().join("c.toml");
    fs::write(
        &c,
        "[repository]\nlock_wait_seconds = 18446744073709551615\n",
    )
    .unwrap();
    let o = mnb(&repo, &["-c", c.to_str().unwrap(), "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    let o = mnb(&repo, &["--retry-lock", "99999999h", "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

struct Umount(std::path::PathBuf);
impl Drop for Umount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 12 item 10: on a full pool, reading commands work and forget/prune free space; on a
/// read-only pool reading commands work.
#[test]
fn full_and_read_only_pool_keep_recovery_paths_open() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts a tmpfs and needs root (fixtures/test-all.sh runs as root)"
    );
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("pool");
    fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let _u = Umount(mnt.clone());
    let repo = mnt.join("repo");
    let src = t.path().join("node");
    small_tree(&src, 2);
    let s = src.to_str().unwrap();
    ok(&repo, &["init"]);
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    small_tree(&src, 3);
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let all = ids(&repo);
    // Fill the pool.
    let mut filler = fs::File::create(mnt.join("filler")).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    use std::io::Write;
    while filler.write_all(&block).is_ok() {}
    let _ = filler.sync_all();
    drop(filler);
    for i in 0..1000 {
        if fs::write(mnt.join(format!("small{i}")), b"x").is_err() {
            break;
        }
    }
    let item = format!("files{s}/f0.txt");
    let o = mnb(&repo, &["cat", "latest", &item]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, fs::read(src.join("f0.txt")).unwrap());
    let o = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = t.path().join("export");
    let o = mnb(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = mnb(&repo, &["forget", "--prune", &all[0]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ids(&repo), vec![all[1].clone()]);
    assert!(files_under(&repo.join("locks")).is_empty());
    // Read-only.
    let st = Command::new("mount")
        .args(["-o", "remount,ro", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = mnb(&repo, &["cat", "latest", &item]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Issue 17 item 4 / task S 5: `forget` takes a lock shared with snapshots (it only deletes
/// manifests), so it runs while another host's snapshot holds its writer lock; `forget --prune`
/// (exclusive) and a forget beside a live reader (verify, restore) still wait.
#[test]
fn forget_runs_beside_another_hosts_snapshot_but_not_beside_a_reader() {
    let (_t, repo, s) = setup();
    ok(&repo, &["snapshot", "--only-files", "--files", &s]);
    ok(&repo, &["snapshot", "--only-files", "--files", &s]);
    let all = ids(&repo);
    assert_eq!(all.len(), 2);
    let mut writer = lock_json("node-b", 4242, None, None, chrono::Utc::now());
    writer["exclusive"] = false.into();
    writer["kind"] = "writer".into();
    let held = forge_lock(&repo, "node-b-4242-1.json", writer);
    // An exclusive command waits for the writer ...
    let o = mnb(&repo, &["forget", "--prune", &all[0]]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(ids(&repo), all, "nothing was forgotten while locked out");
    // ... forget does not.
    let o = mnb(&repo, &["forget", &all[0]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ids(&repo), vec![all[1].clone()]);
    assert!(held.exists(), "the writer's lock is untouched");
    // A reader's lock (or one of an older release, which has no kind) blocks forget.
    fs::remove_file(&held).unwrap();
    let mut reader = lock_json("node-b", 4243, None, None, chrono::Utc::now());
    reader["exclusive"] = false.into();
    reader["command"] = "verify".into();
    forge_lock(&repo, "node-b-4243-1.json", reader);
    let o = mnb(&repo, &["forget", &all[1]]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("verify"), "{}", stderr(&o));
    assert_eq!(ids(&repo), vec![all[1].clone()]);
}

/// A copy of the pool that lost its empty directories (git, `rclone` through an object store,
/// some sync tools) still lists, snapshots and verifies: `locks/` and `tmp/` are recreated by the
/// command that writes into them.
#[test]
fn a_pool_copy_without_its_empty_directories_still_works() {
    let (_t, repo, src) = setup();
    for d in ["locks", "tmp"] {
        fs::remove_dir(repo.join(d)).unwrap();
    }
    let listed = list(&repo);
    assert!(listed.is_empty(), "{listed:?}");
    ok(&repo, &["snapshot", "--only-files", "--files", &src]);
    assert!(repo.join("locks").is_dir() && repo.join("tmp").is_dir());
    assert!(files_under(&repo.join("locks")).is_empty());
    assert_eq!(list(&repo).len(), 1);
    ok(&repo, &["verify", "--read-data"]);
}
