//! Loading a snapshot's MariaDB items into a server, natively over `mysql_async` (no `mariadb`
//! client subprocess), and proving the result with the row fingerprints.
//!
//! # Order
//!
//! 1. accounts (`0-accounts`; skipped with database renames unless asked for);
//! 2. databases and tables (`1-schema/<db>`), one database after the other;
//! 3. data (`2-data/…`): tables biggest first, the items of all tables loaded in parallel over
//!    `workers` connections, each item in one transaction, with `FOREIGN_KEY_CHECKS=0`,
//!    `UNIQUE_CHECKS=0` and the `sql_mode` of the dump header, its rows sent as one
//!    `LOAD DATA LOCAL INFILE` stream (see [`infile`]; its `INSERT`s when the server has
//!    `local_infile` off or the item does not convert). **Every item of a table is read
//!    and BLAKE3-checked (through [`ItemSource`]) before the table is touched**: a damaged item
//!    stops the restore naming it, with its table still empty. Tables up to the memory budget are
//!    held in memory between the check and the load; bigger ones are read twice (checked, then
//!    streamed item by item);
//! 4. routines, views (over their placeholders), triggers, events, per database;
//! 5. grants (`7-grants`; skipped like the accounts);
//! 6. AUTO_INCREMENT counters from the source info.
//!
//! The fingerprint check ([`check_fingerprints`]) then reads every table back and compares its
//! row count and row hash with the ones the dump recorded.
//!
//! # Errors
//!
//! A failed statement is reported with the table, the item, the rows of the item the statement
//! holds, the statement number and its beginning. The restore is resumable through the
//! [`Journal`]: completed steps and tables are skipped on a rerun, a table that was started but
//! not completed is emptied and loaded again.

mod data;
pub mod infile;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;

use super::plan::{target_db, target_table, ItemKind, MariadbSource, SqlItem};
pub use super::prove::*;
use super::sql::{
    excerpt, insert_rows, quote_ident, rename_data_statement, rename_statement, statement_slices,
};
pub use super::target::*;
use mnbackup_restore::journal::Journal;
use mnbackup_restore::report::{StepReport, StepStatus, TableCheck};

/// Reads an item's plain content, verified: an implementation must fail (naming the item) rather
/// than return damaged bytes.
pub use crate::model::ItemsByName as ItemSource;

/// What the loader does besides the snapshot's content.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Source database → target database.
    pub renames: BTreeMap<String, String>,
    /// Load the accounts and grants items.
    pub with_accounts: bool,
    /// Load the snapshot's `root@localhost` too (else the target's own is kept).
    pub replace_local_root: bool,
    /// Leave the events out (the drill: scratch copies must not run scheduled jobs).
    pub skip_events: bool,
    /// Parallel connections for the data.
    pub workers: usize,
    /// Bytes of checked items held in memory between their check and their load.
    pub memory_budget: u64,
    /// Rebuild mode: the server's durability off for the load (see [`schema`]).
    pub rebuild: bool,
    /// Rebuild mode: the loader's sessions also skip the binlog (`sql_log_bin = 0`).
    pub rebuild_skip_binlog: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            renames: BTreeMap::new(),
            with_accounts: true,
            replace_local_root: false,
            skip_events: false,
            workers: 4,
            memory_budget: 64 << 20,
            rebuild: false,
            rebuild_skip_binlog: false,
        }
    }
}

/// Whether a line of the accounts or grants item creates, or grants to, `root@localhost`
/// (`CREATE USER IF NOT EXISTS \`root\`@\`localhost\` …`, `ALTER USER …`, `GRANT … TO
/// 'root'@'localhost' …`; older snapshots: `CREATE OR REPLACE USER …`).
pub fn is_local_root_statement(line: &str) -> bool {
    let norm: String = line
        .chars()
        .filter(|c| *c != '`' && *c != '\'')
        .collect::<String>()
        .to_ascii_lowercase();
    let t = norm.trim_start();
    let ends = |rest: &str| rest.is_empty() || rest.starts_with([' ', ';', '\n']);
    let after = |pat: &str| t.find(pat).map(|i| &t[i + pat.len()..]);
    ((t.starts_with("create ") || t.starts_with("alter "))
        && after(" user root@localhost")
            .or_else(|| after(" user if not exists root@localhost"))
            .is_some_and(ends))
        || (t.starts_with("grant ") && after(" to root@localhost").is_some_and(ends))
}

