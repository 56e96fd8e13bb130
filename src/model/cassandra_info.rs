//! The `cassandra` entry of a manifest's `sources` (written by the backup, read by the next
//! backup and by the restore) and the names of the Cassandra items.
//!
//! Both are part of repository format v1 (`docs/repository-format.md`): the JSON these structs
//! serialise to is byte for byte what earlier versions wrote.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Source info: one component.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Path relative to the table directory (`md-1-big-Data.db`, `.idx/…`).
    pub name: String,
    pub size: u64,
    /// Modification time (ns) and inode of the file when it was backed up: an SSTable
    /// component with the same name, size, mtime and inode in the next run is unchanged
    /// (SSTables are immutable) and is not read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
}

/// Source info: one table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableInfo {
    pub keyspace: String,
    pub table: String,
    /// The table id (hex, from the directory name); None for 2.0-style directories.
    pub id: Option<String>,
    pub data_dir: PathBuf,
    /// The table directory's name (`<table>-<id>`).
    pub dir: String,
    /// SSTable format versions present (`ka`, `md`, `nb`, …).
    pub versions: Vec<String>,
    pub sstables: usize,
    pub bytes: u64,
    pub components: Vec<ComponentInfo>,
}

/// Source info: one digest check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestCheck {
    /// `<ks>.<table>/<sstable stem>`.
    pub sstable: String,
    pub algorithm: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

/// The `cassandra` entry of a manifest's `sources`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CassandraSourceInfo {
    pub tag: String,
    pub keyspaces: Vec<String>,
    pub data_dirs: Vec<PathBuf>,
    pub tables: Vec<TableInfo>,
    pub digest_checks: Vec<DigestCheck>,
    pub snapshot_cleared: bool,
    /// Keyspaces whose `DESCRIBE KEYSPACE` was stored as `cassandra/<ks>/keyspace.cql`.
    #[serde(default)]
    pub keyspace_schemas: Vec<String>,
    /// `mnbackup-*` snapshots of earlier runs found on the node and cleared.
    #[serde(default)]
    pub leaked_snapshots_cleared: Vec<String>,
    /// SSTable components unchanged since the previous snapshot, recorded without reading.
    #[serde(default)]
    pub files_unchanged: usize,
    /// Bytes read from the node's files by this run.
    #[serde(default)]
    pub bytes_read: u64,
    pub warnings: Vec<String>,
}

/// The item holding a keyspace's `DESCRIBE KEYSPACE` output: `cassandra/<ks>/keyspace.cql`.
pub const KEYSPACE_CQL: &str = "keyspace.cql";

/// The name of a Cassandra item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CassandraItem {
    /// `cassandra/<ks>/keyspace.cql`.
    KeyspaceCql { keyspace: String },
    /// `cassandra/<ks>/<table>/<file>`: `file` is a path relative to the table directory
    /// (`md-1-big-Data.db`, `.<index>/<component>`, `schema.cql`, `manifest.json`).
    TableFile {
        keyspace: String,
        table: String,
        file: String,
    },
}

impl CassandraItem {
    /// The prefix of every Cassandra item name.
    pub const PREFIX: &'static str = "cassandra/";

    /// The item name.
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Parse an item name; None for an item that is not a Cassandra one (or has no table
    /// and is not `keyspace.cql`).
    pub fn parse(item: &str) -> Option<CassandraItem> {
        let rest = item.strip_prefix(Self::PREFIX)?;
        let mut it = rest.splitn(3, '/');
        let (ks, second, third) = (it.next()?, it.next()?, it.next());
        Some(match third {
            Some(file) => CassandraItem::TableFile {
                keyspace: ks.to_string(),
                table: second.to_string(),
                file: file.to_string(),
            },
            None if second == KEYSPACE_CQL => CassandraItem::KeyspaceCql {
                keyspace: ks.to_string(),
            },
            None => return None,
        })
    }
}

impl fmt::Display for CassandraItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CassandraItem::KeyspaceCql { keyspace } => {
                write!(f, "{}{keyspace}/{KEYSPACE_CQL}", Self::PREFIX)
            }
            CassandraItem::TableFile {
                keyspace,
                table,
                file,
            } => write!(f, "{}{keyspace}/{table}/{file}", Self::PREFIX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_names_round_trip() {
        for name in [
            "cassandra/kairosdb/keyspace.cql",
            "cassandra/kairosdb/data_points/md-1-big-Data.db",
            "cassandra/ks/tb/.idx/md-2-big-Index.db",
            "cassandra/ks/tb/schema.cql",
            "cassandra/ks/tb/manifest.json",
        ] {
            let parsed = CassandraItem::parse(name).unwrap();
            assert_eq!(parsed.encode(), name);
            assert_eq!(CassandraItem::parse(&parsed.encode()), Some(parsed));
        }
        let t = CassandraItem::parse("cassandra/ks/tb/.i/x-Data.db").unwrap();
        assert_eq!(
            t,
            CassandraItem::TableFile {
                keyspace: "ks".into(),
                table: "tb".into(),
                file: ".i/x-Data.db".into()
            }
        );
        for other in [
            "cassandra/ks/other",
            "cassandra/ks",
            "files/etc/x",
            "mariadb/a/b",
        ] {
            assert_eq!(CassandraItem::parse(other), None, "{other}");
        }
    }

    /// A `sources.cassandra` section as a v1 manifest holds it (the shape the backup wrote
    /// before these structs moved here), parsed and written again: the same bytes.
    #[test]
    fn source_info_reserialises_to_v1_bytes() {
        let v1 = r#"{"tag":"mnbackup-20260101T000000Z-ab12","keyspaces":["kairosdb"],"data_dirs":["/var/lib/cassandra/data"],"tables":[{"keyspace":"kairosdb","table":"data_points","id":"5b1b0c30a1c611eeb6a1c1f2c1a0b0c1","data_dir":"/var/lib/cassandra/data","dir":"data_points-5b1b0c30a1c611eeb6a1c1f2c1a0b0c1","versions":["md"],"sstables":1,"bytes":120,"components":[{"name":"md-1-big-Data.db","size":100,"mtime_ns":1767225600000000000,"ino":4242},{"name":"manifest.json","size":20}]}],"digest_checks":[{"sstable":"kairosdb.data_points/md-1-big","algorithm":"crc32","expected":"12345","actual":"12345","ok":true}],"snapshot_cleared":true,"keyspace_schemas":["kairosdb"],"leaked_snapshots_cleared":[],"files_unchanged":0,"bytes_read":120,"warnings":["w"]}"#;
        let info: CassandraSourceInfo = serde_json::from_str(v1).unwrap();
        assert_eq!(serde_json::to_string(&info).unwrap(), v1);
        // An older manifest without the later fields still reads.
        let old = r#"{"tag":"t","keyspaces":[],"data_dirs":[],"tables":[],"digest_checks":[],"snapshot_cleared":false,"warnings":[]}"#;
        let info: CassandraSourceInfo = serde_json::from_str(old).unwrap();
        assert_eq!(info.bytes_read, 0);
    }
}
