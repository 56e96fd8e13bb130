//! What a MariaDB restore loads, in which order.
//!
//! The input is the snapshot's `sources.mariadb` source info (its `load_plan`, `fingerprints`,
//! `auto_increment`, `databases` and `server.version`, written by the dump) plus the size of each
//! item; [`MariadbSource::from_info`] turns it into [`SqlItem`]s in load order. Snapshots without
//! a `load_plan` fall back to the item names, which sort in load order by construction.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde::Serialize;

use super::fingerprint::Fingerprint;
use super::names::ItemName;
use crate::model::mariadb_info::MariadbInfo;

pub use crate::model::mariadb_info::ItemKind;

impl ItemKind {
    /// The kind named in the dump's `load_plan`.
    pub fn parse(s: &str) -> Option<ItemKind> {
        Some(match s {
            "accounts" => ItemKind::Accounts,
            "schema" => ItemKind::Schema,
            "data" => ItemKind::Data,
            "routines" => ItemKind::Routines,
            "views" => ItemKind::Views,
            "triggers" => ItemKind::Triggers,
            "events" => ItemKind::Events,
            "grants" => ItemKind::Grants,
            _ => return None,
        })
    }

    /// Lowercase name (as in `load_plan` and in journal step keys).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Accounts => "accounts",
            ItemKind::Schema => "schema",
            ItemKind::Data => "data",
            ItemKind::Routines => "routines",
            ItemKind::Views => "views",
            ItemKind::Triggers => "triggers",
            ItemKind::Events => "events",
            ItemKind::Grants => "grants",
        }
    }

    /// Whether items of this kind hold DDL whose qualified names are renamed (see
    /// [`crate::sql`]).
    pub fn is_ddl(self) -> bool {
        !matches!(self, ItemKind::Accounts | ItemKind::Data | ItemKind::Grants)
    }
}

/// One SQL item of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlItem {
    /// Item name in the snapshot (`mariadb/2-data/zstack/VolumeEO.sql`).
    pub name: String,
    pub kind: ItemKind,
    /// Source database (schema, data and per-database DDL items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// Source table (data items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Rows (data items, when the dump recorded them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Plain size in bytes.
    pub size: u64,
}

impl SqlItem {
    /// `db.table` of a data item.
    pub fn table_key(&self) -> Option<String> {
        Some(format!("{}.{}", self.db.as_ref()?, self.table.as_ref()?))
    }
}

/// The MariaDB part of a snapshot, as the restore needs it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MariadbSource {
    /// The source server's `VERSION()`.
    pub version: String,
    /// Databases in the snapshot.
    pub databases: Vec<String>,
    /// Every SQL item, in load order.
    pub items: Vec<SqlItem>,
    /// `db.table` → fingerprint recorded at dump time (0-row tables included).
    pub fingerprints: BTreeMap<String, Fingerprint>,
    /// `db.table` → next AUTO_INCREMENT value at dump time.
    pub auto_increment: BTreeMap<String, u64>,
    /// `user@host` of every account in the accounts item.
    pub accounts: Vec<String>,
    /// `db.table` → bytes of its largest INSERT statement (snapshots since `max_statement`).
    pub max_statement: BTreeMap<String, u64>,
}

fn kind_order(k: ItemKind) -> u8 {
    k as u8
}

/// Derive an item's kind, database and table from its name (for snapshots without a
/// `load_plan`).
pub fn item_from_name(name: &str, size: u64) -> Option<SqlItem> {
    let n = ItemName::parse(name)?;
    Some(SqlItem {
        name: name.to_string(),
        kind: n.kind(),
        db: n.db().map(str::to_string),
        table: n.table().map(str::to_string),
        rows: None,
        size,
    })
}

impl MariadbSource {
    /// Build from the `sources.mariadb` source info and the sizes of the snapshot's items
    /// (`mariadb/…` names only are looked at). Every item the plan names must exist.
    pub fn from_info(info: &serde_json::Value, sizes: &BTreeMap<String, u64>) -> Result<Self> {
        let info = MariadbInfo::from_value(info).map_err(|e| anyhow::anyhow!(e))?;
        Self::from_typed(info, sizes)
    }

