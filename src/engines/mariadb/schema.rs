//! Discovery (databases, tables, columns, keys) and the DDL items: database and table
//! definitions, views, routines, triggers and events.

use std::collections::BTreeMap;

use super::fingerprint::{is_generated_extra, ColumnInfo};
use anyhow::{Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

use super::errors::explain;
use super::sqlfmt::{header, ident, quoted, ValueKind};
use super::MariadbConfig;

/// Databases never dumped.
pub const SYSTEM_DATABASES: [&str; 4] =
    ["mysql", "information_schema", "performance_schema", "sys"];

/// A database to dump.
pub use crate::model::mariadb_info::DatabaseInfo as Database;

/// A column with how its values are written.
#[derive(Debug, Clone)]
pub struct Column {
    pub info: ColumnInfo,
    pub kind: ValueKind,
    /// `COLUMN_TYPE`, e.g. `int(10) unsigned`, `varchar(32)`.
    pub column_type: String,
}

/// How a table's rows are cut into items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// One item.
    Whole,
    /// Integer primary key `col`: item = bucket `key div width`.
    IntBuckets { width: i128, min: i128, max: i128 },
    /// Hex-uuid `varchar` primary key: item = first `chars` characters.
    HexPrefix { chars: u32 },
}

/// A base table to dump.
#[derive(Debug, Clone)]
pub struct Table {
    pub db: String,
    pub name: String,
    pub engine: String,
    /// InnoDB (read in the snapshot); anything else is read under a table read lock.
    pub transactional: bool,
    /// Every column, in ordinal order (generated ones flagged).
    pub columns: Vec<Column>,
    /// Primary-key columns in key order (empty: none).
    pub pk: Vec<String>,
    /// `information_schema.TABLES.TABLE_ROWS` (an estimate for InnoDB).
    pub estimated_rows: u64,
    pub split: Split,
}

