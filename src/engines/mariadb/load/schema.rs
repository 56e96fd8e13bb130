//! The schema step in parallel, and the rebuild mode.
//!
//! # Parallel schema
//!
//! A schema item (`1-schema/<db>`) is `CREATE DATABASE`, the `CREATE TABLE`s and the views'
//! placeholders. Creating ~620 tables one after the other is a fixed cost that dominates small
//! restores (each `CREATE TABLE` creates, and syncs, a tablespace file), so the statements before
//! the first `CREATE TABLE` run on the control connection, the `CREATE TABLE`s are shared by
//! `workers` connections (each with the item's session settings, `foreign_key_checks = 0` among
//! them, so a table may name one not yet created), and the placeholders follow on the control
//! connection. A table's `AUTO_INCREMENT` counter from the source info goes into its `CREATE`
//! (not for partitioned tables), so the counter step only has the rest to do.
//!
//! # Rebuild mode
//!
//! `restore --rebuild`: for the load, the server's durability is off — `SET GLOBAL
//! innodb_flush_log_at_trx_commit = 0` and `sync_binlog = 0` — and the original values are set
//! back after the load, also when the load failed (on a fresh connection when the control one is
//! gone). Each loader connection also runs `SET SESSION sql_log_bin = 0` when
//! `--rebuild-skip-binlog` allows it (the restore then does not reach replicas). Risk: a crash of
//! the *server* during the load can lose the last second of commits (the restore is then run
//! again); a crash of *mnbackup* (SIGKILL) leaves the settings off until the server restarts or
//! someone sets them back (the step's note names the original values).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;

use super::{connect, statement_error, Loader};
use crate::engines::mariadb::plan::{target_db, SqlItem};
use crate::engines::mariadb::sql::{rename_statement, statement_slices};
use mnbackup_restore::report::{StepReport, StepStatus};

/// Server variables the rebuild mode turns off, with the value it sets.
const REBUILD_VARS: [(&str, &str); 2] = [
    ("innodb_flush_log_at_trx_commit", "0"),
    ("sync_binlog", "0"),
];

/// The statements of a schema item, in three groups.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SchemaParts {
    /// Up to the first `CREATE TABLE` (session settings, `CREATE DATABASE`, `USE`).
    pub before: Vec<String>,
    /// The `CREATE TABLE`s, with their table names.
    pub tables: Vec<(String, String)>,
    /// After the tables (the views' placeholders).
    pub after: Vec<String>,
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The table name of a `CREATE TABLE [IF NOT EXISTS] \`name\``.
fn created_table(stmt: &str) -> Option<String> {
    let rest = stmt.trim_start()["CREATE TABLE".len()..].trim_start();
    let rest = if starts_with_ci(rest, "IF NOT EXISTS") {
        rest["IF NOT EXISTS".len()..].trim_start()
    } else {
        rest
    };
    let inner = rest.strip_prefix('`')?;
    let mut name = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            if chars.peek() == Some(&'`') {
                chars.next();
                name.push('`');
                continue;
            }
            return Some(name);
        }
        name.push(c);
    }
    None
}

/// Split a schema item's text (see the module docs).
pub(crate) fn schema_parts(text: &str) -> SchemaParts {
    let mut p = SchemaParts::default();
    for s in statement_slices(text) {
        let t = s.trim_start();
        let table = starts_with_ci(t, "CREATE TABLE")
            .then(|| created_table(t))
            .flatten();
        match table {
            Some(name) if p.after.is_empty() => p.tables.push((name, s.into_owned())),
            _ if p.tables.is_empty() => p.before.push(s.into_owned()),
            _ => p.after.push(s.into_owned()),
        }
    }
    p
}

/// `CREATE TABLE …` with ` AUTO_INCREMENT=n` appended to its table options; `None` for a
/// partitioned table (its options end before the partitioning clause).
pub(crate) fn with_auto_increment(create: &str, n: u64) -> Option<String> {
    if create.to_ascii_uppercase().contains("PARTITION BY") {
        return None;
    }
    Some(format!("{} AUTO_INCREMENT={n}", create.trim_end()))
}

