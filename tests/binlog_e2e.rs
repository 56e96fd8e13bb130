//! Point-in-time recovery end to end (issue 20), through the `mnbackup` binary against throwaway
//! servers:
//!
//! - `follow_churn_restore_to_t1_and_latest_after_a_crash`: a churn generator commits
//!   INSERT/UPDATE/DELETE transactions continuously (logging each with its commit time) while
//!   `mnbackup binlog --follow` ships with `segment_seconds = 1`; a snapshot; at T1 the churn
//!   pauses for the checksums; the source is SIGKILLed at T2. `restore --until T1` into an empty
//!   server matches every checksum of T1; `restore --until latest` holds every transaction
//!   committed more than segment_seconds + 5 s before T2.
//! - `killed_replay_continues_without_applying_twice`: a `restore --until latest` killed (with
//!   its children) inside the replay, then run again, continues after the last transaction the
//!   target recorded: the non-idempotent updates (`n = n + 1`) give exactly the source's rows.
//!   `verify --drill --until latest` replays into the scratch databases.
//!
//! - `daemon_follows_and_stores_the_open_segment_on_sigterm`: the daemon's `binlog` job follows
//!   with `segment_seconds = 3600`; nothing is cut before SIGTERM, which stores the open segment:
//!   `restore --until latest` then has every row written.
//!
//! The gap cases (purged binlog in `list --binlog`, `status`, a refused `restore --until`) are in
//! `tests/binlog_pitr.rs`.

mod restore_common;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mnbackup_fixtures::mariadb::{kill_pid, ServerOptions, TestServer};
use mysql_async::prelude::*;
use restore_common::common::{next_second, require_mariadb as require, term};
use restore_common::{text, Env};

const TABLES: &[&str] = &["app.accounts", "app.events", "app.tags"];

fn checksums(s: &TestServer) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| s.sql(&format!("CHECKSUM TABLE {t}")).unwrap())
        .collect()
}

fn schema(s: &TestServer) {
    let mut sql = String::from(
        "CREATE DATABASE app; \
         CREATE TABLE app.accounts (id int PRIMARY KEY, balance bigint NOT NULL) ENGINE=InnoDB; \
         CREATE TABLE app.events (id int PRIMARY KEY, v varchar(100) NOT NULL) ENGINE=InnoDB; \
         CREATE TABLE app.tags (id int PRIMARY KEY, n int NOT NULL) ENGINE=InnoDB;",
    );
    for i in 0..10 {
        sql.push_str(&format!(
            "INSERT INTO app.accounts VALUES ({i}, 1000); INSERT INTO app.tags VALUES ({}, {i});",
            -1 - i
        ));
    }
    s.sql(&sql).unwrap();
}

/// The churn's log: (transaction number, commit time) of every committed transaction.
type ChurnLog = Arc<Mutex<Vec<(i64, DateTime<Utc>)>>>;

/// Churn transaction `k`: an INSERT, an UPDATE and a DELETE (of the tag two steps back).
async fn churn_one(c: &mut mysql_async::Conn, k: i64) -> mysql_async::Result<()> {
    let mut tx = c.start_transaction(mysql_async::TxOpts::default()).await?;
    tx.exec_drop(
        "INSERT INTO app.events (id, v) VALUES (?, ?)",
        (k, format!("event {k}")),
    )
    .await?;
    tx.exec_drop(
        "UPDATE app.accounts SET balance = balance + ? WHERE id = ?",
        (k, k % 10),
    )
    .await?;
    tx.exec_drop("INSERT INTO app.tags (id, n) VALUES (?, ?)", (k, k))
        .await?;
    tx.exec_drop("DELETE FROM app.tags WHERE id = ?", (k - 2,))
        .await?;
    tx.commit().await
}

/// Churn until an error (the server was killed) or `stop`; pauses while `pause` is set
/// (`idle` is set while paused).
fn churn(
    opts: mysql_async::Opts,
    log: ChurnLog,
    pause: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            let mut k = 1;
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    idle.store(true, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle.store(false, Ordering::SeqCst);
                if churn_one(&mut c, k).await.is_err() {
                    return;
                }
                log.lock().unwrap().push((k, Utc::now()));
                k += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    })
}

