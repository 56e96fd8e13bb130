//! Shared helpers of the MariaDB tests: an in-memory item sink, configs for throwaway servers,
//! loading items with the `mariadb` client, and row comparisons.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use mnbackup::engines::mariadb::MariadbConfig;
use mnbackup::model::EntryKind;
use mnbackup::model::{ItemSink, ItemSpec};
use mnbackup_fixtures::mariadb::TestServer;
use mysql_async::prelude::*;

type Hook = Box<dyn Fn(&str) + Send + Sync>;

/// Collects items in memory.
#[derive(Default)]
pub struct MemSink {
    pub items: Mutex<BTreeMap<String, Vec<u8>>>,
    pub info: Mutex<BTreeMap<String, serde_json::Value>>,
    pub hook: Mutex<Option<Hook>>,
    /// What the source reported it could not capture.
    pub gaps: Mutex<Vec<mnbackup::model::Gap>>,
}

impl MemSink {
    pub fn new() -> Arc<MemSink> {
        Arc::new(MemSink::default())
    }
    pub fn items(&self) -> BTreeMap<String, Vec<u8>> {
        self.items.lock().unwrap().clone()
    }
    pub fn info(&self) -> serde_json::Value {
        self.info
            .lock()
            .unwrap()
            .get("mariadb")
            .cloned()
            .unwrap_or_default()
    }
}

impl ItemSink for MemSink {
    fn put_reader(&self, spec: ItemSpec, reader: &mut dyn Read) -> anyhow::Result<()> {
        assert_eq!(spec.kind, EntryKind::File);
        assert!(spec.name.starts_with("mariadb/"), "{}", spec.name);
        if let Some(h) = self.hook.lock().unwrap().as_ref() {
            h(&spec.name);
        }
        let mut v = Vec::new();
        reader.read_to_end(&mut v)?;
        let prev = self.items.lock().unwrap().insert(spec.name.clone(), v);
        assert!(prev.is_none(), "item {} written twice", spec.name);
        Ok(())
    }
    fn put_entry(&self, _spec: ItemSpec) -> anyhow::Result<()> {
        panic!("the MariaDB source writes no entries");
    }
    fn set_source_info(&self, source: &str, info: serde_json::Value) {
        self.info.lock().unwrap().insert(source.to_string(), info);
    }
    fn gap(&self, gap: mnbackup::model::Gap) {
        self.gaps.lock().unwrap().push(gap);
    }
}

/// A config that reaches `s` as root over its socket.
pub fn cfg_socket(s: &TestServer) -> MariadbConfig {
    MariadbConfig {
        socket: Some(s.socket().to_path_buf()),
        user: Some("root".into()),
        workers: Some(3),
        ..Default::default()
    }
}

/// Load every item into `target` in name order (= load order) with the `mariadb` client.
pub fn load_all(target: &TestServer, items: &BTreeMap<String, Vec<u8>>) {
    for (name, data) in items {
        target
            .load(data)
            .unwrap_or_else(|e| panic!("loading {name} with the mariadb client: {e:#}"));
    }
}

/// Rows of `db.table` (text protocol; `select` is the select list) ordered by `order`.
pub async fn rows_text(opts: mysql_async::Opts, sql: &str) -> Vec<Vec<mysql_async::Value>> {
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    c.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await
        .unwrap();
    let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

/// Same through the binary protocol (prepared statement): exact floats, typed temporals.
pub async fn rows_binary(opts: mysql_async::Opts, sql: &str) -> Vec<Vec<mysql_async::Value>> {
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    c.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await
        .unwrap();
    let rows: Vec<mysql_async::Row> = c.exec(sql, ()).await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

/// Every base table of the given databases (`db.table`).
pub async fn base_tables(opts: mysql_async::Opts, dbs: &[&str]) -> Vec<(String, String)> {
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    let list = dbs
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(",");
    c.query(format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({list}) \
         AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2"
    ))
    .await
    .unwrap()
}

/// Check the fingerprints recorded at dump time against `target`.
pub async fn check_fingerprints(info: &serde_json::Value, target: &TestServer) -> usize {
    let fps = info["fingerprints"].as_object().expect("fingerprints");
    let mut c = mysql_async::Conn::new(target.opts()).await.unwrap();
    for (k, v) in fps {
        let (db, t) = k.split_once('.').unwrap();
        let got = mnbackup::engines::mariadb::fingerprint::table_fingerprint(&mut c, db, t)
            .await
            .unwrap();
        assert_eq!(got.rows, v["rows"].as_u64().unwrap(), "rows of {k}");
        assert_eq!(got.hash, v["hash"].as_str().unwrap(), "hash of {k}");
    }
    fps.len()
}

/// Skip (return true) when the MariaDB server is not installed.
pub fn skip() -> bool {
    if !mnbackup_fixtures::mariadb::available() {
        eprintln!("MariaDB server not installed; skipping");
        return true;
    }
    false
}
