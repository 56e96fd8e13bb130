//! One consistent point under load: a writer moves money between InnoDB accounts, bumps an InnoDB
//! counter and appends to a MyISAM log in the same transaction, while the dump runs. The loaded
//! copy must keep the total, and the MyISAM log must be exactly where the counter says (or one
//! row ahead: the row of the transaction whose commit the block held back, since MyISAM writes
//! apply at once). Reading the MyISAM table outside the block, or the InnoDB tables from
//! snapshots taken at different times, breaks one of these.

mod mariadb_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mariadb_common::*;
use mnbackup::engines::mariadb;
use mnbackup_fixtures::mariadb::{ServerOptions, TestServer};
use mysql_async::prelude::*;

const ACCOUNTS: u64 = 200;
const START_BALANCE: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_copy_is_one_consistent_point_under_load() {
    if skip() {
        return;
    }
    let src = TestServer::start_with(ServerOptions {
        binlog: true,
        ..Default::default()
    })
    .unwrap();
    src.sql(&format!(
        "SET SESSION max_recursive_iterations = 1000000; \
         CREATE DATABASE bank; \
         CREATE TABLE bank.accounts (id int PRIMARY KEY, balance bigint NOT NULL) ENGINE=InnoDB; \
         INSERT INTO bank.accounts WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ACCOUNTS}) \
           SELECT n, {START_BALANCE} FROM s; \
         CREATE TABLE bank.counter (id int PRIMARY KEY, n bigint NOT NULL) ENGINE=InnoDB; \
         INSERT INTO bank.counter VALUES (1, 0); \
         CREATE TABLE bank.log (id bigint AUTO_INCREMENT PRIMARY KEY, n bigint NOT NULL, note varchar(100)) ENGINE=MyISAM; \
         CREATE TABLE bank.filler (id int PRIMARY KEY, pad varchar(200)) ENGINE=InnoDB; \
         INSERT INTO bank.filler WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 60000) \
           SELECT n, REPEAT(MD5(n), 6) FROM s;"
    ))
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let opts = src.opts();
        let stop = stop.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            let mut k: u64 = 0;
            let mut x: u64 = 12345;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let a = 1 + (x >> 33) % ACCOUNTS;
                let b = 1 + (x >> 13) % ACCOUNTS;
                let amt = 1 + (x >> 50) % 50;
                c.query_drop(format!(
                    "START TRANSACTION; \
                     UPDATE bank.accounts SET balance = balance - {amt} WHERE id = {a}; \
                     UPDATE bank.accounts SET balance = balance + {amt} WHERE id = {b}; \
                     UPDATE bank.counter SET n = n + 1 WHERE id = 1; \
                     INSERT INTO bank.log (n, note) VALUES ({k}, 'move {amt} from {a} to {b}'); \
                     COMMIT"
                ))
                .await
                .unwrap();
                done.store(k, Ordering::SeqCst);
            }
            k
        })
    };
    while done.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let dst = TestServer::start().unwrap();
    let mut cfg = cfg_socket(&src);
    cfg.split_rows = Some(5000);
    cfg.workers = Some(3);
    for round in 0..3 {
        let before = done.load(Ordering::SeqCst);
        let sink = MemSink::new();
        let summary = mariadb::backup(&cfg, sink.clone()).await.unwrap();
        let after = done.load(Ordering::SeqCst);
        let info = sink.info();
        eprintln!(
            "round {round}: writer at {before}..{after} during the dump; block {} ms, MyISAM lock {} ms; {summary:?}",
            info["consistency"]["block_ms"], info["consistency"]["nontransactional_lock_ms"]
        );
        assert!(info["binlog"]["file"].is_string(), "{}", info["binlog"]);
        assert!(info["binlog"]["gtid_binlog_pos"].is_string());
        dst.sql("DROP DATABASE IF EXISTS bank").unwrap();
        load_all(&dst, &sink.items());
        check_fingerprints(&info, &dst).await;
        let out = dst
            .sql("SELECT SUM(balance), (SELECT n FROM bank.counter), (SELECT COUNT(*) FROM bank.log), \
                  (SELECT IFNULL(MAX(n), 0) FROM bank.log) FROM bank.accounts")
            .unwrap();
        let v: Vec<u64> = out.trim().split('\t').map(|x| x.parse().unwrap()).collect();
        let (sum, n, logs, max_log) = (v[0], v[1], v[2], v[3]);
        eprintln!("round {round}: sum {sum}, counter {n}, MyISAM rows {logs} (max n {max_log})");
        assert_eq!(sum, ACCOUNTS * START_BALANCE, "money appeared or vanished");
        assert!(
            n >= before && n <= after,
            "the point {n} is not inside the dump ({before}..{after})"
        );
        assert!(
            logs == n || logs == n + 1,
            "the MyISAM log ({logs} rows) is not at the InnoDB point (counter {n})"
        );
        assert_eq!(max_log, logs, "the MyISAM log has a gap");
        assert!(info["consistency"]["block_ms"].as_u64().unwrap() < 5000);
    }
    stop.store(true, Ordering::SeqCst);
    let total = writer.await.unwrap();
    assert!(total > 200);
}