#[test]
fn follow_churn_restore_to_t1_and_latest_after_a_crash() {
    if !require() {
        return;
    }
    let mut src = TestServer::start_with(ServerOptions::binlog_capture(1)).unwrap();
    schema(&src);
    let e = Env::new();
    e.config(
        &src,
        &[],
        "[binlog]\nsegment_seconds = 1\nserver_id = 4243\n",
    );
    let log: ChurnLog = Arc::default();
    let (pause, idle, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let churner = churn(
        src.opts(),
        log.clone(),
        pause.clone(),
        idle.clone(),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(1));
    e.snapshot();
    let follower = e
        .cmd(&["binlog", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));

    // T1: the churn pauses for the checksums.
    pause.store(true, Ordering::SeqCst);
    while !idle.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t1 = next_second();
    let at_t1 = checksums(&src);
    let committed_at_t1 = log.lock().unwrap().len();
    pause.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(8));

    // T2: the source dies.
    let t2 = Utc::now();
    kill_pid(src.pid().unwrap());
    src.kill();
    churner.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    // The follower notices, retries; SIGTERM stops it cleanly.
    std::thread::sleep(Duration::from_secs(2));
    let o = term(follower);
    assert!(o.status.success(), "binlog --follow: {}", text(&o));
    let log = log.lock().unwrap().clone();
    assert!(
        log.len() > committed_at_t1 + 50,
        "churn too slow: {}",
        log.len()
    );

    // Every segment was committed as its own batch: more than one, one chain.
    let o = e.ok(&["--json", "list", "--binlog"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chains"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["chains"][0]["segments"].as_u64().unwrap() >= 5, "{v}");

    // --until T1 into an empty server: every checksum of T1.
    let dst = TestServer::start().unwrap();
    let sock = dst.socket().display().to_string();
    let until = t1.format("%Y-%m-%d %H:%M:%S").to_string();
    let o = e.run(&["restore", "--until", &until, "--target-socket", &sock]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        checksums(&dst),
        at_t1,
        "restore --until {until}: {}",
        text(&o)
    );

    // --until latest into another empty server: no transaction committed more than
    // segment_seconds + 5 s before T2 is lost.
    let dst2 = TestServer::start().unwrap();
    let sock2 = dst2.socket().display().to_string();
    let o = e.run(&["restore", "--until", "latest", "--target-socket", &sock2]);
    assert!(o.status.success(), "{}", text(&o));
    let have: std::collections::BTreeSet<i64> = dst2
        .sql("SELECT id FROM app.events")
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let horizon = t2 - chrono::Duration::seconds(1 + 5);
    let must: Vec<i64> = log
        .iter()
        .filter(|(_, t)| *t < horizon)
        .map(|(k, _)| *k)
        .collect();
    assert!(
        must.len() > committed_at_t1,
        "{} {}",
        must.len(),
        committed_at_t1
    );
    let lost: Vec<i64> = must.iter().filter(|k| !have.contains(k)).copied().collect();
    assert!(lost.is_empty(), "lost transactions {lost:?}: {}", text(&o));
    // Nothing that was not committed appears.
    let committed: std::collections::BTreeSet<i64> = log.iter().map(|(k, _)| *k).collect();
    let last = *committed.iter().next_back().unwrap();
    assert!(have.iter().all(|k| *k <= last + 1), "{have:?}");
}

/// `n` autocommitted non-idempotent transactions.
fn bump(s: &TestServer, from: i64, n: i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = mysql_async::Conn::new(s.opts()).await.unwrap();
        for k in from..from + n {
            c.exec_drop(
                "UPDATE app.accounts SET balance = balance + ? WHERE id = ?",
                (k, k % 10),
            )
            .await
            .unwrap();
            c.exec_drop(
                "INSERT INTO app.events (id, v) VALUES (?, ?)",
                (k, format!("event {k}")),
            )
            .await
            .unwrap();
        }
    });
}

