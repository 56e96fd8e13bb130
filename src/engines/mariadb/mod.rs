//! The MariaDB engine, both directions: the `[mariadb]` source (consistent, parallel,
//! delta-friendly logical dumps over `mysql_async`, no `mysqldump` subprocess) and the restore
//! (plan, load, prove).
//!
//! Backup: [`config`], [`probe`], [`privileges`], [`consistency`], [`schema`], [`dump`],
//! [`users`], [`zstack`]. Shared by both halves: [`sql`] (splitting, renaming, quoting),
//! [`sqlfmt`] (literals and item headers), [`fingerprint`], [`plan`] (item kinds and names).
//! Restore: [`target`] (the server loaded into), [`load`] (the loader), [`prove`] (the
//! fingerprint and ZStack checks).
//!
//! # Items and load order
//!
//! Every item is plain SQL that the `mariadb` client loads (`mariadb < item.sql`), each starting
//! with its own session settings ([`sqlfmt::header`]). The item names sort in load order, so
//! loading every `mariadb/**.sql` item in name order rebuilds the server; the source info's
//! `load_plan` lists the same order explicitly:
//!
//! | item | content |
//! |---|---|
//! | `mariadb/0-accounts.sql` | `CREATE USER IF NOT EXISTS` + `ALTER USER` (with password hash and plugin) / `CREATE ROLE` for every account but the server's internal ones (root included) |
//! | `mariadb/1-schema/<db>.sql` | `CREATE DATABASE IF NOT EXISTS` (charset, collation), `CREATE TABLE`s (without the `AUTO_INCREMENT=` counter, which is in the source info), placeholder views |
//! | `mariadb/2-data/<db>/<table>.sql` | the rows of a table (one item) |
//! | `mariadb/2-data/<db>/<table>.<bucket>.sql` | rows of an integer-key table with `key div split_rows == bucket` (6+ digits; `n` prefix for negative) |
//! | `mariadb/2-data/<db>/<table>.<hex>.sql` | rows of a hex-uuid-key table whose key starts with `<hex>` (1–3 hex digits; the first and last buckets also take any key below/above) |
//! | `…/<name>.pN.sql` | continuation of an item that would exceed 64 MiB |
//! | `mariadb/3-routines/<db>.sql` | procedures and functions (`DELIMITER ;;` block) |
//! | `mariadb/4-views/<db>.sql` | `CREATE OR REPLACE` of every view over its placeholder |
//! | `mariadb/5-triggers/<db>.sql` | triggers, after the data so loading does not fire them |
//! | `mariadb/6-events/<db>.sql` | events |
//! | `mariadb/7-grants.sql` | `SHOW GRANTS` of every dumped account (last: table and routine grants need their objects) |
//!
//! Database and table names in item names are encoded by [`sqlfmt::name_component`]. Items with
//! stored code use `DELIMITER ;;` blocks; a native loader splits statements with
//! [`sqlfmt::split_statements`] (rules in [`sqlfmt`]). Items contain no timestamps or counters,
//! so an unchanged table (or key range) gives a byte-identical item.
//!
//! # Source info (`sources.mariadb` in the manifest)
//!
//! ```json
//! {
//!   "format": 1,
//!   "server": { "address": "127.0.0.1:3306", "version": "10.11.6-MariaDB", "user": "root" },
//!   "started": "2024-01-01T00:00:00Z", "finished": "…", "duration_ms": 1234,
//!   "consistency": { "method": "backup_stage", "block_ms": 3, "nontransactional_lock_ms": 40,
//!                    "nontransactional_tables": ["zstack.AuditsVO"] },
//!   "binlog": { "file": "bin.000003", "position": 1234, "gtid_binlog_pos": "0-1-42" },
//!   "databases": [ { "name": "zstack", "charset": "utf8mb3", "collation": "utf8mb3_general_ci" } ],
//!   "load_plan": [ { "item": "mariadb/0-accounts.sql", "kind": "accounts" },
//!                  { "item": "mariadb/1-schema/zstack.sql", "kind": "schema", "db": "zstack" },
//!                  { "item": "mariadb/2-data/zstack/HostEO.sql", "kind": "data", "db": "zstack",
//!                    "table": "HostEO", "rows": 10 }, … ],
//!   "fingerprints": { "zstack.HostEO": { "rows": 10, "hash": "…64 hex…" } },
//!   "auto_increment": { "zstack.AuditsVO": 1001 },
//!   "max_statement": { "zstack.AuditsVO": 181234 },
//!   "accounts": ["zstack@%"],
//!   "skipped": ["sequence db.seq: sequences are not dumped"],
//!   "warnings": ["no RELOAD privilege: …", "accounts and grants were not backed up: …"],
//!   "summary": { "databases": 3, "tables": 27, "rows": 25363, "items": 85, "bytes": 7996141,
//!                "block_ms": 1, "duration_ms": 129 },
//!   "extra_points": [ { "server": …, "consistency": …, "binlog": …, "databases": … } ]
//! }
//! ```
//!
//! `consistency.method` is `backup_stage`, `ftwrl` or `single_snapshot` (see [`consistency`]).
//! `extra_points` appears when `zstack_ui_properties` credentials dumped databases the main
//! credentials could not see (a second, separate consistent point).
//!
//! `binlog` is null when the binlog is off. `fingerprints` covers every dumped table (0 rows
//! included); see [`fingerprint`] for the definition.

