//! `mnbackup grants --server-version V` prints a script that server accepts: BINLOG MONITOR only
//! from MariaDB 10.5.2, REPLICATION CLIENT before; no `IF NOT EXISTS` on 5.5.

use std::process::Command;

fn grants(version: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mnbackup"))
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(["grants", "--user", "bk", "--server-version", version])
        .env_remove("MNBACKUP_CONFIG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn version_correct_scripts() {
    let new = grants("10.11.6-MariaDB");
    assert!(
        new.contains("CREATE USER IF NOT EXISTS 'bk'@'localhost'"),
        "{new}"
    );
    assert!(
        new.contains(
            "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, PROCESS, BINLOG MONITOR ON *.* TO 'bk'@'localhost';"
        ),
        "{new}"
    );
    let old = grants("10.3.39-MariaDB");
    assert!(
        old.contains("REPLICATION CLIENT") && !old.contains("BINLOG MONITOR"),
        "{old}"
    );
    let ancient = grants("5.5.68-MariaDB");
    assert!(
        ancient.contains("CREATE USER 'bk'@'localhost' IDENTIFIED BY")
            && !ancient.contains("IF NOT EXISTS"),
        "{ancient}"
    );
}
