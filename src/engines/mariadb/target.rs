//! The server a restore or drill loads into: connecting, its version against the source's, the
//! state of the target databases.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

use super::sql::{quote_ident, quoted};

/// Session settings of every loader connection (those of the dump items' header, plus long
/// timeouts: a worker may wait while a big table is checked).
pub const LOAD_SESSION: &str = "SET NAMES utf8mb4, time_zone = '+00:00', foreign_key_checks = 0, \
     unique_checks = 0, sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', sql_notes = 0, \
     net_read_timeout = 3600, net_write_timeout = 3600, wait_timeout = 28800, \
     lock_wait_timeout = 600";

/// The server to restore into.
#[derive(Clone)]
pub struct Target {
    pub opts: Opts,
    /// `host:port` or `socket PATH`, for messages and the journal key.
    pub address: String,
    /// The user name, for messages.
    pub user: String,
}

/// Connect and set up the loader session, with a clear error.
pub async fn connect(t: &Target, what: &str) -> Result<Conn> {
    let conn = tokio::time::timeout(Duration::from_secs(30), Conn::new(t.opts.clone())).await;
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(anyhow!(
                "cannot connect to the target MariaDB at {} as '{}' while {what}: {e}. Check that \
                 MariaDB is installed and running there (`systemctl status mariadb`), and the \
                 --target-* options or the [mariadb] connection of the configuration (the \
                 password comes from password_env, option_file or zstack_properties, or \
                 --target-password-env)",
                t.address,
                t.user
            ))
        }
        Err(_) => {
            return Err(anyhow!(
                "the target MariaDB at {} did not answer within 30 s while {what}; check that it \
                 is running and reachable (firewall, socket path)",
                t.address
            ))
        }
    };
    conn.query_drop(LOAD_SESSION)
        .await
        .with_context(|| format!("setting up the loader session on {}", t.address))?;
    Ok(conn)
}

/// The server's `VERSION()`.
pub async fn server_version(conn: &mut Conn) -> Result<String> {
    let v: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .context("reading the target server's version")?;
    Ok(v.unwrap_or_default())
}

/// (major, minor) of a `VERSION()` string.
pub fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b))
}

/// A warning when restoring from `source` to `target` is a downgrade (lower major.minor) or
/// crosses between MariaDB and MySQL.
pub fn version_warning(source: &str, target: &str) -> Option<String> {
    let (s, t) = (major_minor(source)?, major_minor(target)?);
    let s_maria = source.to_ascii_lowercase().contains("mariadb");
    let t_maria = target.to_ascii_lowercase().contains("mariadb");
    if s_maria != t_maria {
        return Some(format!(
            "the snapshot comes from {source} and the target runs {target}: MariaDB and MySQL \
             differ in SQL and system tables; the restore may fail or need manual fixes"
        ));
    }
    (t < s).then(|| {
        format!(
            "the target server ({target}) is older than the one the snapshot was taken from \
             ({source}): a downgrade. ZStack's schema is sensitive to the MariaDB version; \
             prefer installing {}.{} or newer",
            s.0, s.1
        )
    })
}

/// A target database and what is in it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DbState {
    pub name: String,
    pub exists: bool,
    /// Tables and views.
    pub tables: u64,
    /// Procedures, functions, triggers and events.
    pub routines: u64,
}

impl DbState {
    /// Absent, or present with nothing in it.
    pub fn is_empty(&self) -> bool {
        self.tables == 0 && self.routines == 0
    }
}

/// The state of each named database on the server.
pub async fn database_states(conn: &mut Conn, names: &[String]) -> Result<Vec<DbState>> {
    let mut out = Vec::new();
    for n in names {
        let q = quoted(n);
        let exists: Option<String> = conn
            .query_first(format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {q}"
            ))
            .await
            .context("listing the target's databases")?;
        let tables: Option<u64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {q}"
            ))
            .await
            .context("counting the target's tables")?;
        let routines: Option<u64> = conn
            .query_first(format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {q}) \
                 + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {q}) \
                 + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {q})"
            ))
            .await
            .context("counting the target's routines")?;
        out.push(DbState {
            name: n.clone(),
            exists: exists.is_some(),
            tables: tables.unwrap_or(0),
            routines: routines.unwrap_or(0),
        });
    }
    Ok(out)
}

/// Drop databases (`DROP DATABASE IF EXISTS`).
pub async fn drop_databases(conn: &mut Conn, names: &[String]) -> Result<()> {
    for n in names {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", quote_ident(n)))
            .await
            .with_context(|| format!("dropping database {n} on the target"))?;
    }
    Ok(())
}

/// Whether `db`.`table` exists.
pub async fn table_exists(conn: &mut Conn, db: &str, table: &str) -> Result<bool> {
    let n: Option<u64> = conn
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            quoted(db),
            quoted(table)
        ))
        .await
        .with_context(|| format!("looking for table {db}.{table}"))?;
    Ok(n.unwrap_or(0) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_minor("10.11.6-MariaDB-0+deb12u1"), Some((10, 11)));
        assert!(version_warning("10.11.6-MariaDB", "10.5.2-MariaDB").is_some());
        assert!(version_warning("10.5.2-MariaDB", "10.11.6-MariaDB").is_none());
        assert!(version_warning("10.11.6-MariaDB", "10.11.2-MariaDB").is_none());
        assert!(version_warning("8.0.36", "10.11.2-MariaDB").is_some());
        assert!(version_warning("", "10.11.2-MariaDB").is_none());
    }
}
