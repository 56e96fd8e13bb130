//! Issue 14 item 9: SIGTERM during a long MariaDB dump. After the grace period the dump stops
//! between pieces, nothing is committed, the repository lock is released, and the daemon exits 0
//! within 10 s of the signal (it used to run the dump to its end,
//! then wait another 60 s and leave the lock behind).

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mnbackup_fixtures::mariadb::{available, TestServer};

#[test]
fn sigterm_during_a_long_dump_stops_within_10_s_and_releases_the_lock() {
    if !available() {
        eprintln!("MariaDB server not installed; skipping");
        return;
    }
    let src = TestServer::start().unwrap();
    // ~130 MB of rows in 5000-row pieces: minutes of dumping on a shared machine.
    src.sql(
        "CREATE DATABASE big; CREATE DATABASE seq; CREATE TABLE big.t (id INT PRIMARY KEY, a CHAR(64), b CHAR(64)) \
         ENGINE=InnoDB; INSERT INTO big.t SELECT seq, SHA2(seq, 256), SHA2(seq + 1, 256) FROM \
         seq.seq_1_to_1000000;",
    )
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init", "--no-packs"]);
    let cfg = t.path().join("mnbackup.toml");
    fs::write(
        &cfg,
        format!(
            r#"
[repository]
path = "{repo}"

[mariadb]
socket = "{sock}"
user = "root"
workers = 1
split_rows = 5000
databases = ["big"]

[[schedule]]
name = "snap"
cron = "* * * * * *"
retries = 0

[daemon]
timezone = "UTC"
state_dir = "{state}"
grace_seconds = 1
"#,
            repo = repo.display(),
            sock = src.socket().display(),
            state = t.path().join("state").display()
        ),
    )
    .unwrap();
    let log = t.path().join("daemon.log");
    let mut child = Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .arg("-c")
        .arg(&cfg)
        .arg("daemon")
        .env_remove("MNBACKUP_CONFIG")
        .env_remove("MNBACKUP_REPO")
        .env("MNBACKUP_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the dump has stored some pieces (objects appear in the repository).
    let start = Instant::now();
    let objects = || {
        walkdir::WalkDir::new(repo.join("objects"))
            .into_iter()
            .count()
    };
    let before = objects();
    while objects() < before + 5 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the dump did not start; log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let locks = || fs::read_dir(repo.join("locks")).unwrap().count();
    assert_eq!(locks(), 1, "the snapshot holds its lock");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let sent = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon did not exit within 10 s of SIGTERM; log:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = sent.elapsed();
    let text = fs::read_to_string(&log).unwrap();
    eprintln!("the daemon exited {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("cancelled by a shutdown request"), "{text}");
    assert_eq!(locks(), 0, "the lock was released; log:\n{text}");
    // Nothing was committed: no snapshot.
    assert!(ids(&repo).is_empty(), "{text}");
}