/// The accounts or grants item without the lines about `root@localhost`, and how many there
/// were.
pub fn without_local_root(text: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.split_inclusive(|b| *b == b'\n') {
        if std::str::from_utf8(line).is_ok_and(is_local_root_statement) {
            dropped += 1;
        } else {
            out.extend_from_slice(line);
        }
    }
    (out, dropped)
}

/// Routines of a routines item that compare `table_schema` (or `TABLE_SCHEMA`, `ROUTINE_SCHEMA`,
/// ...) with the database name `old` as a string literal: after `--rename-db old=new` they
/// still look at `old` (ZStack has such helper procedures). Returns `db.routine` names.
pub fn schema_literal_routines(text: &str, db: &str, old: &str) -> Vec<String> {
    let lits = [format!("'{old}'"), format!("\"{old}\"")];
    let mut out = Vec::new();
    for s in statement_slices(text) {
        let lower = s.to_ascii_lowercase();
        let Some(at) = ["create procedure", "create function", "create definer"]
            .iter()
            .find_map(|k| lower.find(k))
        else {
            continue;
        };
        if !lower.contains("_schema") || !lits.iter().any(|l| s.contains(l.as_str())) {
            continue;
        }
        // The name: the first backquoted identifier after PROCEDURE / FUNCTION.
        let rest = &s[at..];
        let lrest = &lower[at..];
        let kw = lrest
            .find(" procedure ")
            .or_else(|| lrest.find(" function "))
            .unwrap_or(0);
        let name = rest[kw..].split('`').nth(1).unwrap_or("?").to_string();
        out.push(format!("{db}.{name}"));
    }
    out
}

/// The warning for a routines item of database `old` restored as `new` whose routines compare
/// a schema name with the literal `old` (see [`schema_literal_routines`]); `None` when none do.
/// Shown by `restore --plan` and in the routines step's note.
pub fn schema_literal_note(text: &[u8], old: &str, new: &str) -> Option<String> {
    let hits = schema_literal_routines(&String::from_utf8_lossy(text), new, old);
    if hits.is_empty() {
        return None;
    }
    Some(format!(
        "{} routine(s) compare a schema name with the literal '{old}' and still look at {old}, \
         not {new}: {}; edit them in {new} before use",
        hits.len(),
        hits.join(", ")
    ))
}

/// Why executing an item failed.
fn statement_error(
    e: mysql_async::Error,
    item: &SqlItem,
    target: &str,
    n: usize,
    total: usize,
    rows_before: u64,
    stmt: &str,
) -> anyhow::Error {
    let what = match item.table_key() {
        Some(t) if t != target => format!("loading table {t} (into {target})"),
        Some(t) => format!("loading table {t}"),
        None => format!("loading the {} of {}", item.kind.as_str(), target),
    };
    let rows = insert_rows(stmt);
    let range = if rows > 0 {
        format!(
            " (rows {}–{} of that item)",
            rows_before + 1,
            rows_before + rows
        )
    } else {
        String::new()
    };
    anyhow!(
        "{what} failed at statement {n} of {total} of item {}{range}: {e}. Statement: {}. \
         Nothing after it was loaded; fix the cause (the server's error log, disk space, \
         max_allowed_packet) and run the same restore command again: it resumes, and reloads \
         this table from the start",
        item.name,
        excerpt(stmt, 160)
    )
}