#[test]
fn killed_replay_continues_without_applying_twice() {
    if !require() {
        return;
    }
    let src = TestServer::start_with(ServerOptions::binlog_capture(1)).unwrap();
    schema(&src);
    let e = Env::new();
    e.config(&src, &[], "[binlog]\nserver_id = 4244\n");
    e.snapshot();
    bump(&src, 1, 300);
    let final_sums = checksums(&src);
    e.ok(&["binlog", "--once"]);

    // The replay hangs after 400 of the 600 transactions (test hook); the client applies
    // what it received; then the restore and its children are killed.
    let dst = TestServer::start().unwrap();
    let sock = dst.socket().display().to_string();
    let args = ["restore", "--until", "latest", "--target-socket", &sock];
    let mut c = e
        .cmd(&args)
        .env("MNBACKUP_TEST_REPLAY_PAUSE_AFTER", "400")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let applied = loop {
        let n: i64 = dst
            .sql("SELECT COUNT(*) FROM app.events")
            .map(|s| s.trim().parse().unwrap_or(0))
            .unwrap_or(0);
        if n >= 150 {
            break n;
        }
        assert!(c.try_wait().unwrap().is_none(), "the restore ended early");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no replay progress"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let killed = std::process::Command::new("kill")
        .args(["-s", "KILL", "--"])
        .arg(format!("-{}", c.id()))
        .status()
        .unwrap();
    assert!(killed.success(), "kill the restore's process group");
    c.wait().unwrap();
    assert!(applied < 300, "killed too late: {applied}");
    assert!(e.journal.exists(), "the journal must survive the kill");
    let progress = dst
        .sql("SELECT end_pos FROM mysql.mnbackup_replay")
        .unwrap();
    assert!(!progress.trim().is_empty(), "no progress recorded");
    assert_ne!(checksums(&dst), final_sums);

    // Again: continues after the recorded transaction, applies none twice.
    let o = e.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("binlog replay resumed after"),
        "{}",
        text(&o)
    );
    assert_eq!(checksums(&dst), final_sums, "{}", text(&o));
    assert!(
        !e.journal.exists(),
        "the journal is removed when the replay finished"
    );
    let left = dst
        .sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'mysql' AND table_name = 'mnbackup_replay'")
        .unwrap();
    assert_eq!(left.trim(), "0", "the progress table is dropped at the end");

    // The point-in-time drill: base loaded into scratch databases, binlog replayed there.
    let o = e.run(&["verify", "--drill", "--until", "latest"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("point in time: binlog replayed: 600 transactions"),
        "{}",
        text(&o)
    );
}

#[test]
fn daemon_follows_and_stores_the_open_segment_on_sigterm() {
    if !require() {
        return;
    }
    let src = TestServer::start_with(ServerOptions::binlog_capture(1)).unwrap();
    schema(&src);
    let e = Env::new();
    let metrics = e.dir.path().join("mnbackup.prom");
    e.config(
        &src,
        &[],
        "[binlog]\nsegment_seconds = 3600\nserver_id = 4246\n\
         [[schedule]]\nname = \"pitr\"\ncron = \"0 0 1 1 *\"\njob = \"binlog\"\n",
    );
    // The daemon section of the test configuration gets the metrics file.
    let cfg = std::fs::read_to_string(&e.cfg).unwrap().replace(
        "[daemon]\n",
        &format!(
            "[daemon]\nprometheus_textfile = \"{}\"\n",
            metrics.display()
        ),
    );
    std::fs::write(&e.cfg, cfg).unwrap();
    e.snapshot();
    let daemon = e
        .cmd(&["daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The follower is connected once the server lists its dump thread.
    let t0 = Instant::now();
    while !src.sql("SHOW PROCESSLIST").unwrap().contains("Binlog Dump") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the follower never connected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    bump(&src, 1, 50);
    let final_sums = checksums(&src);
    std::thread::sleep(Duration::from_secs(1));
    // Nothing is cut yet (the segment is an hour long).
    let o = e.ok(&["--json", "list", "--binlog"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["newest_event"].is_null(), "{v}");
    let o = term(daemon);
    assert!(o.status.success(), "daemon: {}", text(&o));
    let o = e.ok(&["--json", "list", "--binlog"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chains"].as_array().unwrap().len(), 1, "{v}");
    let dst = TestServer::start().unwrap();
    let sock = dst.socket().display().to_string();
    let o = e.run(&["restore", "--until", "latest", "--target-socket", &sock]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(checksums(&dst), final_sums, "{}", text(&o));
    // The metrics file has the binlog RPO metrics.
    let prom = std::fs::read_to_string(&metrics).unwrap_or_default();
    assert!(prom.contains("mnbackup_binlog_lag_alarm "), "{prom}");
    assert!(
        prom.contains("mnbackup_binlog_max_lag_seconds 300"),
        "{prom}"
    );
}
