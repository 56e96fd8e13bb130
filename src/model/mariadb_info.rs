//! The typed `sources.mariadb` source info of a manifest: written by the MariaDB dump
//! (`engines::mariadb::backup`), read by the restore, the drill and `verify`.
//!
//! The JSON is the one v1 manifests hold (see `engines::mariadb` for an example); every field
//! the dump writes today is serialized, always, so a new manifest is byte-identical to what the
//! former `json!` writer produced (object keys sort, as `serde_json` without `preserve_order`
//! does). Fields are defaulted when reading, so older snapshots (no `load_plan`, no
//! `max_statement`, database names as plain strings) still parse; fields this release does not
//! know are kept in [`MariadbInfo::other`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The whole `sources.mariadb` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MariadbInfo {
    /// Format of this object (1).
    pub format: u32,
    /// Server, consistency, binlog and databases of the main consistent point.
    #[serde(flatten)]
    pub point: PointInfo,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration_ms: u64,
    /// Every item in load order; `None` in snapshots older than the load plan (the restore
    /// then derives it from the item names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_plan: Option<Vec<LoadPlanEntry>>,
    /// `db.table` → fingerprint at dump time (0-row tables included).
    pub fingerprints: BTreeMap<String, Fingerprint>,
    /// `db.table` → next AUTO_INCREMENT value at dump time.
    pub auto_increment: BTreeMap<String, u64>,
    /// `db.table` → bytes of its largest INSERT statement.
    pub max_statement: BTreeMap<String, u64>,
    /// `user@host` of every account in the accounts item.
    pub accounts: Vec<String>,
    /// What was deliberately not dumped (sequences, …), one sentence each.
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
    pub summary: MariadbSummary,
    /// Further consistent points (databases only the ZStack UI's credentials could see).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_points: Vec<PointInfo>,
    /// Fields a newer mnbackup wrote, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// One consistent point: the server, how it was made consistent, the binlog position there and
/// the databases read from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PointInfo {
    pub server: ServerInfo,
    pub consistency: ConsistencyInfo,
    /// `null` when the binlog is off (or the point failed before it was read).
    pub binlog: Option<BinlogPosition>,
    pub databases: Vec<DatabaseRef>,
}

/// The source server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    /// `host:port` or the socket path.
    pub address: String,
    /// `VERSION()`.
    pub version: String,
    pub user: String,
}

/// How commits were blocked (see `engines::mariadb::consistency`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockMethod {
    /// `BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT` (MariaDB >= 10.4.1).
    BackupStage,
    /// `FLUSH TABLES WITH READ LOCK` (older MariaDB, MySQL).
    Ftwrl,
    /// The user lacks RELOAD: no global block, one worker connection and its single snapshot
    /// (consistent for InnoDB, as `mysqldump --single-transaction`); non-transactional tables
    /// are still read-locked from before the snapshot until they are read. (The default when
    /// reading: the weakest claim.)
    #[default]
    SingleSnapshot,
}

/// The `consistency` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsistencyInfo {
    pub method: BlockMethod,
    /// How long commits were blocked, ms.
    pub block_ms: u64,
    /// How long writes to non-transactional tables were blocked, ms.
    pub nontransactional_lock_ms: u64,
    /// `db.table` of every non-transactional (MyISAM, Aria, …) table.
    pub nontransactional_tables: Vec<String>,
}

/// The binlog position at the point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BinlogPosition {
    pub file: Option<String>,
    pub position: Option<u64>,
    pub gtid_binlog_pos: Option<String>,
    /// Set when the position could not be read (e.g. missing BINLOG MONITOR privilege).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A dumped database with its defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub name: String,
    pub charset: String,
    pub collation: String,
}

/// An entry of `databases`: an object today, a plain name in the oldest snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DatabaseRef {
    Full(DatabaseInfo),
    Name(String),
}

impl DatabaseRef {
    pub fn name(&self) -> &str {
        match self {
            DatabaseRef::Full(d) => &d.name,
            DatabaseRef::Name(n) => n,
        }
    }
}

/// A table's row count and row-multiset hash (definition in `engines::mariadb::fingerprint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub rows: u64,
    /// 64 lowercase hex digits.
    pub hash: String,
}

/// The step an item belongs to, in load order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// `mariadb/0-accounts.sql`: `CREATE USER IF NOT EXISTS` + `ALTER USER` / `CREATE ROLE`.
    Accounts,
    /// `mariadb/1-schema/<db>.sql`: the database, its tables, placeholder views.
    Schema,
    /// `mariadb/2-data/<db>/<table>[.<range>][.pN].sql`: rows.
    Data,
    /// Procedures and functions.
    Routines,
    /// The real view definitions.
    Views,
    /// Triggers (after the data, so loading does not fire them).
    Triggers,
    /// Events.
    Events,
    /// `mariadb/7-grants.sql`.
    Grants,
}