impl Table {
    /// `db.table`, the key of fingerprints.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    /// The dumped (non-generated) columns.
    pub fn data_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.info.generated)
    }

    /// `ORDER BY` list: the primary key, else every dumped column.
    pub fn order_by(&self) -> String {
        if self.pk.is_empty() {
            self.data_columns()
                .map(|c| ident(&c.info.name))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            self.pk
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// A view, routine, trigger or event name within a database.
#[derive(Debug, Clone)]
pub struct Objects {
    pub views: Vec<String>,
    /// (type `PROCEDURE`/`FUNCTION`, name)
    pub routines: Vec<(String, String)>,
    /// trigger names in creation order (table, action order)
    pub triggers: Vec<String>,
    pub events: Vec<String>,
    /// Sequences (MariaDB 10.3+): not dumped, reported.
    pub sequences: Vec<String>,
}

/// What discovery found.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub databases: Vec<Database>,
    pub tables: Vec<Table>,
    pub objects: BTreeMap<String, Objects>,
}

fn col_str(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i) {
        Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn in_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quoted(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Find the databases, tables, columns, keys and objects to dump.
pub async fn discover(
    conn: &mut Conn,
    cfg: &MariadbConfig,
    only: Option<&[String]>,
    addr: &str,
) -> Result<Catalog> {
    let databases = databases(conn, cfg, only, addr).await?;
    let mut cat = Catalog {
        databases,
        tables: Vec::new(),
        objects: BTreeMap::new(),
    };
    if cat.databases.is_empty() {
        return Ok(cat);
    }
    let names: Vec<String> = cat.databases.iter().map(|d| d.name.clone()).collect();
    let dbs = in_list(&names);
    tables_and_views(conn, cfg, &mut cat, &names, &dbs, addr).await?;
    columns_and_keys(conn, &mut cat, &dbs, addr).await?;
    routines_triggers_events(conn, cfg, &mut cat, &dbs, addr).await?;
    Ok(cat)
}

/// The databases to dump: `only`, else `[mariadb] databases` (each must exist), else every
/// database but the system ones.
async fn databases(
    conn: &mut Conn,
    cfg: &MariadbConfig,
    only: Option<&[String]>,
    addr: &str,
) -> Result<Vec<Database>> {
    let rows: Vec<Row> = conn
        .query(
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
             FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        )
        .await
        .map_err(|e| explain(e, addr, "listing databases"))?;
    let mut all = Vec::new();
    for r in rows {
        all.push(Database {
            name: col_str(&r, 0).unwrap_or_default(),
            charset: col_str(&r, 1).unwrap_or_default(),
            collation: col_str(&r, 2).unwrap_or_default(),
        });
    }
    let wanted: Option<Vec<String>> = only.map(|o| o.to_vec()).or_else(|| cfg.databases.clone());
    Ok(match &wanted {
        Some(list) => {
            let mut out = Vec::new();
            for name in list {
                match all.iter().find(|d| &d.name == name) {
                    Some(d) => out.push(d.clone()),
                    None => anyhow::bail!(
                        "database {name:?} (from [mariadb] databases) does not exist on {addr} or \
                         is not visible to this user; fix the list or grant the user access"
                    ),
                }
            }
            out
        }
        None => all
            .into_iter()
            .filter(|d| !SYSTEM_DATABASES.contains(&d.name.as_str()))
            .collect(),
    })
}

/// The base tables (not excluded) and the views and sequences of the databases `names` (`dbs`:
/// their SQL list).
async fn tables_and_views(
    conn: &mut Conn,
    cfg: &MariadbConfig,
    cat: &mut Catalog,
    names: &[String],
    dbs: &str,
    addr: &str,
) -> Result<()> {
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, IFNULL(ENGINE, ''), IFNULL(TABLE_ROWS, 0) \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({dbs}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ))
        .await
        .map_err(|e| explain(e, addr, "listing tables"))?;
    for name in names {
        cat.objects.insert(
            name.clone(),
            Objects {
                views: vec![],
                routines: vec![],
                triggers: vec![],
                events: vec![],
                sequences: vec![],
            },
        );
    }
    for r in rows {
        let db = col_str(&r, 0).unwrap_or_default();
        let name = col_str(&r, 1).unwrap_or_default();
        let ttype = col_str(&r, 2).unwrap_or_default();
        let engine = col_str(&r, 3).unwrap_or_default();
        let est: u64 = col_str(&r, 4).and_then(|s| s.parse().ok()).unwrap_or(0);
        let objs = cat.objects.get_mut(&db).expect("db listed");
        match ttype.as_str() {
            "VIEW" => objs.views.push(name),
            "SEQUENCE" => objs.sequences.push(name),
            "BASE TABLE" | "SYSTEM VERSIONED" => {
                if cfg.is_excluded(&db, &name) {
                    continue;
                }
                let transactional = engine.eq_ignore_ascii_case("InnoDB");
                cat.tables.push(Table {
                    db,
                    name,
                    engine,
                    transactional,
                    columns: vec![],
                    pk: vec![],
                    estimated_rows: est,
                    split: Split::Whole,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The columns and primary keys of the tables found.
async fn columns_and_keys(conn: &mut Conn, cat: &mut Catalog, dbs: &str, addr: &str) -> Result<()> {
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, LOWER(DATA_TYPE), COLUMN_TYPE, EXTRA \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({dbs}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
        ))
        .await
        .map_err(|e| explain(e, addr, "listing columns"))?;
    let mut idx: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, t) in cat.tables.iter().enumerate() {
        idx.insert((t.db.clone(), t.name.clone()), i);
    }
    for r in rows {
        let key = (
            col_str(&r, 0).unwrap_or_default(),
            col_str(&r, 1).unwrap_or_default(),
        );
        let Some(&i) = idx.get(&key) else { continue };
        let data_type = col_str(&r, 3).unwrap_or_default();
        cat.tables[i].columns.push(Column {
            kind: ValueKind::of(&data_type),
            info: ColumnInfo {
                name: col_str(&r, 2).unwrap_or_default(),
                data_type,
                generated: is_generated_extra(&col_str(&r, 5).unwrap_or_default()),
            },
            column_type: col_str(&r, 4).unwrap_or_default(),
        });
    }

    // Primary keys.
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA IN ({dbs}) AND INDEX_NAME = 'PRIMARY' \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, SEQ_IN_INDEX"
        ))
        .await
        .map_err(|e| explain(e, addr, "listing primary keys"))?;
    for r in rows {
        let key = (
            col_str(&r, 0).unwrap_or_default(),
            col_str(&r, 1).unwrap_or_default(),
        );
        if let Some(&i) = idx.get(&key) {
            cat.tables[i].pk.push(col_str(&r, 2).unwrap_or_default());
        }
    }
    Ok(())
}

/// The routines, triggers (of tables not excluded) and events of the databases `dbs`.
async fn routines_triggers_events(
    conn: &mut Conn,
    cfg: &MariadbConfig,
    cat: &mut Catalog,
    dbs: &str,
    addr: &str,
) -> Result<()> {
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA IN ({dbs}) AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION') \
             ORDER BY ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME"
        ))
        .await
        .map_err(|e| explain(e, addr, "listing routines"))?;
    for r in rows {
        let db = col_str(&r, 0).unwrap_or_default();
        if let Some(o) = cat.objects.get_mut(&db) {
            o.routines.push((
                col_str(&r, 1).unwrap_or_default(),
                col_str(&r, 2).unwrap_or_default(),
            ));
        }
    }
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA IN ({dbs}) \
             ORDER BY TRIGGER_SCHEMA, EVENT_OBJECT_TABLE, ACTION_ORDER, TRIGGER_NAME"
        ))
        .await
        .map_err(|e| explain(e, addr, "listing triggers"))?;
    for r in rows {
        let db = col_str(&r, 0).unwrap_or_default();
        let table = col_str(&r, 2).unwrap_or_default();
        if cfg.is_excluded(&db, &table) {
            continue;
        }
        if let Some(o) = cat.objects.get_mut(&db) {
            o.triggers.push(col_str(&r, 1).unwrap_or_default());
        }
    }
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS \
             WHERE EVENT_SCHEMA IN ({dbs}) ORDER BY EVENT_SCHEMA, EVENT_NAME"
        ))
        .await
        .map_err(|e| explain(e, addr, "listing events"))?;
    for r in rows {
        let db = col_str(&r, 0).unwrap_or_default();
        if let Some(o) = cat.objects.get_mut(&db) {
            o.events.push(col_str(&r, 1).unwrap_or_default());
        }
    }
    Ok(())
}