/// Execute one item on `conn` (data items in one transaction). Returns the rows inserted.
pub async fn exec_item(
    conn: &mut Conn,
    item: &SqlItem,
    text: &[u8],
    renames: &BTreeMap<String, String>,
) -> Result<u64> {
    let text = std::str::from_utf8(text).map_err(|e| {
        anyhow!(
            "item {} is not UTF-8 text ({e}); load it with the mariadb client instead \
             (`mnbackup cat SNAPSHOT {} | mariadb`)",
            item.name,
            item.name
        )
    })?;
    let stmts = statement_slices(text);
    let target = match (&item.db, &item.table) {
        (Some(d), Some(t)) => format!("{}.{t}", target_db(renames, d)),
        (Some(d), None) => target_db(renames, d).to_string(),
        _ => "the server".to_string(),
    };
    let data = item.kind == ItemKind::Data;
    let mut attempt = 0u32;
    'attempt: loop {
        attempt += 1;
        if data {
            conn.query_drop("START TRANSACTION")
                .await
                .with_context(|| format!("starting the transaction of item {}", item.name))?;
        }
        let mut rows = 0u64;
        let total = stmts.len();
        for (i, s) in stmts.iter().enumerate() {
            let renamed = if data {
                rename_data_statement(s, renames)
            } else if item.kind.is_ddl() {
                Some(rename_statement(s, renames))
            } else {
                None
            };
            let sql = renamed.as_deref().unwrap_or(s);
            if let Err(e) = conn.query_drop(sql).await {
                if data {
                    let _ = conn.query_drop("ROLLBACK").await;
                    // Parallel items of one table can deadlock on InnoDB's locks: the item is
                    // one transaction, so it is simply loaded again.
                    if is_retryable(&e) && attempt < MAX_ATTEMPTS {
                        tracing::info!(
                            "item {}: {e}; loading it again (attempt {attempt})",
                            item.name
                        );
                        tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                        continue 'attempt;
                    }
                }
                return Err(statement_error(e, item, &target, i + 1, total, rows, s));
            }
            rows += insert_rows(s);
        }
        if data {
            if let Err(e) = conn.query_drop("COMMIT").await {
                if is_retryable(&e) && attempt < MAX_ATTEMPTS {
                    let _ = conn.query_drop("ROLLBACK").await;
                    continue 'attempt;
                }
                return Err(anyhow!(e).context(format!("committing item {}", item.name)));
            }
        }
        return Ok(rows);
    }
}

/// Attempts of an item whose transaction hit a deadlock or a lock wait timeout.
const MAX_ATTEMPTS: u32 = 8;

/// Deadlock (1213) and lock wait timeout (1205): the transaction can simply be run again.
fn is_retryable(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205)
}

/// The MariaDB loader.
pub struct Loader {
    pub target: Target,
    pub src: Arc<MariadbSource>,
    pub items: Arc<dyn ItemSource>,
    pub opts: LoadOptions,
    pub journal: Option<Arc<Mutex<Journal>>>,
    /// Fingerprint checks of the tables this run loaded, each made by the connection that
    /// loaded the table right after its last item committed (so the proof overlaps with the
    /// loading of the other tables). [`check_fingerprints`] checks only the tables not in here.
    pub checked: Arc<Mutex<BTreeMap<String, TableCheck>>>,
}

