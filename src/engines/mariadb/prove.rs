//! Proving a restore: the row fingerprints of the loaded tables against the recorded ones, the
//! ZStack volume check, and the ZStack-specific steps after a load (VM HA off, Flyway version).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;

use super::fingerprint::table_fingerprint;
use super::load::{exec_item, ItemSource};
use super::plan::{target_table, ItemKind, MariadbSource, SqlItem};
use super::sql::{quote_ident, split_statements};
use super::target::{connect, table_exists, Target};
use mnbackup_restore::report::TableCheck;

/// Compare every table's fingerprint on the target with the recorded one, over `workers`
/// connections. A table that cannot be read is a mismatch (with the reason).
/// Compare one table's fingerprint on the target with the recorded one.
pub async fn check_table(
    conn: &mut Conn,
    key: &str,
    exp: &super::fingerprint::Fingerprint,
    renames: &BTreeMap<String, String>,
) -> TableCheck {
    let tkey = target_table(renames, key);
    let (d, t) = tkey.split_once('.').unwrap_or((&tkey, ""));
    let mut c = TableCheck {
        table: key.to_string(),
        target: tkey.clone(),
        expected_rows: exp.rows,
        expected_hash: exp.hash.clone(),
        rows: None,
        hash: None,
        ok: false,
        error: None,
    };
    match table_fingerprint(conn, d, t).await {
        Ok(fp) => {
            c.ok = fp == *exp;
            c.rows = Some(fp.rows);
            c.hash = Some(fp.hash);
        }
        Err(e) => c.error = Some(format!("{e:#}")),
    }
    c
}

/// Check every table's fingerprint; `done` holds the tables already checked (see
/// [`Loader::checked`]), whose results are taken as they are.
pub async fn check_fingerprints(
    target: &Target,
    src: &MariadbSource,
    renames: &BTreeMap<String, String>,
    workers: usize,
    done: &BTreeMap<String, TableCheck>,
) -> Result<Vec<TableCheck>> {
    // Biggest tables first (popped from the end), so the connections finish together.
    let mut todo: Vec<(String, super::fingerprint::Fingerprint)> = src
        .fingerprints
        .iter()
        .filter(|(k, _)| !done.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    todo.sort_by_key(|(_, f)| f.rows);
    let queue = Arc::new(Mutex::new(todo));
    let out = Arc::new(Mutex::new(done.values().cloned().collect::<Vec<_>>()));
    let mut set = tokio::task::JoinSet::new();
    let n = queue.lock().expect("queue").len();
    let conns = if n == 0 { 0 } else { workers.clamp(1, n) };
    for _ in 0..conns {
        let mut conn = connect(target, "opening a connection to check fingerprints").await?;
        let (queue, out, renames) = (queue.clone(), out.clone(), renames.clone());
        set.spawn(async move {
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some((key, exp)) = next else { break };
                let c = check_table(&mut conn, &key, &exp, &renames).await;
                out.lock().expect("out").push(c);
            }
            conn.disconnect().await.ok();
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| anyhow!("a fingerprint task panicked: {e}"))?;
    }
    let mut v = std::mem::take(&mut *out.lock().expect("out"));
    v.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(v)
}

/// The result of comparing `VolumeEO.installPath` between the snapshot and a live database.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VolumeCheck {
    /// Volumes present in both.
    pub compared: u64,
    /// (uuid, path in the snapshot, path in the live database) of volumes that moved.
    pub moved: Vec<(String, Option<String>, Option<String>)>,
    /// Why the check was not done, when it was not.
    pub skipped: Option<String>,
}