/// One entry of `load_plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadPlanEntry {
    pub item: String,
    pub kind: ItemKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// What a MariaDB backup did (`summary`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MariadbSummary {
    pub databases: usize,
    pub tables: usize,
    pub rows: u64,
    pub items: usize,
    /// Plain bytes of all items.
    pub bytes: u64,
    /// How long commits were blocked, ms.
    pub block_ms: u64,
    pub duration_ms: u64,
}

impl MariadbInfo {
    /// Parse a manifest's `sources.mariadb`. An unknown load-plan kind means a newer mnbackup
    /// took the snapshot.
    pub fn from_value(v: &serde_json::Value) -> Result<MariadbInfo, String> {
        serde_json::from_value(v.clone()).map_err(|e| {
            let e = e.to_string();
            if e.contains("unknown variant") {
                format!(
                    "the snapshot's MariaDB source info uses a kind this mnbackup does not know \
                     ({e}); this mnbackup is older than the one that took the snapshot: use a \
                     newer release"
                )
            } else {
                format!("the snapshot's MariaDB source info is malformed ({e}); the manifest is inconsistent")
            }
        })
    }

    /// The JSON written into the manifest.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the MariaDB source info serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sources.mariadb` of a manifest written by the `json!` writer this type replaced (from
    /// a snapshot of the test server, items shortened; keys in the order `serde_json` writes).
    const V1: &str = r#"{"accounts":["zstack@%","zstack@localhost"],"auto_increment":{"zstack.AuditsVO":1001},"binlog":{"file":"bin.000003","gtid_binlog_pos":"0-1-42","position":1234},"consistency":{"block_ms":3,"method":"backup_stage","nontransactional_lock_ms":40,"nontransactional_tables":["zstack.AuditsVO"]},"databases":[{"charset":"utf8mb3","collation":"utf8mb3_general_ci","name":"zstack"}],"duration_ms":129,"fingerprints":{"zstack.AuditsVO":{"hash":"0000000000000000000000000000000000000000000000000000000000000000","rows":0},"zstack.HostEO":{"hash":"9f3c5d0e6a2b1c4d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d","rows":10}},"finished":"2024-01-01T00:00:01.129Z","format":1,"load_plan":[{"item":"mariadb/0-accounts.sql","kind":"accounts"},{"db":"zstack","item":"mariadb/1-schema/zstack.sql","kind":"schema"},{"db":"zstack","item":"mariadb/2-data/zstack/HostEO.sql","kind":"data","rows":10,"table":"HostEO"},{"item":"mariadb/7-grants.sql","kind":"grants"}],"max_statement":{"zstack.HostEO":181},"server":{"address":"127.0.0.1:3306","user":"root","version":"10.11.6-MariaDB"},"skipped":[],"started":"2024-01-01T00:00:00Z","summary":{"block_ms":3,"bytes":7996,"databases":1,"duration_ms":129,"items":4,"rows":10,"tables":2},"warnings":["no RELOAD privilege: x"]}"#;

    #[test]
    fn v1_round_trips_byte_for_byte() {
        let v: serde_json::Value = serde_json::from_str(V1).unwrap();
        let info = MariadbInfo::from_value(&v).unwrap();
        assert_eq!(info.point.consistency.method, BlockMethod::BackupStage);
        assert_eq!(info.load_plan.as_ref().unwrap()[2].kind, ItemKind::Data);
        assert_eq!(info.point.databases[0].name(), "zstack");
        assert!(info.other.is_empty());
        assert_eq!(serde_json::to_string(&info.to_value()).unwrap(), V1);
        // With an extra point, a null binlog and a field from a newer release.
        let mut v2 = v.clone();
        v2["binlog"] = serde_json::Value::Null;
        v2["extra_points"] = serde_json::json!([{"server": v["server"], "consistency": v["consistency"],
            "binlog": null, "databases": v["databases"]}]);
        v2["from_the_future"] = serde_json::json!({"x": 1});
        let info2 = MariadbInfo::from_value(&v2).unwrap();
        assert_eq!(info2.to_value(), v2);
    }

    #[test]
    fn old_snapshots_and_newer_kinds() {
        let v =
            serde_json::json!({"server": {"version": "5.5.68-MariaDB"}, "databases": ["zstack"]});
        let info = MariadbInfo::from_value(&v).unwrap();
        assert!(info.load_plan.is_none());
        assert_eq!(info.point.databases[0].name(), "zstack");
        let v =
            serde_json::json!({"load_plan": [{"item": "mariadb/8-x.sql", "kind": "sequences"}]});
        let e = MariadbInfo::from_value(&v).unwrap_err();
        assert!(e.contains("use a newer release"), "{e}");
    }
}
