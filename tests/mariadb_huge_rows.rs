//! A row bigger than the target's `max_allowed_packet`: the snapshot records the largest
//! statement per table, and the restore's preflight compares it with the target's
//! `max_allowed_packet`: it raises the global value when allowed (saying so), or fails the plan
//! naming the statement that fixes it. (A 100 MiB row, target started with 16M; the peak RSS
//! of the snapshot and the restore of such a row is measured by `bench --huge-row-mb 100`.)

mod restore_common;

use mnbackup_fixtures::mariadb::{ServerOptions, TestServer};
use restore_common::*;

fn server(packet: &str) -> TestServer {
    TestServer::start_with(ServerOptions {
        extra_args: vec![format!("--max-allowed-packet={packet}")],
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn huge_row_into_a_16m_server() {
    if skip() {
        return;
    }
    let src = server("256M");
    src.sql(
        "CREATE DATABASE big; CREATE TABLE big.blobs (id int PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB; \
         INSERT INTO big.blobs VALUES (1, REPEAT(CONCAT(CHAR(0), 'mnbackup', CHAR(255)), 10485760)), (2, 'small');",
    )
    .unwrap();
    let env = Env::new();
    env.config(&src, &[], "");
    let id = env.snapshot();
    let m = env.manifest(&id);
    let ms = m["sources"]["mariadb"]["max_statement"]["big.blobs"]
        .as_u64()
        .unwrap();
    // 100 MiB of bytes as hex: a statement of over 200 MiB.
    assert!(ms > 200 << 20, "{ms}");

    // A target at 16M, restored by root: the plan says it would raise the value; the restore
    // raises it and the row comes back byte for byte.
    let dst = server("16M");
    let sock = dst.socket().to_str().unwrap().to_string();
    let o = env.run(&["restore", &id, "--plan", "--target-socket", &sock]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.contains(
            "[WARN] max_allowed_packet: would raise the target's max_allowed_packet from 16777216"
        ),
        "{out}"
    );
    assert_eq!(
        dst.sql("SELECT @@GLOBAL.max_allowed_packet")
            .unwrap()
            .trim(),
        "16777216",
        "--plan changes nothing"
    );
    let o = env.run(&["restore", &id, "--target-socket", &sock]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let q = "SELECT id, LENGTH(b), MD5(b) FROM big.blobs ORDER BY id";
    assert_eq!(src.sql(q).unwrap(), dst.sql(q).unwrap());

    // A target whose restoring account may not raise it: the plan fails with the statement.
    let dst2 = server("16M");
    dst2.sql(
        "CREATE USER 'loader'@'localhost' IDENTIFIED BY 'pw'; GRANT SELECT, INSERT, UPDATE, \
         DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, \
         TRIGGER, EVENT, REFERENCES, LOCK TABLES ON *.* TO 'loader'@'localhost';",
    )
    .unwrap();
    let sock2 = dst2.socket().to_str().unwrap().to_string();
    let o = env
        .cmd(&[
            "restore",
            &id,
            "--plan",
            "--no-files",
            "--target-socket",
            &sock2,
            "--target-user",
            "loader",
            "--target-password-env",
            "MNB_LOADER_PW",
        ])
        .env("MNB_LOADER_PW", "pw")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(out.contains("[FAIL] max_allowed_packet"), "{out}");
    assert!(out.contains("SET GLOBAL max_allowed_packet = "), "{out}");
}