mod backup;
pub mod component;
pub mod config;
pub mod consistency;
pub mod dump;
pub mod errors;
pub mod fingerprint;
pub mod load;
pub mod names;
pub mod plan;
pub mod privileges;
pub mod probe;
pub mod prove;
pub mod schema;
pub mod sql;
pub mod sqlfmt;
pub mod target;
pub mod users;
pub mod zstack;

use anyhow::Result;
use mysql_async::prelude::*;
use mysql_async::Conn;

pub use backup::backup;
pub use config::{ConnParams, MariadbConfig};
use errors::explain;

pub use crate::model::mariadb_info::MariadbSummary;

/// Session settings of every connection: utf8mb4 text, UTC timestamps, plain SQL quoting,
/// generous network timeouts (a worker may pause while the sink stores an item).
const SESSION_INIT: &str = "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = '', \
     SQL_QUOTE_SHOW_CREATE = 1, net_read_timeout = 3600, net_write_timeout = 3600, \
     wait_timeout = 28800";

pub async fn connect(opts: &mysql_async::Opts, params: &ConnParams, what: &str) -> Result<Conn> {
    let addr = params.address();
    let mut conn =
        match tokio::time::timeout(std::time::Duration::from_secs(30), Conn::new(opts.clone()))
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if let mysql_async::Error::Server(s) = &e {
                    if s.code == 1045 {
                        anyhow::bail!(
                        "MariaDB at {addr} refused user '{}' (password from {}): access denied \
                         ({}). Check [mariadb] user/password (or password_env, option_file, \
                         zstack_properties)",
                        params.user(),
                        params.password_source,
                        s.message
                    );
                    }
                }
                return Err(explain(e, &addr, what));
            }
            Err(_) => return Err(errors::connect_timeout(&addr, what, 30)),
        };
    let lock_wait = if params.lock_wait_seconds == 0 {
        120
    } else {
        params.lock_wait_seconds
    };
    conn.query_drop(format!("{SESSION_INIT}, lock_wait_timeout = {lock_wait}"))
        .await
        .map_err(|e| explain(e, &addr, "setting up the session"))?;
    Ok(conn)
}

/// After a lock wait timeout: name the tables that are locked and the connections that hold
/// them (`information_schema.METADATA_LOCK_INFO` when the plugin is loaded, else
/// `SHOW OPEN TABLES` and the process list), so the operator knows what to stop.
async fn lock_holders(opts: &mysql_async::Opts, params: &ConnParams) -> String {
    let Ok(mut c) = connect(opts, params, "looking for the lock holder").await else {
        return String::new();
    };
    let mut parts = Vec::new();
    let mdl: Result<Vec<(u64, String, String, String)>, _> = c
        .query(
            "SELECT m.THREAD_ID, m.LOCK_MODE, m.TABLE_SCHEMA, m.TABLE_NAME FROM \
             information_schema.METADATA_LOCK_INFO m JOIN information_schema.PROCESSLIST p \
             ON p.ID = m.THREAD_ID WHERE m.TABLE_NAME <> '' AND p.STATE NOT LIKE 'Waiting%' \
             ORDER BY 1",
        )
        .await;
    if let Ok(rows) = &mdl {
        for (id, mode, db, t) in rows {
            parts.push(format!("{db}.{t} held ({mode}) by connection {id}"));
        }
    }
    if parts.is_empty() {
        let open: Vec<mysql_async::Row> = c
            .query("SHOW OPEN TABLES WHERE In_use > 0")
            .await
            .unwrap_or_default();
        for r in open {
            let db: Option<String> = r.get_opt(0).and_then(|x| x.ok());
            let t: Option<String> = r.get_opt(1).and_then(|x| x.ok());
            if let (Some(db), Some(t)) = (db, t) {
                parts.push(format!("{db}.{t} is locked"));
            }
        }
    }
    // Connections that are neither ours nor waiting: the likely holders.
    let procs: Vec<(u64, String, String, String, u64, Option<String>)> = c
        .query(
            "SELECT ID, USER, HOST, COMMAND, TIME, STATE FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump') \
             AND USER <> 'system user' AND COALESCE(STATE, '') NOT LIKE 'Waiting%' ORDER BY TIME DESC",
        )
        .await
        .unwrap_or_default();
    let holders: Vec<String> = procs
        .iter()
        .take(5)
        .map(|p| {
            format!(
                "connection {} ({}@{}, {} for {} s)",
                p.0, p.1, p.2, p.3, p.4
            )
        })
        .collect();
    c.disconnect().await.ok();
    if parts.is_empty() && holders.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    if !parts.is_empty() {
        s.push_str(&format!("; {}", parts.join(", ")));
    }
    if !holders.is_empty() {
        s.push_str(&format!(
            "; other connections (the holder is among them; `KILL <id>` ends one, or wait until \
             it commits / runs UNLOCK TABLES): {}",
            holders.join(", ")
        ));
    }
    s
}
