//! Binlog capture and replay against real throwaway servers (issue 20 groundwork): capture
//! while writing, segments `mariadb-binlog` reads, replay to a time gives exactly the rows of
//! that time, database filter and rename, resume continuity and the typed gaps.

mod mariadb_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mariadb_common::skip;
use mnbackup::engines::binlog::{
    capture, check_requirements, current_position, replay, BinlogPos, CaptureConfig, CaptureError,
    CaptureMode, DirSink, Gap, Level, ReplayError, ReplayOptions, RequirementInputs, SegmentInfo,
    StopAt,
};
use mnbackup_fixtures::mariadb::{ServerOptions, TestServer};
use mysql_async::prelude::*;

const TABLES: &[&str] = &["app.t", "other.o"];

fn checksums(s: &TestServer) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| s.sql(&format!("CHECKSUM TABLE {t}")).unwrap())
        .collect()
}

fn client_args(s: &TestServer) -> Vec<String> {
    vec![
        format!("--socket={}", s.socket().display()),
        "-uroot".into(),
    ]
}

fn cfg(segment_seconds: u64) -> CaptureConfig {
    CaptureConfig {
        server_id: 4242,
        segment_seconds,
        segment_bytes: 1 << 20,
        heartbeat_seconds: 1,
    }
}

/// Every segment is a binlog file `mariadb-binlog` reads, checksums verified.
fn assert_readable(segs: &[(SegmentInfo, PathBuf)]) {
    for (_, p) in segs {
        let out = Command::new("mariadb-binlog")
            .arg("--no-defaults")
            .arg("--verify-binlog-checksum")
            .arg(p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-binlog {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn write_rows(c: &mut mysql_async::Conn, from: u32, n: u32) {
    for i in from..from + n {
        c.exec_drop(
            "INSERT INTO app.t (id, v) VALUES (?, ?)",
            (i, format!("row {i}")),
        )
        .await
        .unwrap();
        c.exec_drop("INSERT INTO other.o (id, n) VALUES (?, ?)", (i, i * 2))
            .await
            .unwrap();
        if i % 5 == 0 {
            c.query_drop(format!(
                "UPDATE app.t SET v = CONCAT(v, '+') WHERE id < {i}"
            ))
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_to_a_time_gives_exactly_the_rows_of_that_time() {
    if skip() {
        return;
    }
    let src = TestServer::start_with(ServerOptions::binlog_capture(1)).unwrap();
    let mut c = mysql_async::Conn::new(src.opts()).await.unwrap();
    let from = current_position(&mut c).await.unwrap();
    src.sql(
        "CREATE DATABASE app; CREATE DATABASE other; \
         CREATE TABLE app.t (id int PRIMARY KEY, v varchar(200)) ENGINE=InnoDB; \
         CREATE TABLE other.o (id int PRIMARY KEY, n bigint) ENGINE=InnoDB;",
    )
    .unwrap();
    let after_schema = current_position(&mut c).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let follower = {
        let (opts, from, dir) = (src.opts(), from.clone(), dir.path().to_path_buf());
        tokio::spawn(async move {
            let mut sink = DirSink::new(dir).unwrap();
            let out = capture(
                opts,
                &cfg(1),
                &from,
                CaptureMode::Follow(stop_rx),
                &mut sink,
            )
            .await;
            (out, sink)
        })
    };

    write_rows(&mut c, 0, 60).await;
    // T1: a whole second strictly after every write so far; nothing is written until after it.
    let now = Utc::now();
    let t1 = DateTime::<Utc>::from_timestamp(now.timestamp() + 1, 0).unwrap();
    tokio::time::sleep((t1 - now).to_std().unwrap() + Duration::from_millis(100)).await;
    let at_t1 = checksums(&src);
    write_rows(&mut c, 1000, 60).await;
    c.query_drop("DELETE FROM app.t WHERE id < 30")
        .await
        .unwrap();
    let end = current_position(&mut c).await.unwrap();
    let at_end = checksums(&src);
    assert_ne!(at_t1, at_end);

    // Let the follower catch up, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).unwrap();
    let (out, _sink) = follower.await.unwrap();
    let out = out.unwrap();
    let resume = out.resume.clone().unwrap();
    assert_eq!(
        (resume.file.as_str(), resume.pos),
        (end.file.as_str(), end.pos)
    );
    assert_eq!(resume.gtid_pos, end.gtid_pos);
    let segs = DirSink::list(dir.path()).unwrap();
    assert_eq!(segs.len(), out.segments.len());
    assert!(segs.len() >= 3, "1 s segments over ~6 s: {}", segs.len());
    for w in segs.windows(2) {
        assert_eq!(w[0].0.end_pos, w[1].0.first_pos, "segments are contiguous");
    }
    assert_readable(&segs);

    // Replay up to T1 into an empty server: exactly the rows of T1.
    let dst = TestServer::start().unwrap();
    let opts = ReplayOptions {
        binlog_tool: None,
        client: None,
        client_args: client_args(&dst),
        password: None,
        start: Some(from.clone()),
        stop: StopAt::DateTime(t1),
        databases: None,
        rename: Vec::new(),
        skip_target_binlog: false,
        progress: None,
    };
    let rep = replay(&segs, &opts).unwrap();
    assert!(rep.stop_reached);
    let last = rep.last_applied.clone().unwrap();
    assert!(i64::from(last.timestamp) < t1.timestamp());
    assert_eq!(checksums(&dst), at_t1);

    // A damaged segment (one flipped byte in the last one) is refused before anything of it
    // reaches the server.
    let bad_dir = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    for (i, (info, p)) in segs.iter().enumerate() {
        let mut bytes = std::fs::read(p).unwrap();
        if i + 1 == segs.len() {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
        }
        let q = bad_dir.path().join(p.file_name().unwrap());
        std::fs::write(&q, bytes).unwrap();
        bad.push((info.clone(), q));
    }
    let err = replay(
        &bad,
        &ReplayOptions {
            stop: StopAt::End,
            ..opts.clone()
        },
    )
    .unwrap_err();
    // Usually a CRC32 mismatch; a flip in an event's length field is a malformed file.
    assert!(matches!(err, ReplayError::Segment { .. }), "{err}");
    assert_eq!(checksums(&dst), at_t1);

    // Only `app`, renamed to `app2`, from after the schema to the end: `app2` is the final
    // `app`, and `other` keeps its T1 rows.
    dst.sql("CREATE DATABASE app2; CREATE TABLE app2.t (id int PRIMARY KEY, v varchar(200)) ENGINE=InnoDB;")
        .unwrap();
    let opts = ReplayOptions {
        start: Some(after_schema),
        stop: StopAt::End,
        databases: Some(vec!["app".into()]),
        rename: vec![("app".into(), "app2".into())],
        ..opts
    };
    let rep = replay(&segs, &opts).unwrap();
    assert!(rep.filtered_out > 0 && rep.transactions > 0, "{rep:?}");
    assert_eq!(rep.last_applied.unwrap().end_pos, end.pos);
    let app2 = dst.sql("CHECKSUM TABLE app2.t").unwrap();
    assert_eq!(app2.replace("app2.t", "app.t"), at_end[0]);
    assert_eq!(checksums(&dst), at_t1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_resumes_contiguously_and_gaps_are_typed() {
    if skip() {
        return;
    }
    let mut src = TestServer::start_with(ServerOptions::binlog_capture(7)).unwrap();
    let mut c = mysql_async::Conn::new(src.opts()).await.unwrap();
    let findings = check_requirements(
        &mut c,
        &RequirementInputs {
            capture_server_id: 4242,
            min_retention_seconds: 86_400,
        },
    )
    .await
    .unwrap();
    assert!(
        findings.iter().all(|f| f.level == Level::Ok),
        "{findings:#?}"
    );

    let start = current_position(&mut c).await.unwrap();
    src.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id int PRIMARY KEY, v varchar(200)); \
             INSERT INTO app.t VALUES (1, 'a'), (2, 'b');",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(dir.path()).unwrap();
    let first = capture(src.opts(), &cfg(60), &start, CaptureMode::Once, &mut sink)
        .await
        .unwrap();
    let r1 = first.resume.clone().unwrap();
    assert_eq!(first.segments.len(), 1);
    assert_eq!(r1.gtid_pos.len(), 1);
    src.sql("INSERT INTO app.t VALUES (3, 'c')").unwrap();
    let second = capture(src.opts(), &cfg(60), &r1, CaptureMode::Once, &mut sink)
        .await
        .unwrap();
    assert_eq!(second.segments[0].first_pos, r1.pos);
    assert_eq!(second.segments[0].transactions, 1);
    let r2 = second.resume.clone().unwrap();

    // A clean restart: a new binlog, recorded as a restart that does not break the chain.
    drop(c);
    src.restart().unwrap();
    src.sql("INSERT INTO app.t VALUES (4, 'd')").unwrap();
    let third = capture(src.opts(), &cfg(60), &r2, CaptureMode::Once, &mut sink)
        .await
        .unwrap();
    assert!(
        matches!(&third.gaps[..], [Gap::Restart { clean_shutdown: true, new_file, .. }] if *new_file != r2.file),
        "{:?}",
        third.gaps
    );
    assert!(!third.gaps[0].breaks_chain());
    let r3 = third.resume.clone().unwrap();
    assert_ne!(r3.file, r2.file);
    assert_readable(&DirSink::list(dir.path()).unwrap());

    // Purged binlogs the follower had not stored: a purge gap naming the oldest file left.
    src.sql("FLUSH BINARY LOGS; FLUSH BINARY LOGS;").unwrap();
    let newest = src.sql("SHOW MASTER STATUS").unwrap();
    let newest = newest.split('\t').next().unwrap().to_string();
    // The server keeps a file a dump thread still reads or crash recovery still needs (with a
    // warning); the dump threads of the runs above end shortly after they disconnect.
    for _ in 0..30 {
        src.sql(&format!("PURGE BINARY LOGS TO '{newest}'"))
            .unwrap();
        if !src.sql("SHOW BINARY LOGS").unwrap().contains(&r3.file) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!src.sql("SHOW BINARY LOGS").unwrap().contains(&r3.file));
    let err = capture(src.opts(), &cfg(60), &r3, CaptureMode::Once, &mut sink)
        .await
        .unwrap_err();
    match err {
        CaptureError::Gap(g @ Gap::Purged { .. }) => {
            assert!(g.breaks_chain());
            assert!(g.to_string().contains(&newest), "{g}");
        }
        e => panic!("expected a purge gap, got {e:?}"),
    }

    // RESET MASTER: the position (and GTID) the follower has are gone.
    src.sql("RESET MASTER").unwrap();
    let far = BinlogPos {
        file: newest.clone(),
        pos: 4,
        gtid_pos: r3.gtid_pos.clone(),
    };
    for from in [
        far,
        BinlogPos {
            file: "binlog.000001".into(),
            ..r3.clone()
        },
    ] {
        let err = capture(src.opts(), &cfg(60), &from, CaptureMode::Once, &mut sink)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CaptureError::Gap(Gap::Reset { .. })),
            "{from:?}: {err:?}"
        );
    }
}