impl Loader {
    /// Per-connection settings of the loader's connections (rebuild mode: no binlog).
    pub(super) async fn session(&self, mut c: Conn) -> Result<Conn> {
        if self.opts.rebuild && self.opts.rebuild_skip_binlog {
            c.query_drop("SET SESSION sql_log_bin = 0").await.context(
                "rebuild mode: SET SESSION sql_log_bin = 0 was refused (it needs SUPER or BINLOG \
                 ADMIN); run without --rebuild-skip-binlog",
            )?;
        }
        Ok(c)
    }

    /// Run a schema item: the tables in parallel (see the module docs). Returns the tables
    /// whose counter went into the `CREATE`.
    pub(super) async fn exec_schema(
        &self,
        ctl: &mut Conn,
        item: &SqlItem,
        text: &[u8],
    ) -> Result<Vec<String>> {
        let text = std::str::from_utf8(text)
            .map_err(|e| anyhow!("schema item {} is not UTF-8 text ({e})", item.name))?;
        let renames = &self.opts.renames;
        let sdb = item.db.clone().unwrap_or_default();
        let target = target_db(renames, &sdb).to_string();
        let parts = schema_parts(text);
        let total = parts.before.len() + parts.tables.len() + parts.after.len();
        for (i, s) in parts.before.iter().enumerate() {
            let sql = rename_statement(s, renames);
            ctl.query_drop(&sql)
                .await
                .map_err(|e| statement_error(e, item, &target, i + 1, total, 0, s))?;
        }
        // The workers' sessions: the item's settings, then its database.
        let mut session: Vec<String> = parts
            .before
            .iter()
            .filter(|s| starts_with_ci(s.trim_start(), "SET "))
            .map(|s| rename_statement(s, renames))
            .collect();
        session.push(format!(
            "USE {}",
            crate::engines::mariadb::sql::quote_ident(&target)
        ));
        let mut with_ai = Vec::new();
        let mut queue = VecDeque::new();
        for (i, (name, create)) in parts.tables.into_iter().enumerate() {
            let key = format!("{sdb}.{name}");
            let stmt = match self.src.auto_increment.get(&key) {
                Some(n) => match with_auto_increment(&create, *n) {
                    Some(s) => {
                        with_ai.push(key);
                        s
                    }
                    None => create,
                },
                None => create,
            };
            queue.push_back((parts.before.len() + i + 1, rename_statement(&stmt, renames)));
        }
        self.create_tables(item, &target, session, queue, total)
            .await?;
        let first = total - parts.after.len();
        for (i, s) in parts.after.iter().enumerate() {
            let sql = rename_statement(s, renames);
            ctl.query_drop(&sql)
                .await
                .map_err(|e| statement_error(e, item, &target, first + i + 1, total, 0, s))?;
        }
        Ok(with_ai)
    }

