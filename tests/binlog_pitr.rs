//! Point-in-time recovery through the `mnbackup` binary (issue 20): a snapshot, writes, the
//! checksums at T1, more writes, `binlog --once`; `restore --until T1` into an empty server gives
//! exactly the T1 checksums, `--until latest` (renamed) the final ones; a purged binlog is a gap
//! that `binlog --once` records, `list --binlog` shows and `restore --until` inside it refuses
//! with the recoverable ranges named.

mod restore_common;

use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mnbackup_fixtures::mariadb::{available, ServerOptions, TestServer};
use restore_common::{text, Env};

fn require() -> bool {
    if available() {
        return true;
    }
    assert!(
        std::env::var_os("MNBACKUP_REQUIRE_MARIADB").is_none(),
        "MNBACKUP_REQUIRE_MARIADB is set but MariaDB is not installed"
    );
    eprintln!("MariaDB server not installed; skipping");
    false
}

fn checksum(s: &TestServer, t: &str) -> String {
    s.sql(&format!("CHECKSUM TABLE {t}")).unwrap()
}

fn write(s: &TestServer, from: u32, n: u32) {
    let mut sql = String::new();
    for i in from..from + n {
        sql.push_str(&format!(
            "INSERT INTO app.t (id, v) VALUES ({i}, 'row {i}'); UPDATE app.t SET v = CONCAT(v, '+') WHERE id = {};",
            i / 2
        ));
    }
    s.sql(&sql).unwrap();
}

/// `restore --until UNTIL --target-socket SOCK` with `extra` options.
fn restore_until(e: &Env, until: &str, sock: &str, extra: &[&str]) -> Output {
    let mut args = vec!["restore", "--until", until, "--target-socket", sock];
    args.extend_from_slice(extra);
    e.run(&args)
}

/// Wait for the next whole second, so T1 separates the writes before and after it.
fn next_second() -> DateTime<Utc> {
    let now = Utc::now();
    let ms = 1000 - i64::from(now.timestamp_subsec_millis()) + 50;
    std::thread::sleep(Duration::from_millis(ms as u64));
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

#[test]
fn restore_until_a_time_and_a_refused_gap() {
    if !require() {
        return;
    }
    let src = TestServer::start_with(ServerOptions::binlog_capture(1)).unwrap();
    src.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id int PRIMARY KEY, v varchar(200)) ENGINE=InnoDB;",
    )
    .unwrap();
    write(&src, 1, 20);
    let e = Env::new();
    e.config(
        &src,
        &[],
        "[binlog]\nsegment_seconds = 1\nserver_id = 4242\n",
    );
    // `check` runs the binlog requirement check: this server passes it.
    let o = e.ok(&["check"]);
    assert!(text(&o).contains("binlog log_bin"), "{}", text(&o));
    e.snapshot();
    write(&src, 100, 30);
    let t1 = next_second();
    let at_t1 = checksum(&src, "app.t");
    std::thread::sleep(Duration::from_millis(1100));
    write(&src, 200, 30);
    let final_sum = checksum(&src, "app.t");
    let o = e.ok(&["binlog", "--once"]);
    assert!(text(&o).contains("shipped"), "{}", text(&o));

    // The chain is listed with one recoverable range reaching past T1.
    let o = e.ok(&["--json", "list", "--binlog"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chains"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["recoverable"].as_array().unwrap().len(), 1, "{v}");

    // The plan names base, segments and the stop.
    let dst = TestServer::start().unwrap();
    let sock = dst.socket().display().to_string();
    let until = t1.format("%Y-%m-%d %H:%M:%S").to_string();
    let o = restore_until(&e, &until, &sock, &["--plan"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan = text(&o);
    assert!(plan.contains("point in time: base snapshot"), "{plan}");
    assert!(plan.contains("gap check"), "{plan}");

    // Restore to T1: exactly the rows of T1.
    let o = restore_until(&e, &until, &sock, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("binlog replayed"), "{}", text(&o));
    assert_eq!(
        checksum(&dst, "app.t"),
        at_t1.clone(),
        "restore --until {until}: {}",
        text(&o)
    );
    assert_ne!(at_t1, final_sum);

    // Latest, renamed beside it: the final rows.
    let o = restore_until(&e, "latest", &sock, &["--rename-db", "app=app2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        checksum(&dst, "app2.t").replace("app2.t", "app.t"),
        final_sum,
        "{}",
        text(&o)
    );

    // A purged binlog: writes the follower never shipped, then the server purges them.
    write(&src, 300, 10);
    let t_gap = next_second();
    write(&src, 400, 10);
    let oldest = src.sql("SHOW BINARY LOGS").unwrap();
    let oldest = oldest.split('\t').next().unwrap().to_string();
    src.sql("FLUSH BINARY LOGS; FLUSH BINARY LOGS;").unwrap();
    let newest = src.sql("SHOW MASTER STATUS").unwrap();
    let newest = newest.split('\t').next().unwrap().to_string();
    // The server keeps a file a dump thread still reads or crash recovery still needs; the
    // dump threads of the runs above end shortly after they disconnect.
    for _ in 0..30 {
        src.sql(&format!("PURGE BINARY LOGS TO '{newest}'"))
            .unwrap();
        if !src.sql("SHOW BINARY LOGS").unwrap().contains(&oldest) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!src.sql("SHOW BINARY LOGS").unwrap().contains(&oldest));
    let o = e.run(&["binlog", "--once"]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    assert!(text(&o).contains("gap"), "{}", text(&o));
    let o = e.ok(&["list", "--binlog"]);
    assert!(text(&o).contains("gap detected"), "{}", text(&o));
    let o = e.run(&["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("binlog chain is broken"), "{}", text(&o));
    // A new snapshot starts a new chain, shipped again.
    std::thread::sleep(Duration::from_millis(1100));
    e.snapshot();
    write(&src, 500, 10);
    e.ok(&["binlog", "--once"]);
    let o = e.ok(&["--json", "list", "--binlog"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chains"].as_array().unwrap().len(), 2, "{v}");
    // Inside the gap: refused (exit 2), the recoverable ranges named.
    let until = t_gap.format("%Y-%m-%d %H:%M:%S").to_string();
    let o = restore_until(&e, &until, &sock, &["--plan"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("recoverable ranges"), "{}", text(&o));
}
