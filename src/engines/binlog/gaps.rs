//! Where a capture stands and why it may not be able to continue: the typed gaps.

use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

use super::event::{parse_gtid_list, Gtid};

/// A position in the source's binlog: file, offset and the GTID position there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
    /// Last GTID per domain at this point (`@@gtid_binlog_pos` form); may be empty.
    pub gtid_pos: Vec<Gtid>,
}

/// Why the stored binlog chain is not continuous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gap {
    /// The server purged binlogs the follower had not stored yet (error 1236, or the file is
    /// older than the oldest the server still has).
    #[error(
        "binlog gap: the server no longer has {} (position {}); its oldest binlog is {}",
        wanted.file, wanted.pos, oldest_available.as_deref().unwrap_or("none")
    )]
    Purged {
        wanted: BinlogPos,
        oldest_available: Option<String>,
        server_message: Option<String>,
    },
    /// The binlog was reset (`RESET MASTER`): the file is gone or shorter than the stored
    /// position, or the server's GTID position is behind the stored one.
    #[error(
        "binlog gap: the server's binlog was reset (RESET MASTER?): it does not continue {}:{} \
         ({reason})", wanted.file, wanted.pos
    )]
    Reset { wanted: BinlogPos, reason: String },
    /// The server started a new binlog after a restart. After a clean shutdown (the old file
    /// ends with a Stop event) nothing is lost; after a crash the chain is treated as broken.
    #[error(
        "server restart: binlog {new_file} began after {} ended {}", previous.file,
        if *clean_shutdown { "with a clean shutdown" } else { "without a Stop event (crash?)" }
    )]
    Restart {
        previous: BinlogPos,
        new_file: String,
        clean_shutdown: bool,
    },
}

impl Gap {
    /// Whether the stored chain is broken here (the next full snapshot starts a new chain).
    pub fn breaks_chain(&self) -> bool {
        !matches!(
            self,
            Gap::Restart {
                clean_shutdown: true,
                ..
            }
        )
    }
}

/// The number in `binlog.000042`.
pub(crate) fn file_index(name: &str) -> Option<u64> {
    name.rsplit('.').next()?.parse().ok()
}

/// The server's binary logs: (name, size), oldest first.
pub async fn binary_logs(conn: &mut mysql_async::Conn) -> mysql_async::Result<Vec<(String, u64)>> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let name: String = r.get(0)?;
            let size: u64 = r.get(1)?;
            Some((name, size))
        })
        .collect())
}

/// The server's current write position (`SHOW MASTER STATUS` and `@@gtid_binlog_pos`), what a
/// snapshot records at its consistent point.
pub async fn current_position(conn: &mut mysql_async::Conn) -> anyhow::Result<BinlogPos> {
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let row = row.ok_or_else(|| anyhow::anyhow!("SHOW MASTER STATUS is empty: log_bin is off"))?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or_default();
    let gtid: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").await?;
    let gtid_pos = parse_gtid_list(&gtid.unwrap_or_default()).map_err(anyhow::Error::msg)?;
    Ok(BinlogPos {
        file,
        pos,
        gtid_pos,
    })
}

/// Whether `from` can be resumed on this server; the gap when not.
///
/// Looks at `SHOW BINARY LOGS` (the file must still be there and at least `pos` long) and
/// at `@@gtid_binlog_state` (every domain's sequence must not be behind `from`'s).
pub async fn check_resume(
    conn: &mut mysql_async::Conn,
    from: &BinlogPos,
) -> anyhow::Result<Option<Gap>> {
    let logs = binary_logs(conn).await?;
    let oldest = logs.first().map(|(n, _)| n.clone());
    match logs.iter().find(|(n, _)| *n == from.file) {
        Some((_, size)) if *size < from.pos => {
            return Ok(Some(Gap::Reset {
                wanted: from.clone(),
                reason: format!("{} is now {size} bytes long", from.file),
            }))
        }
        Some(_) => {}
        None => {
            let (want, first) = (
                file_index(&from.file),
                oldest.as_deref().and_then(file_index),
            );
            let gap = match (want, first) {
                (Some(w), Some(f)) if w >= f => Gap::Reset {
                    wanted: from.clone(),
                    reason: format!("{} is missing, but older {} is there", from.file, f),
                },
                _ => Gap::Purged {
                    wanted: from.clone(),
                    oldest_available: oldest,
                    server_message: None,
                },
            };
            return Ok(Some(gap));
        }
    }
    let state: Option<String> = conn.query_first("SELECT @@gtid_binlog_state").await?;
    let state = parse_gtid_list(&state.unwrap_or_default()).map_err(anyhow::Error::msg)?;
    for g in &from.gtid_pos {
        let ahead = state
            .iter()
            .filter(|s| s.domain == g.domain)
            .map(|s| s.seq)
            .max();
        if ahead.is_none_or(|s| s < g.seq) {
            return Ok(Some(Gap::Reset {
                wanted: from.clone(),
                reason: format!("the server's GTID state has no {g} (it is {state:?})"),
            }));
        }
    }
    Ok(None)
}
