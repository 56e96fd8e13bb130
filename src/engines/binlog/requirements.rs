//! What a server must have for binlog capture, checked rather than assumed: typed results
//! with what to set in `my.cnf` (or which grant to give) when a setting is not right.

use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Capture works, but not as well as it could (MIXED or STATEMENT format, no checksums,
    /// short expiry).
    Warning,
    /// Capture cannot work.
    Error,
}

/// One checked setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `log_bin`, `binlog_format`, `server_id`, `binlog_checksum`, `binlog_expire`,
    /// `privileges`.
    pub setting: String,
    /// What the server has.
    pub found: String,
    pub level: Level,
    /// What to set (a `my.cnf` line under `[mariadbd]`, or the GRANT to run).
    pub fix: Option<String>,
}

fn finding(setting: &str, found: impl Into<String>, level: Level, fix: Option<String>) -> Finding {
    Finding {
        setting: setting.into(),
        found: found.into(),
        level,
        fix,
    }
}

/// Inputs the check needs from the configuration.
#[derive(Debug, Clone)]
pub struct RequirementInputs {
    /// The `server_id` capture registers with (must differ from the server's).
    pub capture_server_id: u32,
    /// How long binlogs must stay on the server so the follower can catch up after downtime.
    pub min_retention_seconds: u64,
}

/// Pure evaluation of the server's values (testable without a server).
#[derive(Debug, Clone, Default)]
pub struct ServerValues {
    pub log_bin: bool,
    pub binlog_format: String,
    pub server_id: u32,
    pub binlog_checksum: String,
    /// Effective expiry in seconds (0: never).
    pub expire_seconds: u64,
    /// `SHOW GRANTS` lines of the capture user.
    pub grants: Vec<String>,
}

/// Evaluate `v` against what capture needs.
pub fn evaluate(v: &ServerValues, inp: &RequirementInputs) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(if v.log_bin {
        finding("log_bin", "ON", Level::Ok, None)
    } else {
        finding(
            "log_bin",
            "OFF",
            Level::Error,
            Some("log_bin = mariadb-bin".into()),
        )
    });
    let fmt = v.binlog_format.to_ascii_uppercase();
    out.push(match fmt.as_str() {
        "ROW" => finding("binlog_format", fmt, Level::Ok, None),
        "MIXED" => finding(
            "binlog_format",
            fmt,
            Level::Ok,
            Some("binlog_format = ROW (recommended)".into()),
        ),
        _ => finding(
            "binlog_format",
            fmt,
            Level::Warning,
            Some(
                "binlog_format = ROW (STATEMENT replays non-deterministic statements differently)"
                    .into(),
            ),
        ),
    });
    out.push(if v.server_id == 0 {
        finding("server_id", "0", Level::Error, Some("server_id = 1".into()))
    } else if v.server_id == inp.capture_server_id {
        finding(
            "server_id",
            v.server_id.to_string(),
            Level::Error,
            Some(format!(
                "server_id = 1 (capture registers as {}; they must differ)",
                inp.capture_server_id
            )),
        )
    } else {
        finding("server_id", v.server_id.to_string(), Level::Ok, None)
    });
    let ck = v.binlog_checksum.to_ascii_uppercase();
    out.push(if ck == "CRC32" {
        finding("binlog_checksum", ck, Level::Ok, None)
    } else {
        finding(
            "binlog_checksum",
            ck,
            Level::Warning,
            Some("binlog_checksum = CRC32 (events cannot be verified without it)".into()),
        )
    });
    let min = inp.min_retention_seconds;
    out.push(if v.expire_seconds == 0 || v.expire_seconds >= min {
        finding(
            "binlog_expire",
            format!("{} s", v.expire_seconds),
            Level::Ok,
            None,
        )
    } else {
        finding(
            "binlog_expire",
            format!("{} s", v.expire_seconds),
            Level::Warning,
            Some(format!(
                "binlog_expire_logs_seconds = {min} (expire_logs_days = {} before MariaDB 10.6)",
                min.div_ceil(86_400)
            )),
        )
    });
    out.push(privileges(&v.grants));
    out
}

fn privileges(grants: &[String]) -> Finding {
    let on_all: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    let has = |p: &[&str]| {
        on_all
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || p.iter().any(|x| g.contains(x)))
    };
    let repl = has(&["REPLICATION SLAVE", "REPLICATION REPLICA"]);
    let monitor = has(&["BINLOG MONITOR", "REPLICATION CLIENT", "SUPER"]);
    let mut missing = Vec::new();
    if !repl {
        missing.push("REPLICATION SLAVE");
    }
    if !monitor {
        missing.push("BINLOG MONITOR");
    }
    if missing.is_empty() {
        return finding(
            "privileges",
            "REPLICATION SLAVE, BINLOG MONITOR",
            Level::Ok,
            None,
        );
    }
    finding(
        "privileges",
        format!("missing {}", missing.join(", ")),
        Level::Error,
        Some(format!(
            "GRANT {} ON *.* TO <the backup user>",
            missing.join(", ")
        )),
    )
}

/// Read the values from the server and evaluate them.
pub async fn check_requirements(
    conn: &mut mysql_async::Conn,
    inp: &RequirementInputs,
) -> anyhow::Result<Vec<Finding>> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<u32>,
        Option<String>,
        Option<f64>,
    );
    let row: Option<Row> = conn
        .query_first(
            "SELECT CAST(@@log_bin AS CHAR), @@binlog_format, @@server_id, @@binlog_checksum, \
             CAST(@@expire_logs_days AS DOUBLE)",
        )
        .await?;
    let (log_bin, format, server_id, checksum, days) = row.unwrap_or_default();
    // MariaDB >= 10.6 has binlog_expire_logs_seconds (expire_logs_days is derived from it).
    let secs: Option<u64> = conn
        .query_first("SELECT @@binlog_expire_logs_seconds")
        .await
        .ok()
        .flatten();
    let expire_seconds = secs.unwrap_or_else(|| (days.unwrap_or(0.0) * 86_400.0) as u64);
    let grants: Vec<String> = conn.query("SHOW GRANTS FOR CURRENT_USER()").await?;
    let v = ServerValues {
        log_bin: matches!(log_bin.as_deref(), Some("1") | Some("ON")),
        binlog_format: format.unwrap_or_default(),
        server_id: server_id.unwrap_or(0),
        binlog_checksum: checksum.unwrap_or_default(),
        expire_seconds,
        grants,
    };
    Ok(evaluate(&v, inp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ServerValues {
        ServerValues {
            log_bin: true,
            binlog_format: "ROW".into(),
            server_id: 1,
            binlog_checksum: "CRC32".into(),
            expire_seconds: 0,
            grants: vec!["GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `b`@`%`".into()],
        }
    }
    const INP: RequirementInputs = RequirementInputs {
        capture_server_id: 99,
        min_retention_seconds: 7 * 86_400,
    };

    #[test]
    fn a_good_server_passes_and_each_fault_names_its_fix() {
        assert!(evaluate(&good(), &INP).iter().all(|f| f.level == Level::Ok));
        let mut v = good();
        v.log_bin = false;
        v.binlog_format = "STATEMENT".into();
        v.server_id = 99;
        v.binlog_checksum = "NONE".into();
        v.expire_seconds = 86_400;
        v.grants = vec!["GRANT SELECT ON *.* TO `b`@`%`".into()];
        let f = evaluate(&v, &INP);
        assert!(
            f.iter().all(|f| f.level != Level::Ok && f.fix.is_some()),
            "{f:#?}"
        );
        assert!(f[4].fix.as_deref().unwrap().contains("604800"));
    }
}