impl Loader {
    fn resumed(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| j.lock().expect("journal").resumed)
    }

    fn step_done(&self, key: &str) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| j.lock().expect("journal").step_done(key))
    }

    fn mark_step(&self, key: &str) -> Result<()> {
        if let Some(j) = &self.journal {
            j.lock().expect("journal").mark_step(key)?;
        }
        Ok(())
    }

    fn read_item(&self, item: &SqlItem) -> Result<Vec<u8>> {
        self.items.read(&item.name).with_context(|| {
            format!(
                "the restore stopped before loading item {}: it cannot be read back intact. \
                 Nothing of it was loaded{}. Run `mnbackup verify --read-data` to see what is \
                 damaged, and restore an older snapshot (`mnbackup list`)",
                item.name,
                item.table_key()
                    .map(|t| format!(" and table {t} was not touched"))
                    .unwrap_or_default()
            )
        })
    }

    /// Run every step (see the module docs); returns one report per step.
    pub async fn run(&self) -> Result<Vec<StepReport>> {
        let mut ctl = connect(&self.target, "opening the control connection").await?;
        let mut out = Vec::new();
        let saved = if self.opts.rebuild {
            let (saved, step) = self.durability_off(&mut ctl).await;
            out.push(step);
            saved
        } else {
            Vec::new()
        };
        let res = self.steps(&mut ctl, &mut out).await;
        let back = if saved.is_empty() {
            Ok(())
        } else {
            self.durability_back(&mut ctl, &saved).await
        };
        ctl.disconnect().await.ok();
        res?;
        back?;
        Ok(out)
    }

    /// The steps of [`Loader::run`], each report pushed to `out`.
    async fn steps(&self, ctl: &mut Conn, out: &mut Vec<StepReport>) -> Result<()> {
        let mut ai = BTreeSet::new();
        if self.opts.with_accounts {
            out.push(self.ddl_kind(ctl, ItemKind::Accounts, &mut ai).await?);
        } else if self.src.items.iter().any(|i| i.kind == ItemKind::Accounts) {
            out.push(
                StepReport::new("mariadb accounts", StepStatus::Skipped).note(
                    "not restored: the databases are renamed (--rename-db, or the drill's scratch \
                 copies), and the accounts would change the live users (restore \
                 --with-accounts loads them anyway)",
                ),
            );
        }
        out.push(self.ddl_kind(ctl, ItemKind::Schema, &mut ai).await?);
        out.push(self.load_data().await?);
        for k in [ItemKind::Routines, ItemKind::Views, ItemKind::Triggers] {
            out.push(self.ddl_kind(ctl, k, &mut ai).await?);
        }
        if self.opts.skip_events {
            out.push(StepReport::new("mariadb events", StepStatus::Skipped).note(
                "events are not loaded into renamed or scratch copies (they would run \
                     scheduled jobs there)",
            ));
        } else {
            out.push(self.ddl_kind(ctl, ItemKind::Events, &mut ai).await?);
        }
        if self.opts.with_accounts {
            out.push(self.ddl_kind(ctl, ItemKind::Grants, &mut ai).await?);
        } else if self.src.items.iter().any(|i| i.kind == ItemKind::Grants) {
            out.push(
                StepReport::new("mariadb grants", StepStatus::Skipped).note(
                    "not restored with renamed databases (restore --with-accounts loads them)",
                ),
            );
        }
        out.push(self.auto_increment(ctl, &ai).await?);
        Ok(())
    }

    /// Load every item of one non-data kind, in order, on the control connection (the tables
    /// of a schema item in parallel: [`schema`]; the tables whose counter went into their
    /// `CREATE` are added to `ai`).
    async fn ddl_kind(
        &self,
        ctl: &mut Conn,
        kind: ItemKind,
        ai: &mut BTreeSet<String>,
    ) -> Result<StepReport> {
        let t0 = Instant::now();
        let items: Vec<&SqlItem> = self.src.items.iter().filter(|i| i.kind == kind).collect();
        let mut r = StepReport::new(format!("mariadb {}", kind.as_str()), StepStatus::Skipped);
        if items.is_empty() {
            r.note = Some("nothing of this kind in the snapshot".into());
            return Ok(r);
        }
        let mut ran = 0;
        for item in &items {
            let key = format!("mariadb:{}:{}", kind.as_str(), item.name);
            r.items += 1;
            r.bytes += item.size;
            if self.step_done(&key) {
                continue;
            }
            let mut text = self.read_item(item)?;
            if matches!(kind, ItemKind::Accounts | ItemKind::Grants)
                && !self.opts.replace_local_root
            {
                let (kept, dropped) = without_local_root(&text);
                if dropped > 0 {
                    text = kept;
                    r.note = Some(
                        "kept this server's own root@localhost (restore --replace-local-root \
                         loads the snapshot's)"
                            .into(),
                    );
                }
            }
            if kind == ItemKind::Schema && self.resumed() {
                // An interrupted schema step: the database is ours (the journal says so), drop
                // it and create it again.
                if let Some(db) = &item.db {
                    let tdb = target_db(&self.opts.renames, db).to_string();
                    let ours = self.journal.as_ref().is_some_and(|j| {
                        j.lock()
                            .expect("journal")
                            .data
                            .created_databases
                            .contains(&tdb)
                    });
                    if ours {
                        drop_databases(ctl, std::slice::from_ref(&tdb)).await?;
                    }
                }
            }
            if kind == ItemKind::Routines {
                if let Some((db, to)) = item
                    .db
                    .as_ref()
                    .and_then(|d| self.opts.renames.get(d).map(|t| (d, t)))
                {
                    if let Some(n) = schema_literal_note(&text, db, to) {
                        tracing::warn!("{n}");
                        r.note = Some(match r.note.take() {
                            Some(old) => format!("{old}; {n}"),
                            None => n,
                        });
                    }
                }
            }
            if kind == ItemKind::Schema {
                ai.extend(self.exec_schema(ctl, item, &text).await?);
            } else {
                exec_item(ctl, item, &text, &self.opts.renames).await?;
            }
            self.mark_step(&key)?;
            ran += 1;
        }
        r.status = if ran > 0 {
            StepStatus::Done
        } else {
            StepStatus::AlreadyDone
        };
        r.duration_ms = t0.elapsed().as_millis() as u64;
        Ok(r)
    }

    /// Restore the AUTO_INCREMENT counters (but the ones already set in the `CREATE`s: `ai`).
    async fn auto_increment(&self, ctl: &mut Conn, ai: &BTreeSet<String>) -> Result<StepReport> {
        let t0 = Instant::now();
        let mut r = StepReport::new("mariadb auto_increment", StepStatus::Done);
        let key = "mariadb:auto_increment";
        if self.step_done(key) {
            r.status = StepStatus::AlreadyDone;
            return Ok(r);
        }
        let mut in_create = 0;
        for (k, n) in &self.src.auto_increment {
            // A resumed run empties tables with TRUNCATE, which resets their counters.
            if ai.contains(k) && !self.resumed() {
                in_create += 1;
                continue;
            }
            let Some((d, t)) = k.split_once('.') else {
                continue;
            };
            let sql = format!(
                "ALTER TABLE {}.{} AUTO_INCREMENT = {n}",
                quote_ident(target_db(&self.opts.renames, d)),
                quote_ident(t)
            );
            ctl.query_drop(sql).await.with_context(|| {
                format!(
                    "restoring the AUTO_INCREMENT counter of {} to {n}; the data is loaded, only \
                     new rows could reuse ids: rerun the restore to finish",
                    target_table(&self.opts.renames, k)
                )
            })?;
            r.items += 1;
        }
        self.mark_step(key)?;
        r.note = Some(format!(
            "{} counters set ({in_create} more in the CREATE TABLEs)",
            r.items
        ));
        r.duration_ms = t0.elapsed().as_millis() as u64;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_literals_in_routines() {
        let item = "USE `zstack`;\nDELIMITER ;;\n\
DROP PROCEDURE IF EXISTS `dropIfExists`;;\n\
CREATE DEFINER=`root`@`localhost` PROCEDURE `dropIfExists`(IN t VARCHAR(64))\n\
BEGIN\n  IF EXISTS (SELECT 1 FROM information_schema.TABLES WHERE table_schema = 'zstack' AND table_name = t) THEN\n    SELECT 1;\n  END IF;\nEND;;\n\
CREATE DEFINER=`root`@`localhost` FUNCTION `ipToLong`(ip VARCHAR(64)) RETURNS bigint(20)\n\
BEGIN\n  RETURN INET_ATON(ip);\nEND;;\n\
CREATE DEFINER=`root`@`localhost` PROCEDURE `other`()\n\
BEGIN\n  SELECT 'zstack' FROM dual;\nEND;;\nDELIMITER ;\n";
        assert_eq!(
            schema_literal_routines(item, "zstack_old", "zstack"),
            ["zstack_old.dropIfExists"]
        );
        assert!(schema_literal_routines(item, "x", "zstack_rest").is_empty());
    }

    #[test]
    fn local_root_lines() {
        let item = "SET NAMES utf8mb4;\n\
CREATE OR REPLACE USER `root`@`localhost` IDENTIFIED VIA mysql_native_password USING '*AB' OR unix_socket;\n\
CREATE USER IF NOT EXISTS `root`@`localhost` IDENTIFIED VIA unix_socket;\n\
ALTER USER `root`@`localhost` IDENTIFIED VIA unix_socket;\n\
CREATE OR REPLACE USER `root`@`127.0.0.1` IDENTIFIED BY PASSWORD '*AB';\n\
CREATE OR REPLACE USER `root`@`localhost.localdomain` IDENTIFIED BY PASSWORD '*AB';\n\
GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION;\n\
GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION;\n\
GRANT ALL PRIVILEGES ON *.* TO `root`@`%` WITH GRANT OPTION;\n\
GRANT ALL PRIVILEGES ON `zstack`.* TO `zstack`@`localhost`;\n";
        let (kept, n) = without_local_root(item.as_bytes());
        assert_eq!(n, 5);
        let kept = String::from_utf8(kept).unwrap();
        assert_eq!(
            kept,
            "SET NAMES utf8mb4;\n\
CREATE OR REPLACE USER `root`@`127.0.0.1` IDENTIFIED BY PASSWORD '*AB';\n\
CREATE OR REPLACE USER `root`@`localhost.localdomain` IDENTIFIED BY PASSWORD '*AB';\n\
GRANT ALL PRIVILEGES ON *.* TO `root`@`%` WITH GRANT OPTION;\n\
GRANT ALL PRIVILEGES ON `zstack`.* TO `zstack`@`localhost`;\n"
        );
    }
}
