//! The fixture has ZStack's real shape (>= 600 tables, >= 600 foreign keys, 21 views, 26
//! routines, MyISAM tables in `zstack`, `zstack_rest`, `zstack_ui`), and a snapshot and a
//! restore of it through the `mnbackup` binary into an empty server give the same rows in every
//! table and the same schema objects.

mod restore_common;

use std::time::Instant;

use mnbackup_fixtures::mariadb::TestServer;
use mnbackup_fixtures::zstack_shape;
use restore_common::*;

/// Counts of the schema objects of the three databases, as one line of the client's output.
const SHAPE: &str = "SELECT \
    (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ('zstack','zstack_rest','zstack_ui') AND TABLE_TYPE = 'BASE TABLE'), \
    (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA IN ('zstack','zstack_rest','zstack_ui')), \
    (SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ('zstack','zstack_rest','zstack_ui')), \
    (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ('zstack','zstack_rest','zstack_ui')), \
    (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ('zstack','zstack_rest','zstack_ui') AND ENGINE = 'MyISAM'), \
    (SELECT COUNT(DISTINCT TABLE_SCHEMA) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ('zstack','zstack_rest','zstack_ui'))";

fn shape(s: &TestServer) -> Vec<u64> {
    s.sql(SHAPE)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

/// `CHECKSUM TABLE` of every base table, in one client call (the same server version on both
/// sides, so equal rows give equal checksums), plus exact row counts of a few tables.
fn contents(s: &TestServer) -> String {
    let list = tables(s, &DBS)
        .iter()
        .map(|t| {
            let (d, n) = t.split_once('.').unwrap();
            format!("`{d}`.`{n}`")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = s.sql(&format!("CHECKSUM TABLE {list} EXTENDED")).unwrap();
    out.push_str(
        &s.sql(
            "SELECT (SELECT COUNT(*) FROM zstack.SecurityGroupRuleVO), \
             (SELECT COUNT(*) FROM zstack.VmInstanceEO), (SELECT COUNT(*) FROM zstack.PrimaryStorageVO), \
             (SELECT COUNT(*) FROM zstack_ui.ui_operation_log), (SELECT COUNT(*) FROM zstack.AuditsVO)",
        )
        .unwrap(),
    );
    out
}

#[test]
fn the_real_shape_has_zstacks_size_and_round_trips() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let src = TestServer::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let g = rt
        .block_on(zstack_shape::generate_real(src.opts(), 0.002, 5))
        .unwrap();
    eprintln!(
        "generated {} rows of the real shape in {:.1}s",
        g.rows, g.seconds
    );
    let s = shape(&src);
    eprintln!("tables, foreign keys, views, routines, MyISAM tables, databases: {s:?}");
    assert!(s[0] >= 600, "tables: {s:?}");
    assert!(s[1] >= 600, "foreign keys: {s:?}");
    assert!(s[2] >= 21, "views: {s:?}");
    assert!(s[3] >= 26, "routines: {s:?}");
    assert!(s[4] >= 3, "MyISAM tables: {s:?}");
    assert_eq!(s[5], 3, "databases: {s:?}");
    let t_gen = t0.elapsed();

    let env = Env::new();
    env.config(&src, &[], "");
    let id = env.snapshot();
    let t_snap = t0.elapsed();
    let dst = TestServer::start().unwrap();
    let sock = dst.socket().to_str().unwrap().to_string();
    let o = env.ok(&[
        "--json",
        "restore",
        &id,
        "--no-files",
        "--target-socket",
        &sock,
    ]);
    let t_restore = t0.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for s in report["steps"].as_array().into_iter().flatten() {
        eprintln!(
            "restore step {:<28} {:>7} ms {:>9} rows",
            s["step"].as_str().unwrap_or(""),
            s["duration_ms"],
            s["rows"]
        );
    }
    assert_eq!(shape(&dst), s, "the restored schema objects");
    assert_eq!(contents(&src), contents(&dst), "the restored rows");
    eprintln!(
        "times: generate {:.1}s, snapshot {:.1}s, restore {:.1}s, compare {:.1}s (total)",
        t_gen.as_secs_f64(),
        (t_snap - t_gen).as_secs_f64(),
        (t_restore - t_snap).as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
