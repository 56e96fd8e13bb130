//! Failures give errors that say what happened and what to do: wrong password, unreachable
//! server, server killed mid-dump, missing privilege. (The snapshot command abandons the snapshot
//! on any error.)

mod mariadb_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mariadb_common::*;
use mnbackup::engines::mariadb::{self, MariadbConfig};
use mnbackup_fixtures::mariadb::{kill_pid, TestServer};

fn tcp_cfg(s: &TestServer, user: &str, password: &str) -> MariadbConfig {
    MariadbConfig {
        host: Some("127.0.0.1".into()),
        port: Some(s.port()),
        user: Some(user.into()),
        password: Some(password.into()),
        workers: Some(2),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unreachable_and_missing_privilege() {
    if skip() {
        return;
    }
    let s = TestServer::start().unwrap();
    s.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id int PRIMARY KEY) ENGINE=InnoDB; \
         CREATE TABLE app.m (id int PRIMARY KEY) ENGINE=MyISAM; \
         CREATE USER 'backup'@'127.0.0.1' IDENTIFIED BY 'right'; \
         GRANT SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR ON *.* TO 'backup'@'127.0.0.1'; \
         GRANT SELECT ON app.* TO 'backup'@'127.0.0.1'; \
         CREATE USER 'limited'@'127.0.0.1' IDENTIFIED BY 'pw'; GRANT SELECT ON app.* TO 'limited'@'127.0.0.1';",
    )
    .unwrap();

    // Wrong password.
    let e = mariadb::backup(&tcp_cfg(&s, "backup", "wrong"), MemSink::new())
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("wrong password: {msg}");
    assert!(
        msg.contains(&format!(
            "MariaDB at 127.0.0.1:{} refused user 'backup'",
            s.port()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("access denied") && msg.contains("Check [mariadb] user/password"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong"),
        "the password must not appear: {msg}"
    );

    // The right password works; without SELECT on mysql.user the accounts and grants are gaps
    // naming the GRANT that closes them.
    let sink = MemSink::new();
    mariadb::backup(&tcp_cfg(&s, "backup", "right"), sink.clone())
        .await
        .unwrap();
    let gaps = sink.gaps.lock().unwrap().clone();
    let kinds: Vec<&str> = gaps.iter().map(|g| g.kind.as_str()).collect();
    assert_eq!(kinds, ["accounts", "grants"], "{gaps:?}");
    assert_eq!(
        gaps[0].fix.as_deref(),
        Some("GRANT SELECT ON mysql.* TO 'backup'@'127.0.0.1';")
    );
    // An operator who deliberately skips the accounts says so: then they are no gap.
    let mut cfg = tcp_cfg(&s, "backup", "right");
    cfg.require = Some(vec![
        "consistency".into(),
        "routines".into(),
        "events".into(),
    ]);
    let sink = MemSink::new();
    mariadb::backup(&cfg, sink.clone()).await.unwrap();
    assert!(sink.gaps.lock().unwrap().is_empty());
    assert!(sink.info()["warnings"]
        .to_string()
        .contains("not required by [mariadb] require"));
    cfg.require = Some(vec!["acounts".into()]);
    let e = format!(
        "{:#}",
        mariadb::backup(&cfg, MemSink::new()).await.unwrap_err()
    );
    assert!(e.contains("[mariadb] require: \"acounts\""), "{e}");

    // Unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = tcp_cfg(&s, "backup", "right");
    cfg.port = Some(port);
    let msg = format!(
        "{:#}",
        mariadb::backup(&cfg, MemSink::new()).await.unwrap_err()
    );
    eprintln!("unreachable: {msg}");
    assert!(
        msg.contains(&format!("cannot reach MariaDB at 127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(msg.contains("Is the server running?"), "{msg}");
    let cfg = MariadbConfig {
        socket: Some("/nonexistent/mysqld.sock".into()),
        ..Default::default()
    };
    let msg = format!(
        "{:#}",
        mariadb::backup(&cfg, MemSink::new()).await.unwrap_err()
    );
    assert!(
        msg.contains("cannot reach MariaDB at socket /nonexistent/mysqld.sock"),
        "{msg}"
    );

    // Missing privilege: no RELOAD (falls back to one snapshot) but no LOCK TABLES either, which
    // the MyISAM table needs.
    let msg = format!(
        "{:#}",
        mariadb::backup(&tcp_cfg(&s, "limited", "pw"), MemSink::new())
            .await
            .unwrap_err()
    );
    eprintln!("missing privilege: {msg}");
    assert!(msg.contains("the backup user lacks a privilege"), "{msg}");
    assert!(msg.contains("LOCK TABLES"), "{msg}");
    assert!(msg.contains("GRANT SELECT, SHOW VIEW"), "{msg}");

    // Without the MyISAM table, no RELOAD means one connection and one snapshot, with a warning.
    s.sql("DROP TABLE app.m").unwrap();
    let sink = MemSink::new();
    mariadb::backup(&tcp_cfg(&s, "limited", "pw"), sink.clone())
        .await
        .unwrap();
    let info = sink.info();
    assert_eq!(info["consistency"]["method"], "single_snapshot");
    assert!(info["warnings"].to_string().contains("no RELOAD privilege"));
    let gaps = sink.gaps.lock().unwrap().clone();
    let c = gaps.iter().find(|g| g.kind == "consistency").expect("gap");
    assert_eq!(
        c.fix.as_deref(),
        Some("GRANT RELOAD ON *.* TO 'limited'@'127.0.0.1';")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_dump() {
    if skip() {
        return;
    }
    let mut s = TestServer::start().unwrap();
    s.sql(
        "SET SESSION max_recursive_iterations = 1000000; CREATE DATABASE big; \
         CREATE TABLE big.t (id int PRIMARY KEY, pad varchar(200)) ENGINE=InnoDB; \
         INSERT INTO big.t WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100000) \
           SELECT n, REPEAT(MD5(n), 5) FROM r;",
    )
    .unwrap();
    let sink = MemSink::new();
    let pid = s.pid().unwrap();
    let fired = Arc::new(AtomicBool::new(false));
    {
        let fired = fired.clone();
        *sink.hook.lock().unwrap() = Some(Box::new(move |name: &str| {
            if name.contains("2-data") && !fired.swap(true, Ordering::SeqCst) {
                kill_pid(pid);
            }
        }));
    }
    let mut cfg = cfg_socket(&s);
    cfg.split_rows = Some(5000);
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        mariadb::backup(&cfg, sink.clone()),
    )
    .await
    .expect("the dump must fail, not hang");
    let msg = format!("{:#}", r.unwrap_err());
    eprintln!("killed: {msg}");
    assert!(fired.load(Ordering::SeqCst));
    assert!(
        msg.contains("lost the connection to MariaDB") || msg.contains("closed the connection"),
        "{msg}"
    );
    assert!(msg.contains("retry"), "{msg}");
    assert!(
        sink.info().is_null(),
        "no source info is recorded on failure"
    );
    s.kill();
}
