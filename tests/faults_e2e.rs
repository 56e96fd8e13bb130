//! Faults the repository must survive (issue 6): SIGKILL at seeded random points of snapshot and
//! prune, concurrent snapshots, stale locks from other hosts, hostile sizes and deltas.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn tree(root: &Path, rng: &mut Rng, files: usize, size: usize) {
    fs::create_dir_all(root).unwrap();
    for i in 0..files {
        fs::write(root.join(format!("f{i:03}.sql")), text(rng, size)).unwrap();
    }
}

fn verify_all(repo: &Path) {
    let o = mnb(repo, &["verify", "--read-data"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify --read-data failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

/// Run mnbackup, kill it with SIGKILL after `delay`; returns whether it was still running.
fn run_and_kill(args: &[&str], delay: Duration) -> bool {
    run_and_kill_timed(args, delay).is_none()
}

/// Like [`run_and_kill`]; returns `None` when the run was killed, or how long it took when it
/// finished before `delay`.
fn run_and_kill_timed(args: &[&str], delay: Duration) -> Option<Duration> {
    let mut child = Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let st = child.wait().unwrap();
    if st.success() {
        Some(start.elapsed())
    } else {
        None
    }
}

#[test]
fn sigkill_at_random_points_of_snapshot_and_prune() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    let mut rng = Rng(2026);
    tree(&src, &mut rng, 12, 1_000_000);
    ok(&repo, &["init"]);
    let r = repo.to_str().unwrap();
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--files", s]);
    // measure a run to spread the kill points over it
    fs::write(src.join("extra.sql"), text(&mut rng, 3_000_000)).unwrap();
    let start = Instant::now();
    ok(&repo, &["snapshot", "--files", s]);
    let mut span = start.elapsed().as_micros().max(20_000) as u64;

    // 20 kills at seeded random points of a run. The measured run may have been slowed by other
    // work on the machine: a run that finishes before its kill point shrinks the span to its own
    // duration, so the kill points stay inside real runs (at most 60 attempts).
    let mut killed = 0;
    for point in 0..60 {
        if killed == 20 {
            break;
        }
        // change ~2 files so each run writes new objects
        for _ in 0..2 {
            let f = src.join(format!("f{:03}.sql", rng.below(12)));
            let mut d = fs::read(&f).unwrap();
            let at = rng.below(d.len() as u64 - 10_000) as usize;
            d[at..at + 8000].copy_from_slice(&text(&mut rng, 8000));
            fs::write(&f, d).unwrap();
        }
        let delay = Duration::from_micros(rng.below(span));
        match run_and_kill_timed(&["-q", "-r", r, "snapshot", "--files", s], delay) {
            None => killed += 1,
            Some(took) => span = span.min(took.as_micros().max(1_000) as u64),
        }
        if point % 5 == 4 {
            verify_all(&repo);
        }
    }
    verify_all(&repo);
    ok(&repo, &["snapshot", "--files", s]);
    let out = t.path().join("out");
    ok(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_same(
        &capture(&src),
        &capture(&out.join("files").join(src.strip_prefix("/").unwrap())),
    );
    println!("snapshot: {killed} runs killed at seeded random points");
    assert!(killed >= 10, "only {killed} runs were killed mid-way");

    // prune, killed at seeded random points: forget all but the last two, then prune 20 times
    let all = ids(&repo);
    let forget: Vec<&str> = all[..all.len() - 2].iter().map(|s| s.as_str()).collect();
    let mut args = vec!["forget"];
    args.extend(forget);
    ok(&repo, &args);
    let start = Instant::now();
    ok(&repo, &["prune", "--dry-run"]);
    let span = start.elapsed().as_micros().max(5_000) as u64 * 3;
    let mut pkilled = 0;
    for _ in 0..20 {
        if run_and_kill(
            &["-q", "-r", r, "prune"],
            Duration::from_micros(rng.below(span)),
        ) {
            pkilled += 1;
        }
        verify_all(&repo);
    }
    ok(&repo, &["prune"]);
    verify_all(&repo);
    for id in ids(&repo) {
        let out = t.path().join(format!("p-{id}"));
        ok(&repo, &["export", &id, out.to_str().unwrap()]);
    }
    println!("prune: {pkilled} of 20 runs killed at seeded random points");
}

#[test]
fn two_snapshots_at_once_one_refuses() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    tree(&src, &mut Rng(8), 30, 1_000_000);
    ok(&repo, &["init"]);
    let r = repo.to_str().unwrap();
    let s = src.to_str().unwrap();
    let mut first = Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(["-q", "-r", r, "snapshot", "--files", s])
        .spawn()
        .unwrap();
    // wait until the first holds its lock
    let start = Instant::now();
    while fs::read_dir(repo.join("locks")).unwrap().next().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first snapshot never took its lock"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let o = mnb(&repo, &["snapshot", "--files", s]);
    let code = o.status.code();
    assert!(first.wait().unwrap().success());
    if code == Some(0) {
        // the first finished before the second looked: then both ran one after the other
        eprintln!("the first snapshot finished too fast to overlap; both ran in turn");
    } else {
        assert_eq!(code, Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("snapshot"),
            "the message names the holder: {}",
            stderr(&o)
        );
    }
    verify_all(&repo);
    assert!(
        fs::read_dir(repo.join("locks")).unwrap().next().is_none(),
        "a lock was left behind"
    );
}

fn write_lock(repo: &Path, host: &str, age_minutes: i64, exclusive: bool) -> std::path::PathBuf {
    let now = chrono_like_now(age_minutes);
    let body = serde_json::json!({
        "host": host, "pid": 4242, "exclusive": exclusive, "command": "snapshot",
        "started": now, "heartbeat": now,
    });
    let p = repo
        .join("locks")
        .join(format!("{host}-4242-0000000000000001.json"));
    fs::write(&p, serde_json::to_vec(&body).unwrap()).unwrap();
    p
}

/// RFC 3339 UTC time `minutes` ago, without pulling chrono into the tests.
fn chrono_like_now(minutes: i64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("{minutes} minutes ago"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn stale_lock_from_another_host_is_recognised_by_age() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    tree(&src, &mut Rng(1), 2, 10_000);
    ok(&repo, &["init"]);
    let s = src.to_str().unwrap();
    // a live lock of another host blocks, and `unlock` does not remove it
    let live = write_lock(&repo, "mn-standby", 1, true);
    let o = mnb(&repo, &["snapshot", "--files", s]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("mn-standby"), "{}", stderr(&o));
    ok(&repo, &["unlock"]);
    assert!(live.exists(), "unlock removed a live lock");
    fs::remove_file(&live).unwrap();
    // a lock whose heartbeat is two hours old (its host crashed) blocks nothing ...
    let stale = write_lock(&repo, "mn-crashed", 120, true);
    ok(&repo, &["snapshot", "--files", s]);
    // ... and `unlock` removes it
    let o = ok(&repo, &["unlock"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("mn-crashed"));
    assert!(!stale.exists());
    // --remove-all breaks even a live lock
    let live = write_lock(&repo, "mn-standby", 1, false);
    ok(&repo, &["unlock", "--remove-all"]);
    assert!(!live.exists());
}

fn forge(repo: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    forge_manifest(repo, None, edit);
}

#[test]
fn absurd_sizes_and_expanding_deltas_are_rejected_before_writing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    let mut rng = Rng(77);
    tree(&src, &mut rng, 1, 2_000_000);
    ok(&repo, &["init"]);
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--files", s]);
    let f = src.join("f000.sql");
    let mut d = fs::read(&f).unwrap();
    d[500_000..500_050].copy_from_slice(&[b'x'; 50]);
    fs::write(&f, d).unwrap();
    ok(&repo, &["snapshot", "--files", s]);
    // keep only the second snapshot's manifest, which holds a delta
    let first = ids(&repo)[0].clone();
    ok(&repo, &["forget", &first]);

    let base = t.path().join("repo-orig");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&repo)
        .arg(&base)
        .status()
        .unwrap()
        .success());
    let item_idx = |v: &serde_json::Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .position(|i| i["name"].as_str().unwrap().ends_with("f000.sql"))
            .unwrap()
    };

    // 1. an absurd declared size
    forge(&repo, |v| {
        let i = item_idx(v);
        v["items"][i]["pieces"][0]["size"] = serde_json::json!(1u64 << 40);
        v["items"][i]["size"] = serde_json::json!(1u64 << 41);
    });
    let out = t.path().join("out1");
    let o = mnb(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(!out.exists() || files_under(&out).is_empty());

    // 2. a delta whose result would be larger than declared
    fs::remove_dir_all(&repo).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&base)
        .arg(&repo)
        .status()
        .unwrap()
        .success());
    let mut shrunk = false;
    forge(&repo, |v| {
        let i = item_idx(v);
        let pieces = v["items"][i]["pieces"].as_array_mut().unwrap();
        let total: u64 = pieces.iter().map(|p| p["size"].as_u64().unwrap()).sum();
        for p in pieces.iter_mut() {
            if p["enc"] == "delta" {
                let sz = p["size"].as_u64().unwrap();
                p["size"] = serde_json::json!(sz - 1000);
                v["items"][i]["size"] = serde_json::json!(total - 1000);
                break;
            }
        }
    });
    let v = {
        let f = files_under(&repo.join("snapshots"))
            .into_iter()
            .next()
            .unwrap();
        manifest_body(&f).unwrap().to_string()
    };
    if v.contains("\"enc\":\"delta\"") {
        shrunk = true;
    }
    assert!(shrunk, "the fixture has no delta piece");
    let out = t.path().join("out2");
    let o = mnb(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("f000.sql"), "{}", stderr(&o));
    assert!(!out
        .join("files")
        .join(src.strip_prefix("/").unwrap())
        .join("f000.sql")
        .exists());
}
