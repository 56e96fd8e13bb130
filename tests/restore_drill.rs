//! The disaster drill, end to end through the binary: Server 1 (instance A, the ZStack-like
//! fixture plus a files tree) is backed up twice with churn in between, then destroyed; an empty
//! instance B is the new Server 1; `restore latest` rebuilds it, and every table's rows, every
//! file and the application login come back. Then the first snapshot is restored beside the live
//! databases with `--rename-db` and `--disable-vm-ha`.

mod restore_common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use mnbackup_fixtures::mariadb::TestServer;
use mnbackup_fixtures::zstack_db::ZSTACK_PASSWORD;
use mysql_async::prelude::*;
use restore_common::common;
use restore_common::*;

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/zstack")).unwrap();
    fs::create_dir_all(root.join("var/lib/zstack/license")).unwrap();
    fs::write(
        root.join("etc/zstack/zstack.properties"),
        b"DB.url=jdbc:mysql://localhost:3306\nDB.user=zstack\n",
    )
    .unwrap();
    fs::set_permissions(
        root.join("etc/zstack/zstack.properties"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("var/lib/zstack/license/license.bin"), &big).unwrap();
    fs::write(
        root.join("etc/zstack/start.sh"),
        b"#!/bin/sh\nexec zstack-ctl start\n",
    )
    .unwrap();
    fs::set_permissions(
        root.join("etc/zstack/start.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(
        root.join("var/lib/zstack/license"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    symlink(
        "../etc/zstack/zstack.properties",
        root.join("var/zstack.properties"),
    )
    .unwrap();
    for (p, t) in [
        ("etc/zstack/zstack.properties", 1_700_000_000),
        ("etc/zstack/start.sh", 1_600_000_000),
        ("var/lib/zstack/license/license.bin", 1_650_000_000),
    ] {
        let ft = filetime::FileTime::from_unix_time(t, 123_456_789);
        filetime::set_file_times(root.join(p), ft, ft).unwrap();
    }
}

#[test]
#[allow(clippy::too_many_lines)] // one end-to-end scenario, read top to bottom
fn disaster_drill_end_to_end() {
    if skip() {
        return;
    }
    let env = Env::new();
    let mut a = TestServer::start().unwrap();
    generate(&a, 0.01, 7);
    // A VM HA setting, as a real ZStack has it (for --disable-vm-ha below).
    a.sql(
        "INSERT INTO zstack.GlobalConfigVO (name, description, category, defaultValue, value) \
           VALUES ('enable', 'VM HA', 'ha', 'true', 'true')",
    )
    .unwrap();
    let node = env.dir.path().join("node");
    make_tree(&node);
    env.config(&a, &[&node], "");

    let s1 = env.snapshot();
    churn(&a, 7);
    let s2 = env.snapshot();
    let m1 = env.manifest(&s1);
    let m2 = env.manifest(&s2);
    assert_ne!(
        m1["sources"]["mariadb"]["fingerprints"], m2["sources"]["mariadb"]["fingerprints"],
        "the churn changed nothing?"
    );

    // What Server 1 looked like right before it died.
    let expected_rows = all_rows(&a, &DBS);
    let expected_files = common::capture(&node);
    assert!(expected_rows.len() > 20, "{:?}", expected_rows.keys());

    // Server 1 dies: MariaDB and its datadir, and the files.
    a.stop().unwrap();
    fs::remove_dir_all(a.dir().join("data")).unwrap();
    fs::remove_dir_all(&node).unwrap();
    drop(a);

    // The new Server 1: an empty MariaDB.
    let b = TestServer::start().unwrap();
    env.config(&b, &[&node], "");
    let t0 = Instant::now();
    let out = env.run(&[
        "--json",
        "restore",
        "latest",
        "--files-root",
        "/",
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    let wall = t0.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "restore of {} tables ({} rows) took {:.2}s wall; steps: {}",
        report["fingerprints"].as_array().unwrap().len(),
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "mariadb data")
            .unwrap()["rows"],
        wall.as_secs_f64(),
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{}={}ms", s["step"].as_str().unwrap(), s["duration_ms"]))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(report["snapshot"], s2.as_str());
    assert_eq!(report["ok"], true);
    assert_eq!(report["tables_mismatched"], 0);
    assert!(
        !env.journal.exists(),
        "the journal is removed after a successful restore"
    );

    // Every table: the fingerprints recorded at dump time, and every row.
    let n = check_fingerprints(&b, &m2, &[]);
    assert!(n > 20);
    let got_rows = all_rows(&b, &DBS);
    assert_eq!(
        got_rows.keys().collect::<Vec<_>>(),
        expected_rows.keys().collect::<Vec<_>>()
    );
    for (k, v) in &expected_rows {
        assert!(got_rows[k] == *v, "rows of {k} differ after the restore");
    }
    // Views, routines, triggers and the AUTO_INCREMENT counters came back.
    assert_eq!(
        b.sql("SELECT COUNT(*) FROM zstack.VmInstanceVO")
            .unwrap()
            .trim(),
        b.sql("SELECT COUNT(*) FROM zstack.VmInstanceEO WHERE deleted IS NULL")
            .unwrap()
            .trim()
    );
    assert_eq!(
        b.sql("SELECT zstack.ipToLong('10.0.0.1')").unwrap().trim(),
        "167772161"
    );
    assert!(b
        .sql("SHOW TRIGGERS FROM zstack")
        .unwrap()
        .contains("trigger_cleanup_for_VmInstanceEO_soft_delete"));
    let ai = m2["sources"]["mariadb"]["auto_increment"]["zstack.VmUsageHistoryVO"]
        .as_u64()
        .unwrap();
    let got_ai: u64 = b
        .sql("SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA='zstack' AND TABLE_NAME='VmUsageHistoryVO'")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(got_ai, ai);

    // Every file: bytes, mode, mtime, the symlink.
    common::assert_same(&expected_files, &common::capture(&node));

    // The application user logs in with its password.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = b.opts_as("zstack", Some(ZSTACK_PASSWORD));
    let vms: u64 = rt.block_on(async move {
        let mut c = mysql_async::Conn::new(opts)
            .await
            .expect("zstack logs in on the new server");
        c.query_first("SELECT COUNT(*) FROM zstack.VmInstanceEO")
            .await
            .unwrap()
            .unwrap()
    });
    assert!(vms > 0);

    // The first snapshot, beside the live databases, for inspection.
    let out = env.run(&[
        "--json",
        "restore",
        &s1,
        "--rename-db",
        "zstack=zstack_old",
        "--rename-db",
        "zstack_rest=zstack_rest_old",
        "--rename-db",
        "zstack_ui=zstack_ui_old",
        "--no-files",
        "--disable-vm-ha",
        "--rebuild",
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Issue 19: rebuild mode turned the durability off for the load, and set it back.
    let rebuild = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "mariadb rebuild mode")
        .expect("a rebuild mode step");
    assert_eq!(rebuild["items"], 2, "{rebuild}");
    assert!(
        rebuild["note"]
            .as_str()
            .unwrap()
            .contains("innodb_flush_log_at_trx_commit 1 -> 0"),
        "{rebuild}"
    );
    let durability = b
        .sql("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit, @@GLOBAL.sync_binlog")
        .unwrap();
    assert_eq!(
        durability.split_whitespace().collect::<Vec<_>>(),
        ["1", "0"],
        "{durability}"
    );
    assert!(
        report["changes"]
            .to_string()
            .contains("ha.enable: true -> false"),
        "{}",
        report["changes"]
    );
    // The HA switch changed one row after the check: put it back to compare the fingerprints.
    b.sql("UPDATE zstack_old.GlobalConfigVO SET value = 'true' WHERE category = 'ha' AND name = 'enable'")
        .unwrap();
    check_fingerprints(
        &b,
        &m1,
        &[
            ("zstack", "zstack_old"),
            ("zstack_rest", "zstack_rest_old"),
            ("zstack_ui", "zstack_ui_old"),
        ],
    );
    // The live databases are untouched, and the old copy differs from them.
    let live = all_rows(&b, &DBS);
    assert!(
        live == expected_rows,
        "the renamed restore changed the live databases"
    );
    let old = all_rows(&b, &["zstack_old", "zstack_rest_old", "zstack_ui_old"]);
    assert_eq!(
        old.keys().collect::<Vec<_>>(),
        expected_rows.keys().collect::<Vec<_>>()
    );
    assert!(old != expected_rows);
    // The renamed copy's views point at the renamed tables.
    let v = b.sql("SHOW CREATE VIEW zstack_old.VmInstanceVO").unwrap();
    assert!(
        v.contains("`zstack_old`.`VmInstanceEO`") && !v.contains("`zstack`.`VmInstanceEO`"),
        "{v}"
    );
}
