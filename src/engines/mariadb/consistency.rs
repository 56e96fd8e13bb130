//! The consistent point: freezing non-transactional tables, blocking commits, opening the
//! snapshots, reading the binlog position, releasing.
//!
//! On MariaDB 10.4.1 and later ([`BlockMethod::BackupStage`]):
//!
//! 1. `BACKUP STAGE START`, `FLUSH`, `BLOCK_DDL`: no write to a non-transactional table (MyISAM,
//!    Aria, ...) can start any more, those in flight have ended, DDL waits; InnoDB commits go on.
//! 2. The workers read the non-transactional tables. They cannot change until `BACKUP STAGE END`,
//!    so what is read is their content at the point of step 3. (Taking `LOCK TABLES ... READ` and
//!    then a commit block deadlocks against a writer that waits on the table lock while holding
//!    the backup MDL lock, so the backup stages themselves are the lock.)
//! 3. `BACKUP STAGE BLOCK_COMMIT`: nothing commits. Every worker connection runs
//!    `START TRANSACTION WITH CONSISTENT SNAPSHOT` (REPEATABLE READ), and the binlog file/position
//!    and `@@gtid_binlog_pos` are read: all describe the same point.
//! 4. `BACKUP STAGE END`. The commit block (3–4) is `block_ms` of the source info, usually a
//!    few milliseconds; 1–4 is `nontransactional_lock_ms`, the time writes to non-transactional
//!    tables waited. InnoDB data is then read inside the snapshots while the server goes on.
//!
//! Older servers ([`BlockMethod::Ftwrl`]): `FLUSH TABLES WITH READ LOCK`, read the
//! non-transactional tables, open the snapshots, read the binlog position, `UNLOCK TABLES`.
//!
//! Without the RELOAD privilege ([`BlockMethod::SingleSnapshot`], e.g. with ZStack's own `zstack`
//! account): one worker connection, `LOCK TABLES ... READ` of the non-transactional tables on a
//! separate connection, the snapshot, the non-transactional tables, `UNLOCK TABLES`, then the
//! InnoDB tables from the one snapshot; the binlog position is the snapshot's
//! (`binlog_snapshot_file`/`_position`). A warning is recorded.
//!
//! A statement that wrote to a non-transactional table inside a transaction that had not yet
//! committed at the point is, as with any MariaDB backup, in the copy while the transaction's
//! InnoDB changes are not (non-transactional writes cannot be rolled back either).

use anyhow::Result;
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::Serialize;

use super::errors::explain;

pub use crate::model::mariadb_info::{BinlogPosition, BlockMethod};

/// The server's version string and whether it is MariaDB with `(major, minor, patch)`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerVersion {
    pub version: String,
    pub mariadb: bool,
    pub numeric: (u32, u32, u32),
}

impl ServerVersion {
    pub fn parse(version: &str) -> ServerVersion {
        let mut nums = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        let numeric = (
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
        );
        ServerVersion {
            version: version.to_string(),
            mariadb: version.to_ascii_lowercase().contains("mariadb"),
            numeric,
        }
    }

    /// The best way this server can block commits.
    pub fn block_method(&self) -> BlockMethod {
        if self.mariadb && self.numeric >= (10, 4, 1) {
            BlockMethod::BackupStage
        } else {
            BlockMethod::Ftwrl
        }
    }
}

/// `BACKUP STAGE START`, `FLUSH`, `BLOCK_DDL`: from now on no write to a non-transactional table
/// can start and those in flight have ended (and DDL waits), while InnoDB commits go on.
pub async fn freeze_nontransactional(ctl: &mut Conn, addr: &str) -> Result<()> {
    ctl.query_drop("BACKUP STAGE START")
        .await
        .map_err(|e| explain(e, addr, "starting BACKUP STAGE"))?;
    ctl.query_drop("BACKUP STAGE FLUSH")
        .await
        .map_err(|e| explain(e, addr, "BACKUP STAGE FLUSH"))?;
    ctl.query_drop("BACKUP STAGE BLOCK_DDL")
        .await
        .map_err(|e| explain(e, addr, "BACKUP STAGE BLOCK_DDL"))?;
    Ok(())
}