/// Decide how to split each table (see [`Split`]), reading key bounds and, for hex-uuid keys,
/// the row count. Boundaries depend only on `split_rows` and the key values, so an unchanged
/// range gives an identical item from one run to the next.
pub async fn plan_splits(
    conn: &mut Conn,
    tables: &mut [Table],
    split_rows: u64,
    addr: &str,
) -> Result<()> {
    for t in tables.iter_mut() {
        t.split = Split::Whole;
        if t.pk.len() != 1 {
            continue;
        }
        let Some(col) = t.columns.iter().find(|c| c.info.name == t.pk[0]) else {
            continue;
        };
        let dt = col.info.data_type.as_str();
        let q = format!("{}.{}", ident(&t.db), ident(&t.name));
        if matches!(dt, "tinyint" | "smallint" | "mediumint" | "int" | "bigint") {
            let row: Option<(Option<String>, Option<String>)> = conn
                .query_first(format!(
                    "SELECT MIN({c}), MAX({c}) FROM {q}",
                    c = ident(&t.pk[0])
                ))
                .await
                .map_err(|e| explain(e, addr, &format!("reading the key range of {q}")))?;
            let (Some(Some(lo)), Some(Some(hi))) =
                (row.as_ref().map(|r| r.0.clone()), row.map(|r| r.1))
            else {
                continue;
            };
            let (lo, hi): (i128, i128) = (lo.parse().unwrap_or(0), hi.parse().unwrap_or(0));
            let width = split_rows as i128;
            if lo.div_euclid(width) != hi.div_euclid(width) {
                t.split = Split::IntBuckets {
                    width,
                    min: lo,
                    max: hi,
                };
            }
        } else if matches!(dt, "varchar" | "char")
            && (col.column_type.starts_with("varchar(32)")
                || col.column_type.starts_with("char(32)"))
        {
            if t.estimated_rows < split_rows / 4 {
                continue;
            }
            let n: Option<u64> = conn
                .query_first(format!("SELECT COUNT(*) FROM {q}"))
                .await
                .map_err(|e| explain(e, addr, &format!("counting the rows of {q}")))?;
            let n = n.unwrap_or(0);
            let mut chars = 0u32;
            let mut cap = split_rows;
            while n > cap && chars < 3 {
                chars += 1;
                cap = cap.saturating_mul(16);
            }
            if chars > 0 {
                t.split = Split::HexPrefix { chars };
            }
        }
    }
    Ok(())
}

