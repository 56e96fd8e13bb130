//! `mnbackup check` for MariaDB: connect with the configured credentials and try, without
//! writing anything, every capability a complete snapshot needs (see [`super::privileges`]).

use anyhow::Result;
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::Serialize;

use super::consistency::{BlockMethod, ServerVersion};
use super::errors::{explain, is_privilege_error};
use super::sqlfmt::ident;
use super::{connect, privileges, MariadbConfig};

/// One capability: `ok`, or what is missing and the statement that fixes it.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// The exact statement(s) to run as root, for this server's version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
}

impl Capability {
    fn ok(name: &str, detail: impl Into<String>) -> Self {
        Capability {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: vec![],
        }
    }
    fn missing(name: &str, detail: impl Into<String>, fix: Vec<String>) -> Self {
        Capability {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix,
        }
    }
}

/// What `check` found on the server.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub address: String,
    pub version: String,
    /// `CURRENT_USER()` as `'user'@'host'`.
    pub account: String,
    pub capabilities: Vec<Capability>,
}

const SYSTEM_DBS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

fn priv_or(e: mysql_async::Error, addr: &str, what: &str) -> Result<anyhow::Error> {
    let e = explain(e, addr, what);
    if is_privilege_error(&e) {
        Ok(e)
    } else {
        Err(e)
    }
}

/// Probe the server of `cfg`. An error means no connection (or a non-privilege failure).
pub async fn probe(cfg: &MariadbConfig) -> Result<Probe> {
    let params = cfg.resolve()?;
    let addr = params.address();
    let opts = params.opts()?;
    let mut c = connect(&opts, &params, "connecting").await?;
    let version: String = c
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| explain(e, &addr, "reading the server version"))?
        .unwrap_or_default();
    let v = ServerVersion::parse(&version);
    let me: String = c
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(|e| explain(e, &addr, "reading CURRENT_USER()"))?
        .unwrap_or_default();
    let acct = privileges::account_of(&me);
    let mut caps = Vec::new();

    // Databases a snapshot dumps.
    let visible: Vec<String> = c
        .query(format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN \
             ({SYSTEM_DBS}) ORDER BY SCHEMA_NAME"
        ))
        .await
        .map_err(|e| explain(e, &addr, "listing databases"))?;
    let dbs: Vec<String> = match &cfg.databases {
        Some(l) => l.clone(),
        None => visible.clone(),
    };

    caps.push(consistency_point(&mut c, &v, &addr, &acct).await?);
    caps.push(routines(&mut c, &dbs, &addr, &acct).await?);
    caps.push(accounts(&mut c, &me, &addr, &acct).await?);
    caps.push(events(&mut c, &dbs, &addr, &acct).await?);
    caps.push(binlog_position(&mut c, &v, &addr, &acct).await?);
    caps.push(databases_readable(&mut c, &dbs, &visible, &addr, &acct).await?);
    c.disconnect().await.ok();
    Ok(Probe {
        address: addr,
        version,
        account: acct,
        capabilities: caps,
    })
}

/// Consistency point: BACKUP STAGE tried, or (without it) the RELOAD privilege looked up.
async fn consistency_point(
    c: &mut Conn,
    v: &ServerVersion,
    addr: &str,
    acct: &str,
) -> Result<Capability> {
    Ok(match v.block_method() {
        BlockMethod::BackupStage => match c.query_drop("BACKUP STAGE START").await {
            Ok(()) => {
                c.query_drop("BACKUP STAGE END")
                    .await
                    .map_err(|e| explain(e, addr, "BACKUP STAGE END"))?;
                Capability::ok(
                    "consistency point",
                    "BACKUP STAGE allowed (RELOAD): commits are blocked for milliseconds",
                )
            }
            Err(e) => {
                let e = priv_or(e, addr, "BACKUP STAGE START")?;
                Capability::missing(
                    "consistency point",
                    format!("BACKUP STAGE refused ({e:#})"),
                    vec![privileges::fix_reload(acct)],
                )
            }
        },
        _ => {
            // FLUSH TABLES WITH READ LOCK would stall a live server: look at the privilege.
            let n: Option<u64> = c
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
                     WHERE PRIVILEGE_TYPE = 'RELOAD'",
                )
                .await
                .map_err(|e| explain(e, addr, "reading USER_PRIVILEGES"))?;
            if n.unwrap_or(0) > 0 {
                Capability::ok(
                    "consistency point",
                    "RELOAD granted: FLUSH TABLES WITH READ LOCK (this server has no BACKUP STAGE)",
                )
            } else {
                Capability::missing(
                    "consistency point",
                    "no RELOAD privilege: FLUSH TABLES WITH READ LOCK is refused",
                    vec![privileges::fix_reload(acct)],
                )
            }
        }
    })
}

/// Routines: every definition of the databases visible.
async fn routines(c: &mut Conn, dbs: &[String], addr: &str, acct: &str) -> Result<Capability> {
    let mut routines: Vec<(String, String, String)> = Vec::new();
    if !dbs.is_empty() {
        let list = dbs
            .iter()
            .map(|d| super::sqlfmt::quoted(d))
            .collect::<Vec<_>>()
            .join(", ");
        routines = c
            .query(format!(
                "SELECT ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME FROM \
                 information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ({list}) AND ROUTINE_TYPE \
                 IN ('PROCEDURE', 'FUNCTION') ORDER BY 1, 2, 3"
            ))
            .await
            .map_err(|e| explain(e, addr, "listing routines"))?;
    }
    let mut hidden = Vec::new();
    for (db, kind, name) in &routines {
        let row: Option<mysql_async::Row> = c
            .query_first(format!("SHOW CREATE {kind} {}.{}", ident(db), ident(name)))
            .await
            .map_err(|e| explain(e, addr, "SHOW CREATE of a routine"))?;
        let visible = row
            .and_then(|r| r.get_opt::<Option<String>, _>(2).and_then(|x| x.ok()))
            .flatten()
            .is_some();
        if !visible {
            hidden.push(format!("{db}.{name}"));
        }
    }
    Ok(if hidden.is_empty() {
        Capability::ok(
            "routines",
            format!("all {} definitions visible", routines.len()),
        )
    } else {
        Capability::missing(
            "routines",
            format!(
                "{} of {} definitions invisible (not the definer, no SELECT on mysql.proc): {}",
                hidden.len(),
                routines.len(),
                hidden.join(", ")
            ),
            vec![privileges::fix_routines(acct)],
        )
    })
}