    /// [`MariadbSource::from_info`] over the parsed source info.
    pub fn from_typed(info: MariadbInfo, sizes: &BTreeMap<String, u64>) -> Result<Self> {
        let mut src = MariadbSource {
            version: info.point.server.version,
            databases: info
                .point
                .databases
                .iter()
                .map(|d| d.name().to_string())
                .collect(),
            fingerprints: info.fingerprints,
            auto_increment: info.auto_increment,
            accounts: info.accounts,
            max_statement: info.max_statement,
            items: Vec::new(),
        };
        if let Some(plan) = info.load_plan {
            for e in plan {
                let Some(&size) = sizes.get(&e.item) else {
                    bail!(
                        "the snapshot's MariaDB load plan names item {}, which the snapshot does \
                         not contain; the manifest is inconsistent: restore another snapshot",
                        e.item
                    );
                };
                src.items.push(SqlItem {
                    name: e.item,
                    kind: e.kind,
                    db: e.db,
                    table: e.table,
                    rows: e.rows,
                    size,
                });
            }
        } else {
            for (name, &size) in sizes {
                if let Some(i) = item_from_name(name, size) {
                    src.items.push(i);
                }
            }
        }
        // Load order: by kind, then by name (the dump's names sort in load order).
        src.items
            .sort_by(|a, b| (kind_order(a.kind), &a.name).cmp(&(kind_order(b.kind), &b.name)));
        if src.databases.is_empty() {
            let set: BTreeSet<String> = src.items.iter().filter_map(|i| i.db.clone()).collect();
            src.databases = set.into_iter().collect();
        }
        Ok(src)
    }

    /// Restrict to the given source databases (the accounts and grants items are kept).
    pub fn only_databases(&mut self, keep: &BTreeSet<String>) {
        let in_keep = |k: &str| k.split_once('.').is_some_and(|(d, _)| keep.contains(d));
        self.items
            .retain(|i| i.db.as_ref().is_none_or(|d| keep.contains(d)));
        self.databases.retain(|d| keep.contains(d));
        self.fingerprints.retain(|k, _| in_keep(k));
        self.auto_increment.retain(|k, _| in_keep(k));
    }

    /// Every `db.table` the restore loads or checks: tables with data items and tables with a
    /// recorded fingerprint (empty tables have no data item).
    pub fn tables(&self) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self.fingerprints.keys().cloned().collect();
        s.extend(self.items.iter().filter_map(|i| i.table_key()));
        s
    }

    /// Bytes of the items of `kind`.
    pub fn bytes_of(&self, kind: ItemKind) -> u64 {
        self.items
            .iter()
            .filter(|i| i.kind == kind)
            .map(|i| i.size)
            .sum()
    }
}

/// The target name of a source database under `renames`.
pub fn target_db<'a>(renames: &'a BTreeMap<String, String>, db: &'a str) -> &'a str {
    renames.get(db).map(String::as_str).unwrap_or(db)
}

/// The target `db.table` of a source `db.table` under `renames`.
pub fn target_table(renames: &BTreeMap<String, String>, key: &str) -> String {
    match key.split_once('.') {
        Some((d, t)) => format!("{}.{t}", target_db(renames, d)),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_order() {
        let i = item_from_name("mariadb/2-data/zstack/VmUsageHistoryVO.000003.p1.sql", 5).unwrap();
        assert_eq!(i.kind, ItemKind::Data);
        assert_eq!(i.table_key().unwrap(), "zstack.VmUsageHistoryVO");
        let s = item_from_name("mariadb/5-triggers/zstack.sql", 1).unwrap();
        assert_eq!(
            (s.kind, s.db.as_deref()),
            (ItemKind::Triggers, Some("zstack"))
        );
        let mut sizes = BTreeMap::new();
        for n in [
            "mariadb/7-grants.sql",
            "mariadb/0-accounts.sql",
            "mariadb/2-data/a/t.sql",
            "mariadb/1-schema/a.sql",
            "files/etc/x",
        ] {
            sizes.insert(n.to_string(), 1);
        }
        let src = MariadbSource::from_info(&serde_json::json!({}), &sizes).unwrap();
        let kinds: Vec<_> = src.items.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ItemKind::Accounts,
                ItemKind::Schema,
                ItemKind::Data,
                ItemKind::Grants
            ]
        );
        assert_eq!(src.databases, vec!["a".to_string()]);
    }

    #[test]
    fn plan_must_match_items() {
        let info = serde_json::json!({"load_plan": [{"item": "mariadb/1-schema/a.sql", "kind": "schema", "db": "a"}]});
        assert!(MariadbSource::from_info(&info, &BTreeMap::new()).is_err());
        let mut renames = BTreeMap::new();
        renames.insert("a".to_string(), "b".to_string());
        assert_eq!(target_table(&renames, "a.t"), "b.t");
        assert_eq!(target_table(&renames, "c.t"), "c.t");
    }
}