/// Run a `SHOW CREATE ...` and return the row, with a clear error when the privilege is missing.
async fn show_create(conn: &mut Conn, sql: String, addr: &str) -> Result<Row> {
    let row: Option<Row> = conn
        .query_first(sql.clone())
        .await
        .map_err(|e| explain(e, addr, &format!("running {sql}")))?;
    row.ok_or_else(|| {
        anyhow::anyhow!(
            "{sql} returned nothing on {addr}; was the object dropped during the backup? Retry"
        )
    })
}

fn need(row: &Row, i: usize, sql_what: &str) -> Result<String> {
    col_str(row, i).ok_or_else(|| {
        anyhow::anyhow!(
            "the server did not show the definition of {sql_what} (it returns NULL when the \
             backup user lacks the privilege to see it); grant the backup user SELECT on \
             mysql.* (or SHOW CREATE ROUTINE on MariaDB 11.3+)"
        )
    })
}

/// Remove the ` AUTO_INCREMENT=N` table option (the counter is kept in the source info instead,
/// so schema items do not change with every insert).
pub fn strip_auto_increment(create: &str) -> String {
    // SHOW CREATE TABLE puts the table options on the line that starts with `)` after the
    // column list; only that line is touched (comments and partition clauses stay as they are).
    let Some(start) = create.find("\n)") else {
        return create.to_string();
    };
    let end = create[start + 1..]
        .find('\n')
        .map(|i| start + 1 + i)
        .unwrap_or(create.len());
    let line = &create[start..end];
    let mut out = String::with_capacity(create.len());
    out.push_str(&create[..start]);
    let mut rest = line;
    while let Some(i) = rest.find(" AUTO_INCREMENT=") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " AUTO_INCREMENT=".len()..];
        let digits = after.bytes().take_while(|b| b.is_ascii_digit()).count();
        rest = &after[digits..];
    }
    out.push_str(rest);
    out.push_str(&create[end..]);
    out
}