/// Block commits on the control connection (after [`freeze_nontransactional`] for BACKUP
/// STAGE).
pub async fn block(ctl: &mut Conn, method: BlockMethod, addr: &str) -> Result<()> {
    match method {
        BlockMethod::BackupStage => {
            ctl.query_drop("BACKUP STAGE BLOCK_COMMIT")
                .await
                .map_err(|e| explain(e, addr, "blocking commits with BACKUP STAGE BLOCK_COMMIT"))?;
        }
        BlockMethod::Ftwrl => {
            ctl.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(|e| {
                    explain(e, addr, "blocking commits with FLUSH TABLES WITH READ LOCK")
                })?;
        }
        BlockMethod::SingleSnapshot => {}
    }
    Ok(())
}

/// Release what [`block`] took.
pub async fn release(ctl: &mut Conn, method: BlockMethod, addr: &str) -> Result<()> {
    let sql = match method {
        BlockMethod::BackupStage => "BACKUP STAGE END",
        BlockMethod::Ftwrl => "UNLOCK TABLES",
        BlockMethod::SingleSnapshot => return Ok(()),
    };
    ctl.query_drop(sql)
        .await
        .map_err(|e| explain(e, addr, "releasing the commit block"))?;
    Ok(())
}

/// Read the binlog coordinates (call while commits are blocked).
pub async fn binlog_position(ctl: &mut Conn) -> Option<BinlogPosition> {
    let log_bin: Option<i64> = ctl.query_first("SELECT @@log_bin").await.ok().flatten();
    if log_bin != Some(1) {
        return None;
    }
    let gtid: Option<String> = ctl
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .ok()
        .flatten();
    match ctl
        .query_first::<mysql_async::Row, _>("SHOW MASTER STATUS")
        .await
    {
        Ok(Some(row)) => {
            let file = row.get_opt::<String, _>(0).and_then(|r| r.ok());
            let position = row.get_opt::<u64, _>(1).and_then(|r| r.ok());
            Some(BinlogPosition {
                file,
                position,
                gtid_binlog_pos: gtid,
                error: None,
            })
        }
        Ok(None) => Some(BinlogPosition {
            file: None,
            position: None,
            gtid_binlog_pos: gtid,
            error: Some("SHOW MASTER STATUS returned no row".into()),
        }),
        Err(e) => Some(BinlogPosition {
            file: None,
            position: None,
            gtid_binlog_pos: gtid,
            error: Some(format!(
                "SHOW MASTER STATUS failed: {e}; grant BINLOG MONITOR (or REPLICATION CLIENT) to \
                 record the binlog position"
            )),
        }),
    }
}

/// The binlog position of a session's consistent snapshot (`binlog_snapshot_file` and
/// `binlog_snapshot_position` status variables, MariaDB), for [`BlockMethod::SingleSnapshot`].
pub async fn snapshot_binlog_position(conn: &mut Conn) -> Option<BinlogPosition> {
    let log_bin: Option<i64> = conn.query_first("SELECT @@log_bin").await.ok().flatten();
    if log_bin != Some(1) {
        return None;
    }
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .unwrap_or_default();
    let get = |k: &str| {
        rows.iter()
            .find(|r| r.0.eq_ignore_ascii_case(k))
            .map(|r| r.1.clone())
    };
    Some(BinlogPosition {
        file: get("binlog_snapshot_file"),
        position: get("binlog_snapshot_position").and_then(|p| p.parse().ok()),
        gtid_binlog_pos: None,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = ServerVersion::parse("10.11.19-MariaDB-0+deb12u1-log");
        assert!(v.mariadb);
        assert_eq!(v.numeric, (10, 11, 19));
        assert_eq!(v.block_method(), BlockMethod::BackupStage);
        assert_eq!(
            ServerVersion::parse("10.3.39-MariaDB").block_method(),
            BlockMethod::Ftwrl
        );
        assert_eq!(
            ServerVersion::parse("8.0.36").block_method(),
            BlockMethod::Ftwrl
        );
    }
}