    /// The `CREATE TABLE`s of one item over `workers` connections.
    async fn create_tables(
        &self,
        item: &SqlItem,
        target: &str,
        session: Vec<String>,
        queue: VecDeque<(usize, String)>,
        total: usize,
    ) -> Result<()> {
        if queue.is_empty() {
            return Ok(());
        }
        let n = self.opts.workers.clamp(1, queue.len());
        let queue = Arc::new(Mutex::new(queue));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let mut conn = connect(&self.target, "opening a schema connection").await?;
            let (queue, session) = (queue.clone(), session.clone());
            let (item, target) = (item.clone(), target.to_string());
            set.spawn(async move {
                let res = async {
                    for s in &session {
                        conn.query_drop(s)
                            .await
                            .with_context(|| format!("setting up a schema connection: {s}"))?;
                    }
                    loop {
                        let next = queue.lock().expect("queue").pop_front();
                        let Some((no, sql)) = next else { break };
                        if let Err(e) = conn.query_drop(&sql).await {
                            queue.lock().expect("queue").clear();
                            return Err(statement_error(e, &item, &target, no, total, 0, &sql));
                        }
                    }
                    Ok(())
                }
                .await;
                conn.disconnect().await.ok();
                res
            });
        }
        let mut err = None;
        while let Some(j) = set.join_next().await {
            match j {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    err.get_or_insert(e);
                }
                Err(e) => {
                    err.get_or_insert(anyhow!("a schema task panicked: {e}"));
                }
            }
        }
        err.map_or(Ok(()), Err)
    }

    /// Rebuild mode: turn the server's durability off; returns the original values (the ones
    /// that could be changed) and a note.
    pub(super) async fn durability_off(
        &self,
        ctl: &mut Conn,
    ) -> (Vec<(&'static str, String)>, StepReport) {
        let mut r = StepReport::new("mariadb rebuild mode", StepStatus::Done);
        let mut saved = Vec::new();
        let mut notes = Vec::new();
        for (var, off) in REBUILD_VARS {
            let old: Option<String> = match ctl.query_first(format!("SELECT @@GLOBAL.{var}")).await
            {
                Ok(v) => v,
                Err(e) => {
                    notes.push(format!("{var}: not readable ({e}), left as it is"));
                    continue;
                }
            };
            let Some(old) = old else { continue };
            match ctl.query_drop(format!("SET GLOBAL {var} = {off}")).await {
                Ok(()) => {
                    notes.push(format!("{var} {old} -> {off} for the load"));
                    saved.push((var, old));
                }
                Err(e) => notes.push(format!("{var}: cannot be changed ({e}), left at {old}")),
            }
        }
        if saved.is_empty() {
            r.status = StepStatus::Skipped;
        }
        r.items = saved.len();
        r.note = Some(notes.join("; "));
        (saved, r)
    }

    /// Set back what [`Loader::durability_off`] changed (on `ctl`, or on a fresh connection).
    pub(super) async fn durability_back(
        &self,
        ctl: &mut Conn,
        saved: &[(&'static str, String)],
    ) -> Result<()> {
        let sql: Vec<String> = saved
            .iter()
            .map(|(v, old)| format!("SET GLOBAL {v} = {old}"))
            .collect();
        let mut first_err = None;
        for s in &sql {
            if let Err(e) = ctl.query_drop(s).await {
                first_err = Some(e);
                break;
            }
        }
        let Some(e) = first_err else { return Ok(()) };
        tracing::warn!("setting the durability back on the control connection failed ({e}); retrying on a new one");
        let mut c = connect(&self.target, "setting the server's durability back").await?;
        for s in &sql {
            c.query_drop(s).await.with_context(|| {
                format!(
                    "rebuild mode: setting the server's durability back failed ({s}); run it by \
                     hand: {}",
                    sql.join("; ")
                )
            })?;
        }
        c.disconnect().await.ok();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_schema_item() {
        let item =
            "-- mnbackup MariaDB dump: schema\nSET NAMES utf8mb4;\nSET foreign_key_checks = 0;\n\
CREATE DATABASE IF NOT EXISTS `d` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\nUSE `d`;\n\n\
CREATE TABLE `a` (\n  `id` int NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\n\n\
CREATE TABLE `we``ird` (\n  `x` int\n) ENGINE=MyISAM;\n\
-- placeholders for the views (replaced in the views item)\n\
CREATE OR REPLACE VIEW `v` AS SELECT 1 AS `x`;\n";
        let p = schema_parts(item);
        assert_eq!(p.before.len(), 4);
        assert!(p.before[2].starts_with("CREATE DATABASE"));
        let names: Vec<&str> = p.tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "we`ird"]);
        assert_eq!(p.after, ["CREATE OR REPLACE VIEW `v` AS SELECT 1 AS `x`"]);
    }

    #[test]
    fn counter_in_the_create() {
        assert_eq!(
            with_auto_increment("CREATE TABLE `a` (`id` int) ENGINE=InnoDB", 42).unwrap(),
            "CREATE TABLE `a` (`id` int) ENGINE=InnoDB AUTO_INCREMENT=42"
        );
        assert!(with_auto_increment(
            "CREATE TABLE `p` (`id` int) ENGINE=InnoDB\n PARTITION BY HASH (`id`) PARTITIONS 4",
            7
        )
        .is_none());
    }
}