/// ZStack's `check_restore_mysql`: load the snapshot's `VolumeEO` rows of `source_db` into a
/// scratch database on the target (the table definition from the schema item, the rows through
/// the same loader), join with `live_db`.`VolumeEO` on `uuid`, list the volumes whose
/// `installPath` differs, and drop the scratch database (also on failure).
pub async fn volume_check(
    target: &Target,
    src: &MariadbSource,
    items: &dyn ItemSource,
    source_db: &str,
    live_db: &str,
) -> Result<VolumeCheck> {
    let mut res = VolumeCheck::default();
    let Some(schema) = src
        .items
        .iter()
        .find(|i| i.kind == ItemKind::Schema && i.db.as_deref() == Some(source_db))
    else {
        res.skipped = Some(format!("the snapshot has no schema of {source_db}"));
        return Ok(res);
    };
    let data: Vec<&SqlItem> = src
        .items
        .iter()
        .filter(|i| {
            i.kind == ItemKind::Data
                && i.db.as_deref() == Some(source_db)
                && i.table.as_deref() == Some("VolumeEO")
        })
        .collect();
    let text = items.read(&schema.name)?;
    let text = String::from_utf8_lossy(&text);
    let Some(create) = split_statements(&text)
        .into_iter()
        .find(|s| s.starts_with("CREATE TABLE `VolumeEO` "))
    else {
        res.skipped = Some(format!("the snapshot's {source_db} has no VolumeEO table"));
        return Ok(res);
    };
    let mut conn = connect(target, "comparing volume paths").await?;
    if !table_exists(&mut conn, live_db, "VolumeEO").await? {
        res.skipped = Some(format!("the live {live_db} has no VolumeEO table"));
        return Ok(res);
    }
    let mut texts = Vec::new();
    for i in &data {
        texts.push(items.read(&i.name)?);
    }
    let scratch = format!("mnbackup_volcheck_{}", std::process::id());
    let qs = quote_ident(&scratch);
    let run = async {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {qs}"))
            .await?;
        conn.query_drop(format!("CREATE DATABASE {qs}")).await?;
        conn.query_drop(format!("USE {qs}")).await?;
        conn.query_drop(create.as_str()).await?;
        let mut renames = BTreeMap::new();
        renames.insert(source_db.to_string(), scratch.clone());
        for (i, t) in data.iter().zip(&texts) {
            exec_item(&mut conn, i, t, &renames).await?;
        }
        let ql = quote_ident(live_db);
        let n: Option<u64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM {qs}.`VolumeEO` s JOIN {ql}.`VolumeEO` l ON l.uuid = s.uuid"
            ))
            .await?;
        let moved: Vec<(String, Option<String>, Option<String>)> = conn
            .query(format!(
                "SELECT s.uuid, s.installPath, l.installPath FROM {qs}.`VolumeEO` s \
                 JOIN {ql}.`VolumeEO` l ON l.uuid = s.uuid \
                 WHERE NOT (s.installPath <=> l.installPath) ORDER BY s.uuid"
            ))
            .await?;
        Ok::<_, anyhow::Error>((n.unwrap_or(0), moved))
    }
    .await;
    let dropped = conn
        .query_drop(format!("DROP DATABASE IF EXISTS {qs}"))
        .await;
    conn.disconnect().await.ok();
    let (n, moved) = res_with(run, "comparing VolumeEO.installPath with the live database")?;
    dropped.with_context(|| format!("dropping the scratch database {scratch}; drop it by hand"))?;
    res.compared = n;
    res.moved = moved;
    Ok(res)
}

fn res_with<T>(r: Result<T>, what: &str) -> Result<T> {
    r.with_context(|| what.to_string())
}

/// `--disable-vm-ha`: `UPDATE <db>.GlobalConfigVO SET value='false' WHERE category='ha' AND
/// name='enable'`, when that table exists. Returns what changed, for the report.
pub async fn disable_vm_ha(conn: &mut Conn, db: &str) -> Result<String> {
    if !table_exists(conn, db, "GlobalConfigVO").await? {
        return Ok(format!(
            "{db}.GlobalConfigVO does not exist: VM HA left as it was"
        ));
    }
    let before: Option<Option<String>> = conn
        .query_first(format!(
            "SELECT value FROM {}.GlobalConfigVO WHERE category = 'ha' AND name = 'enable'",
            quote_ident(db)
        ))
        .await
        .context("reading the VM HA setting")?;
    conn.query_drop(format!(
        "UPDATE {}.GlobalConfigVO SET value = 'false' WHERE category = 'ha' AND name = 'enable'",
        quote_ident(db)
    ))
    .await
    .context("switching VM HA off (GlobalConfigVO ha.enable)")?;
    let n = conn.affected_rows();
    Ok(match before {
        None => format!("{db}.GlobalConfigVO has no ha.enable row: nothing changed"),
        Some(v) => format!(
            "{db}.GlobalConfigVO ha.enable: {} -> false ({n} row changed); turn it back on in \
             the UI once the hosts are checked",
            v.as_deref().unwrap_or("NULL")
        ),
    })
}

/// The last successful Flyway migration of `db` (`schema_version`), when the table exists.
pub async fn flyway_version(conn: &mut Conn, db: &str) -> Result<Option<String>> {
    if !table_exists(conn, db, "schema_version").await? {
        return Ok(None);
    }
    let v: Option<Option<String>> = conn
        .query_first(format!(
            "SELECT version FROM {}.schema_version WHERE success = 1 ORDER BY installed_rank DESC LIMIT 1",
            quote_ident(db)
        ))
        .await
        .with_context(|| format!("reading {db}.schema_version"))?;
    Ok(v.flatten())
}