/// Accounts and grants: `mysql.user` readable, and another account's grants (`me`: this one).
async fn accounts(c: &mut Conn, me: &str, addr: &str, acct: &str) -> Result<Capability> {
    Ok(
        match c
            .query::<(String, String), _>("SELECT User, Host FROM mysql.user")
            .await
        {
            Ok(users) => {
                let other = users.iter().find(|(u, h)| format!("{u}@{h}") != me);
                let grants_ok = match other {
                    Some((u, h)) => c
                        .query_drop(format!(
                            "SHOW GRANTS FOR {}@{}",
                            super::sqlfmt::quoted(u),
                            super::sqlfmt::quoted(h)
                        ))
                        .await
                        .is_ok(),
                    None => true,
                };
                if grants_ok {
                    Capability::ok(
                        "accounts and grants",
                        format!("{} accounts readable with their grants", users.len()),
                    )
                } else {
                    Capability::missing(
                        "accounts and grants",
                        "mysql.user readable but SHOW GRANTS FOR other accounts refused",
                        vec![privileges::fix_accounts(acct)],
                    )
                }
            }
            Err(e) => {
                let e = priv_or(e, addr, "SELECT FROM mysql.user")?;
                Capability::missing(
                    "accounts and grants",
                    format!("mysql.user is not readable ({e:#})"),
                    vec![privileges::fix_accounts(acct)],
                )
            }
        },
    )
}

/// Events: SHOW EVENTS allowed in every database.
async fn events(c: &mut Conn, dbs: &[String], addr: &str, acct: &str) -> Result<Capability> {
    let mut no_event = Vec::new();
    for db in dbs {
        if let Err(e) = c
            .query_drop(format!("SHOW EVENTS FROM {}", ident(db)))
            .await
        {
            priv_or(e, addr, "SHOW EVENTS")?;
            no_event.push(db.clone());
        }
    }
    Ok(if no_event.is_empty() {
        Capability::ok("events", format!("visible in all {} databases", dbs.len()))
    } else {
        Capability::missing(
            "events",
            format!("no EVENT privilege on {}", no_event.join(", ")),
            no_event
                .iter()
                .map(|d| privileges::fix_events(acct, d))
                .collect(),
        )
    })
}

/// Binlog position: SHOW MASTER STATUS allowed (when the binary log is on).
async fn binlog_position(
    c: &mut Conn,
    v: &ServerVersion,
    addr: &str,
    acct: &str,
) -> Result<Capability> {
    let log_bin: Option<i64> = c
        .query_first("SELECT @@log_bin")
        .await
        .map_err(|e| explain(e, addr, "reading @@log_bin"))?;
    Ok(if log_bin != Some(1) {
        Capability::ok(
            "binlog position",
            "binary log is off: there is no position to record",
        )
    } else {
        match c.query_drop("SHOW MASTER STATUS").await {
            Ok(()) => Capability::ok("binlog position", "SHOW MASTER STATUS allowed"),
            Err(e) => {
                let e = priv_or(e, addr, "SHOW MASTER STATUS")?;
                Capability::missing(
                    "binlog position",
                    format!("SHOW MASTER STATUS refused ({e:#})"),
                    vec![privileges::fix_binlog(acct, v)],
                )
            }
        }
    })
}

/// Each database visible and its tables readable.
async fn databases_readable(
    c: &mut Conn,
    dbs: &[String],
    visible: &[String],
    addr: &str,
    acct: &str,
) -> Result<Capability> {
    let mut unreadable = Vec::new();
    for db in dbs {
        if !visible.contains(db) {
            unreadable.push((db.clone(), "not visible to this account".to_string()));
            continue;
        }
        let tables: Vec<String> = c
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? \
                 AND TABLE_TYPE = 'BASE TABLE'",
                (db,),
            )
            .await
            .map_err(|e| explain(e, addr, "listing tables"))?;
        let mut bad = 0usize;
        for t in &tables {
            if let Err(e) = c
                .query_drop(format!("SELECT 1 FROM {}.{} LIMIT 0", ident(db), ident(t)))
                .await
            {
                priv_or(e, addr, "SELECT of a table")?;
                bad += 1;
            }
        }
        if bad > 0 {
            unreadable.push((db.clone(), format!("{bad} of {} tables", tables.len())));
        }
    }
    Ok(if unreadable.is_empty() {
        Capability::ok(
            "databases readable",
            format!("{} ({})", dbs.len(), dbs.join(", ")),
        )
    } else {
        Capability::missing(
            "databases readable",
            unreadable
                .iter()
                .map(|(d, why)| format!("{d}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
            unreadable
                .iter()
                .map(|(d, _)| {
                    format!(
                        "GRANT SELECT, SHOW VIEW, TRIGGER ON {}.* TO {acct};",
                        ident(d)
                    )
                })
                .collect(),
        )
    })
}
