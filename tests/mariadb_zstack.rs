//! The ZStack-like fixture: generate, dump, churn 12 simulated hours, dump again. The second dump
//! differs only in some items; it loads into an empty server with the `mariadb` client, the
//! fingerprints match, the views and the application account work. Credentials can come from a
//! zstack.properties with a zstack-ctl-encrypted password.

mod mariadb_common;

use mariadb_common::*;
use mnbackup::engines::mariadb::{self, zstack, MariadbConfig};
use mnbackup_fixtures::mariadb::TestServer;
use mnbackup_fixtures::zstack_db;
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_zstack_db_dump_churn_and_reload() {
    if skip() {
        return;
    }
    let src = TestServer::start().unwrap();
    let t = std::time::Instant::now();
    let g = zstack_db::generate(src.opts(), 0.01, 7).await.unwrap();
    eprintln!(
        "generated {} rows in {:.1} s",
        g.rows,
        t.elapsed().as_secs_f64()
    );
    let mut cfg = cfg_socket(&src);
    cfg.split_rows = Some(1000);
    let s1 = MemSink::new();
    let sum1 = mariadb::backup(&cfg, s1.clone()).await.unwrap();
    eprintln!("dump 1: {sum1:?}");
    let ch = zstack_db::churn(src.opts(), 7).await.unwrap();
    eprintln!("churn: {ch:?}");
    let s2 = MemSink::new();
    let sum2 = mariadb::backup(&cfg, s2.clone()).await.unwrap();
    eprintln!("dump 2: {sum2:?}");
    let (a, b) = (s1.items(), s2.items());
    let mut same = 0usize;
    let mut changed = Vec::new();
    let mut changed_bytes = 0usize;
    for (k, v) in &b {
        match a.get(k) {
            Some(old) if old == v => same += 1,
            _ => {
                changed.push(k.clone());
                changed_bytes += v.len();
            }
        }
    }
    let total_bytes: usize = b.values().map(|v| v.len()).sum();
    eprintln!(
        "after one churn step: {same} items identical, {} changed or new ({} of {} bytes, {:.1}%): {changed:#?}",
        changed.len(),
        changed_bytes,
        total_bytes,
        100.0 * changed_bytes as f64 / total_bytes as f64
    );
    assert!(same > changed.len(), "most items must be unchanged");
    assert!(!changed.is_empty());
    assert!(changed.iter().any(|k| k.contains("VmUsageHistoryVO")));
    assert!(!changed
        .iter()
        .any(|k| k.contains("schema_version") || k.contains("1-schema")));
    // History tables grow at the end: their older buckets are unchanged.
    let hist: Vec<_> = b
        .keys()
        .filter(|k| k.contains("/zstack/VmUsageHistoryVO."))
        .collect();
    assert!(hist.len() >= 3, "{hist:?}");
    assert!(hist.iter().filter(|k| !changed.contains(k)).count() >= hist.len() - 2);

    // Reload the churned dump into an empty server.
    let dst = TestServer::start().unwrap();
    load_all(&dst, &b);
    let n = check_fingerprints(&s2.info(), &dst).await;
    assert!(n >= 25, "{n} tables");
    for q in [
        "SELECT COUNT(*), SUM(cpuNum) FROM zstack.VmInstanceVO",
        "SELECT COUNT(*) FROM zstack.VolumeVO",
        "SELECT COUNT(*) FROM zstack.AuditsVO",
        "SELECT zstack.ipToLong('10.0.0.1')",
        "SELECT COUNT(*) FROM zstack_ui.login_log",
    ] {
        assert_eq!(src.sql(q).unwrap(), dst.sql(q).unwrap(), "{q}");
    }
    // The trigger works on the copy.
    let vm: String = dst
        .sql("SELECT uuid FROM zstack.VmInstanceVO ORDER BY uuid LIMIT 1")
        .unwrap()
        .trim()
        .to_string();
    dst.sql(&format!(
        "UPDATE zstack.VmInstanceEO SET deleted = NOW() WHERE uuid = '{vm}'"
    ))
    .unwrap();
    assert_eq!(
        dst.sql(&format!(
            "SELECT COUNT(*) FROM zstack.SystemTagVO WHERE resourceUuid = '{vm}'"
        ))
        .unwrap(),
        "0\n"
    );
    // The application account logs in with its password.
    let mut c = mysql_async::Conn::new(dst.opts_as("zstack", Some(zstack_db::ZSTACK_PASSWORD)))
        .await
        .unwrap();
    let n: Option<u64> = c
        .query_first("SELECT COUNT(*) FROM zstack.HostVO")
        .await
        .unwrap();
    assert!(n.unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_zstack_properties_with_encrypted_password() {
    if skip() {
        return;
    }
    let src = TestServer::start().unwrap();
    zstack_db::generate(src.opts(), 0.002, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("zstack.properties");
    std::fs::write(
        &props,
        format!(
            "DB.url = jdbc:mysql://127.0.0.1:{}/zstack\nDB.user = zstack\nDB.password = {}\n",
            src.port(),
            zstack::encrypt(zstack_db::ZSTACK_PASSWORD)
        ),
    )
    .unwrap();
    let ui = dir.path().join("zstack.ui.properties");
    std::fs::write(
        &ui,
        format!(
            "db_url=jdbc:mysql://127.0.0.1:{}/zstack_ui?useSSL=false\ndb_username=zstack_ui\ndb_password={}\n",
            src.port(),
            zstack::encrypt(zstack_db::ZSTACK_UI_PASSWORD)
        ),
    )
    .unwrap();
    let cfg = MariadbConfig {
        zstack_properties: Some(props.clone()),
        zstack_ui_properties: Some(ui),
        ..Default::default()
    };
    let sink = MemSink::new();
    let sum = mariadb::backup(&cfg, sink.clone()).await.unwrap();
    let info = sink.info();
    eprintln!("{sum:?}\nwarnings: {}", info["warnings"]);
    // The zstack user sees zstack and zstack_rest; the UI database comes through the UI account.
    let dbs: Vec<&str> = info["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(dbs, ["zstack", "zstack_rest", "zstack_ui"]);
    assert_eq!(info["consistency"]["method"], "single_snapshot");
    assert!(info["extra_points"].is_array());
    assert!(sink
        .items()
        .contains_key("mariadb/2-data/zstack_ui/login_log.sql"));

    // A ciphertext under another key does not decrypt to zstack-ctl's prefix, so (as ZStack
    // does) it is taken as a plain password, which the server refuses: a clear error naming
    // the user and where the password came from.
    std::fs::write(
        &props,
        format!(
            "DB.url = jdbc:mysql://127.0.0.1:{}/zstack\nDB.user = zstack\nDB.password = {}\n",
            src.port(),
            zstack::encrypt_with("not the key", zstack_db::ZSTACK_PASSWORD)
        ),
    )
    .unwrap();
    let cfg = MariadbConfig {
        zstack_properties: Some(props.clone()),
        ..Default::default()
    };
    let msg = format!(
        "{:#}",
        mariadb::backup(&cfg, MemSink::new()).await.unwrap_err()
    );
    assert!(
        msg.contains("refused user 'zstack'") && msg.contains("zstack_properties"),
        "{msg}"
    );
}