/// The schema item of one database: `CREATE DATABASE`, every dumped base table, and a
/// placeholder view for every view (replaced by the real one in the views item, so views can
/// refer to each other, and to views of other databases, in any order).
pub async fn schema_item(
    conn: &mut Conn,
    db: &Database,
    tables: &[&Table],
    views: &[String],
    addr: &str,
) -> Result<Vec<u8>> {
    let mut s = header(&format!("schema of database {}", ident(&db.name)), None);
    let row = show_create(
        conn,
        format!("SHOW CREATE DATABASE {}", ident(&db.name)),
        addr,
    )
    .await?;
    let create = need(&row, 1, &format!("database {}", db.name))?;
    let create = create.replacen("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1);
    s.push_str(&format!("{create};\nUSE {};\n", ident(&db.name)));
    for t in tables {
        let row = show_create(
            conn,
            format!("SHOW CREATE TABLE {}.{}", ident(&t.db), ident(&t.name)),
            addr,
        )
        .await?;
        let create = need(&row, 1, &format!("table {}", t.full_name()))?;
        s.push_str(&format!("\n{};\n", strip_auto_increment(&create)));
    }
    if !views.is_empty() {
        s.push_str("\n-- placeholders for the views (replaced in the views item)\n");
        for v in views {
            let cols: Vec<String> = conn
                .query(format!(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} \
                     AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                    quoted(&db.name),
                    quoted(v)
                ))
                .await
                .map_err(|e| explain(e, addr, &format!("reading the columns of view {v}")))?;
            let list = if cols.is_empty() {
                "1 AS `placeholder`".to_string()
            } else {
                cols.iter()
                    .map(|c| format!("1 AS {}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            s.push_str(&format!(
                "CREATE OR REPLACE VIEW {} AS SELECT {list};\n",
                ident(v)
            ));
        }
    }
    Ok(s.into_bytes())
}

fn session_block(sql_mode: Option<&str>, cs_client: Option<&str>, coll: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(m) = sql_mode {
        s.push_str(&format!("SET sql_mode = {};;\n", quoted(m)));
    }
    if let Some(c) = cs_client {
        s.push_str(&format!("SET character_set_client = {};;\n", quoted(c)));
        s.push_str(&format!("SET character_set_results = {};;\n", quoted(c)));
    }
    if let Some(c) = coll {
        s.push_str(&format!("SET collation_connection = {};;\n", quoted(c)));
    }
    s
}

/// The views item: every view of the database, `CREATE OR REPLACE` over its placeholder.
pub async fn views_item(
    conn: &mut Conn,
    db: &str,
    views: &[String],
    addr: &str,
) -> Result<Vec<u8>> {
    let mut s = header(&format!("views of database {}", ident(db)), Some(db));
    s.push_str("DELIMITER ;;\n");
    for v in views {
        let row = show_create(
            conn,
            format!("SHOW CREATE VIEW {}.{}", ident(db), ident(v)),
            addr,
        )
        .await?;
        let create = need(&row, 1, &format!("view {db}.{v}"))?;
        let create = create.replacen("CREATE ", "CREATE OR REPLACE ", 1);
        s.push_str(&session_block(
            None,
            col_str(&row, 2).as_deref(),
            col_str(&row, 3).as_deref(),
        ));
        s.push_str(&format!("{create};;\n"));
    }
    s.push_str("DELIMITER ;\n");
    Ok(s.into_bytes())
}

/// The routines item: procedures and functions, each with its own sql_mode and character set.
/// Routines whose definition the user may not see (not the definer, no SELECT on mysql.proc)
/// are left out and named in `hidden` (`procedure db.name`); the caller records the gap.
pub async fn routines_item(
    conn: &mut Conn,
    db: &str,
    routines: &[(String, String)],
    addr: &str,
    hidden: &mut Vec<String>,
) -> Result<Vec<u8>> {
    let mut s = header(
        &format!("stored procedures and functions of database {}", ident(db)),
        Some(db),
    );
    s.push_str("DELIMITER ;;\n");
    for (kind, name) in routines {
        let row = show_create(
            conn,
            format!("SHOW CREATE {kind} {}.{}", ident(db), ident(name)),
            addr,
        )
        .await?;
        let what = format!("{} {db}.{name}", kind.to_lowercase());
        let Ok(create) = need(&row, 2, &what) else {
            hidden.push(what);
            continue;
        };
        s.push_str(&format!("DROP {kind} IF EXISTS {};;\n", ident(name)));
        s.push_str(&session_block(
            col_str(&row, 1).as_deref(),
            col_str(&row, 3).as_deref(),
            col_str(&row, 4).as_deref(),
        ));
        s.push_str(&format!("{create};;\n"));
    }
    s.push_str("DELIMITER ;\n");
    Ok(s.into_bytes())
}

/// Where `SHOW CREATE TRIGGER` / `SHOW CREATE EVENT` put what an item needs.
struct ShowCreate {
    keyword: &'static str,
    plural: &'static str,
    create: usize,
    sql_mode: usize,
    charset: usize,
    collation: usize,
    time_zone: Option<usize>,
}

const TRIGGERS: ShowCreate = ShowCreate {
    keyword: "TRIGGER",
    plural: "triggers",
    create: 2,
    sql_mode: 1,
    charset: 3,
    collation: 4,
    time_zone: None,
};

const EVENTS: ShowCreate = ShowCreate {
    keyword: "EVENT",
    plural: "events",
    create: 3,
    sql_mode: 1,
    charset: 4,
    collation: 5,
    time_zone: Some(2),
};

/// An item of triggers or events: each dropped and recreated with its own session settings.
async fn show_create_item(
    conn: &mut Conn,
    db: &str,
    names: &[String],
    addr: &str,
    k: &ShowCreate,
) -> Result<Vec<u8>> {
    let mut s = header(&format!("{} of database {}", k.plural, ident(db)), Some(db));
    s.push_str("DELIMITER ;;\n");
    for name in names {
        let row = show_create(
            conn,
            format!("SHOW CREATE {} {}.{}", k.keyword, ident(db), ident(name)),
            addr,
        )
        .await?;
        let what = format!("{} {db}.{name}", k.keyword.to_lowercase());
        let create = need(&row, k.create, &what)?;
        s.push_str(&format!("DROP {} IF EXISTS {};;\n", k.keyword, ident(name)));
        s.push_str(&session_block(
            col_str(&row, k.sql_mode).as_deref(),
            col_str(&row, k.charset).as_deref(),
            col_str(&row, k.collation).as_deref(),
        ));
        if let Some(tz) = k.time_zone.and_then(|i| col_str(&row, i)) {
            s.push_str(&format!("SET time_zone = {};;\n", quoted(&tz)));
        }
        s.push_str(&format!("{create};;\n"));
    }
    s.push_str("DELIMITER ;\n");
    Ok(s.into_bytes())
}

/// The triggers item, in creation order (table, action order).
pub async fn triggers_item(
    conn: &mut Conn,
    db: &str,
    triggers: &[String],
    addr: &str,
) -> Result<Vec<u8>> {
    show_create_item(conn, db, triggers, addr, &TRIGGERS).await
}

/// The events item, each with its sql_mode and time zone.
pub async fn events_item(
    conn: &mut Conn,
    db: &str,
    events: &[String],
    addr: &str,
) -> Result<Vec<u8>> {
    show_create_item(conn, db, events, addr, &EVENTS).await
}

/// AUTO_INCREMENT counters of the dumped tables (`db.table` -> next value).
pub async fn auto_increments(
    conn: &mut Conn,
    dbs: &[String],
    addr: &str,
) -> Result<BTreeMap<String, u64>> {
    if dbs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, String, u64)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA IN ({}) AND AUTO_INCREMENT IS NOT NULL AND TABLE_TYPE = 'BASE TABLE'",
            in_list(dbs)
        ))
        .await
        .map_err(|e| explain(e, addr, "reading AUTO_INCREMENT counters"))
        .context("reading AUTO_INCREMENT counters")?;
    Ok(rows
        .into_iter()
        .map(|(d, t, n)| (format!("{d}.{t}"), n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_counter_only_in_options() {
        let c = "CREATE TABLE `t` (\n  `id` int NOT NULL AUTO_INCREMENT COMMENT ' AUTO_INCREMENT=5',\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4";
        let s = strip_auto_increment(c);
        assert!(s.contains("COMMENT ' AUTO_INCREMENT=5'"));
        assert!(
            s.ends_with(") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"),
            "{s}"
        );
    }
}
