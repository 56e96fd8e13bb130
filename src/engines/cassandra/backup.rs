//! Cassandra (Mevoco 1.x monitoring: `zstack_billing`, `zstack_logging`, `kairosdb`): a
//! consistent snapshot through `nodetool`, shipped as immutable SSTable components.
//!
//! The flow of [`backup`]:
//!
//! 1. `nodetool flush <ks>` for every keyspace (unless `flush = false`), so the memtables are on
//!    disk;
//! 2. `nodetool snapshot -t mnbackup-<snapshot id> <keyspaces…>`: Cassandra hard-links every live
//!    SSTable into `<data_dir>/<ks>/<table>-<id>/snapshots/<tag>/` (with `manifest.json`, and
//!    `schema.cql` from 3.0 on);
//! 3. every file of those directories (and of `.<index>/` secondary index subdirectories) is put
//!    as item `cassandra/<ks>/<table>/<file>` with `delta: false`: SSTables are immutable, so an
//!    SSTable already in the repository is deduplicated whole and only new SSTables cost space;
//!    each `Data.db` is checked against its `Digest.*` component while it streams;
//! 4. when `cqlsh` is configured, `cqlsh -e "DESCRIBE KEYSPACE <ks>"` per keyspace, stored as item
//!    `cassandra/<ks>/keyspace.cql`: the keyspace's real replication and every table's CREATE
//!    statement (Cassandra 2.2 writes no `schema.cql`), so a restore can recreate them; a failure
//!    there is a warning, not an error (the SSTables are what matters);
//! 5. `nodetool clearsnapshot -t <tag>`, always, also when a step above failed (a guard does it),
//!    so snapshots never pile up on the node.
//!
//! The restore half is [`super::restore`]; what both share is in the sibling modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::config::CassandraConfig;
use super::cql::is_system_keyspace;
use super::sstable::{is_valid_name, split_table_dir};
use super::table::{put_table, TablePut, Tally};
use super::tool::{run_command, Nodetool};
use crate::model::cassandra_info::{CassandraItem, CassandraSourceInfo, ComponentInfo, TableInfo};
use crate::model::Gap;
use crate::model::{ItemSink, ItemSpec};

/// What [`backup`] did (also recorded, with per-table detail, as the `cassandra` source info).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CassandraSummary {
    /// The nodetool snapshot tag (`mnbackup-<snapshot id>`).
    pub tag: String,
    pub keyspaces: Vec<String>,
    pub tables: usize,
    pub sstables: usize,
    /// Items put (components, `schema.cql`, `manifest.json`).
    pub files: usize,
    pub bytes: u64,
    /// `Data.db` files checked against their digest.
    pub digests_checked: usize,
    /// SSTable components unchanged since the previous snapshot (same name, size, mtime and
    /// inode), recorded without reading them.
    pub files_unchanged: usize,
    /// Bytes read from the node's files (unchanged components cost none).
    pub bytes_read: u64,
    /// SSTables without a digest component (nothing to check).
    pub digests_missing: usize,
    /// Whether `nodetool clearsnapshot` succeeded.
    pub snapshot_cleared: bool,
    /// Keyspaces whose `DESCRIBE KEYSPACE` was stored as `cassandra/<ks>/keyspace.cql`.
    pub keyspace_schemas: Vec<String>,
    /// `mnbackup-*` snapshots of earlier runs found on the node and cleared.
    pub leaked_snapshots_cleared: Vec<String>,
    pub warnings: Vec<String>,
}

/// The user keyspaces found in `data_dirs` (directories that are not Cassandra's own).
pub fn discover_keyspaces(data_dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    let mut any_dir = false;
    for d in data_dirs {
        let rd = match fs::read_dir(d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("listing the Cassandra data directory {}", d.display())
                })
            }
        };
        any_dir = true;
        for e in rd {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() && is_valid_name(&name) && !is_system_keyspace(&name) {
                out.insert(name);
            }
        }
    }
    if !any_dir {
        bail!(
            "none of the Cassandra data directories exists ({}): set [cassandra] data_dirs to \
             the node's data_file_directories (cassandra.yaml)",
            data_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out.into_iter().collect())
}

/// Clears the nodetool snapshot when dropped (unless [`SnapshotGuard::clear`] already did).
struct SnapshotGuard<'a> {
    nodetool: &'a Nodetool,
    tag: String,
    done: bool,
}

impl SnapshotGuard<'_> {
    fn clear(&mut self) -> Result<()> {
        self.done = true;
        self.nodetool
            .run(&["clearsnapshot", "-t", &self.tag])
            .map(|_| ())
            .with_context(|| {
                format!(
                    "clearing the Cassandra snapshot {}; remove it with `nodetool clearsnapshot \
                     -t {}` or it keeps disk space",
                    self.tag, self.tag
                )
            })
    }
}

impl Drop for SnapshotGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.clear() {
                tracing::warn!("{e:#}");
            }
        }
    }
}

/// Back up the Cassandra node of `cfg` into `sink` (see the module documentation). Blocking.
pub fn backup(
    cfg: &CassandraConfig,
    snapshot_id: &str,
    sink: &dyn ItemSink,
) -> Result<CassandraSummary> {
    let nodetool = cfg.nodetool()?;
    super::tool::set_command_timeout(cfg.command_timeout_seconds);
    if snapshot_id.is_empty()
        || !snapshot_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        bail!("snapshot id {snapshot_id:?} cannot be used as a nodetool snapshot tag");
    }
    let tag = format!("mnbackup-{snapshot_id}");
    let keyspaces = match &cfg.keyspaces {
        Some(list) => list.clone(),
        None => discover_keyspaces(&cfg.data_dirs)?,
    };
    let mut summary = CassandraSummary {
        tag: tag.clone(),
        keyspaces: keyspaces.clone(),
        ..Default::default()
    };
    let mut info = CassandraSourceInfo {
        tag: tag.clone(),
        keyspaces: keyspaces.clone(),
        data_dirs: cfg.data_dirs.clone(),
        tables: Vec::new(),
        digest_checks: Vec::new(),
        snapshot_cleared: false,
        keyspace_schemas: Vec::new(),
        leaked_snapshots_cleared: Vec::new(),
        files_unchanged: 0,
        bytes_read: 0,
        warnings: Vec::new(),
    };
    if keyspaces.is_empty() {
        // `nodetool snapshot` without keyspaces would snapshot every keyspace: never call it so.
        let w = format!(
            "no user keyspace found in {}: nothing of Cassandra was backed up",
            cfg.data_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::warn!("{w}");
        summary.warnings.push(w.clone());
        info.warnings.push(w.clone());
        sink.gap(Gap::new("cassandra", "source", w).fix(
            "check [cassandra] data_dirs and keyspaces against cassandra.yaml's \
             data_file_directories, or remove the [cassandra] section on a node without \
             Cassandra",
        ));
        info.snapshot_cleared = true;
        summary.snapshot_cleared = true;
        sink.set_source_info("cassandra", serde_json::to_value(&info)?);
        return Ok(summary);
    }

    clear_leaked_snapshots(&nodetool, &tag, &mut summary, &mut info)?;

    if cfg.flush {
        for ks in &keyspaces {
            nodetool
                .run(&["flush", ks])
                .with_context(|| format!("flushing Cassandra keyspace {ks} before the snapshot"))?;
        }
    }

    // Armed before the snapshot command: a snapshot that half-succeeded is cleared too.
    let mut guard = SnapshotGuard {
        nodetool: &nodetool,
        tag: tag.clone(),
        done: false,
    };
    let mut args = vec!["snapshot", "-t", tag.as_str()];
    args.extend(keyspaces.iter().map(|s| s.as_str()));
    let result = nodetool
        .run(&args)
        .context("taking the Cassandra snapshot")
        .and_then(|_| collect(cfg, &keyspaces, &tag, sink, &mut summary, &mut info))
        .and_then(|_| describe_keyspaces(cfg, &keyspaces, sink, &mut summary, &mut info));
    let cleared = guard.clear();
    drop(guard);
    match (result, cleared) {
        (Err(e), Err(ce)) => {
            tracing::warn!("{ce:#}");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), cleared) => {
            if let Err(ce) = cleared {
                let w = format!("{ce:#}");
                tracing::warn!("{w}");
                summary.warnings.push(w.clone());
                info.warnings.push(w);
            } else {
                summary.snapshot_cleared = true;
                info.snapshot_cleared = true;
            }
            info.files_unchanged = summary.files_unchanged;
            info.bytes_read = summary.bytes_read;
            sink.set_source_info("cassandra", serde_json::to_value(&info)?);
            Ok(summary)
        }
    }
}

/// The `mnbackup-*` snapshot tags `nodetool listsnapshots` lists.
pub fn mnbackup_tags(listsnapshots: &str) -> BTreeSet<String> {
    listsnapshots
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| t.starts_with("mnbackup-") && t.len() > "mnbackup-".len())
        .map(str::to_string)
        .collect()
}

/// Clear every `mnbackup-*` snapshot on the node that is not this run's `tag`: left by a run
/// whose `clearsnapshot` failed or that was killed, they would keep disk space forever (a
/// repository lock makes sure no other run of this repository is taking one now). Each one
/// cleared is reported (log and source info); a failure to list or clear is a warning.
fn clear_leaked_snapshots(
    nodetool: &Nodetool,
    tag: &str,
    summary: &mut CassandraSummary,
    info: &mut CassandraSourceInfo,
) -> Result<()> {
    let listed = nodetool
        .run(&["listsnapshots"])
        .context("listing the node's snapshots (`nodetool listsnapshots`)")?;
    for old in mnbackup_tags(&listed) {
        if old == tag {
            continue;
        }
        match nodetool.run(&["clearsnapshot", "-t", &old]) {
            Ok(_) => {
                tracing::warn!(
                    "cleared Cassandra snapshot {old}, left on the node by an earlier mnbackup \
                     run that could not clear it"
                );
                summary.leaked_snapshots_cleared.push(old.clone());
                info.leaked_snapshots_cleared.push(old);
            }
            Err(e) => {
                let w = format!(
                    "the Cassandra snapshot {old} of an earlier run is still on the node and \
                     keeps disk space: {e:#}; remove it with `nodetool clearsnapshot -t {old}`"
                );
                tracing::warn!("{w}");
                summary.warnings.push(w.clone());
                info.warnings.push(w);
            }
        }
    }
    Ok(())
}

/// One file found in a table's snapshot directory.
pub(super) struct Found {
    /// Relative to the snapshot directory (`md-1-big-Data.db`, `.idx/md-1-big-Data.db`).
    pub(super) rel: String,
    pub(super) path: PathBuf,
}

/// The files of one directory level of a snapshot; returns the `.<index>` subdirectories.
fn list_level(
    sub: Option<&str>,
    dir: &Path,
    out: &mut Vec<Found>,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, PathBuf)>> {
    let mut subdirs = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type()?;
        let rel = match sub {
            Some(s) => format!("{s}/{name}"),
            None => name.clone(),
        };
        if ft.is_file() {
            out.push(Found {
                rel,
                path: e.path(),
            });
        } else if ft.is_dir()
            && sub.is_none()
            && name.len() > 1
            && name.starts_with('.')
            && is_valid_name(&name[1..])
        {
            subdirs.push((name, e.path()));
        } else {
            warnings.push(format!(
                "skipped {} (not an SSTable component or a secondary index directory)",
                e.path().display()
            ));
        }
    }
    Ok(subdirs)
}

/// Every file of a table's snapshot directory, secondary index directories included, sorted.
fn list_snapshot_dir(dir: &Path, warnings: &mut Vec<String>) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let subdirs = list_level(None, dir, &mut out, warnings)?;
    for (name, path) in subdirs {
        list_level(Some(&name), &path, &mut out, warnings)?;
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn collect(
    cfg: &CassandraConfig,
    keyspaces: &[String],
    tag: &str,
    sink: &dyn ItemSink,
    summary: &mut CassandraSummary,
    info: &mut CassandraSourceInfo,
) -> Result<()> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut table_dirs_seen = 0usize;
    // The previous snapshot's components, by "<ks>/<table>/<name>".
    let previous: BTreeMap<String, ComponentInfo> = sink
        .parent_source_info("cassandra")
        .and_then(|v| serde_json::from_value::<CassandraSourceInfo>(v).ok())
        .map(|p| {
            p.tables
                .into_iter()
                .flat_map(|t| {
                    let (ks, tb) = (t.keyspace, t.table);
                    t.components
                        .into_iter()
                        .map(move |c| (format!("{ks}/{tb}/{}", c.name), c))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut table_index: BTreeMap<(String, String), usize> = BTreeMap::new();
    for data_dir in &cfg.data_dirs {
        for ks in keyspaces {
            let ks_dir = data_dir.join(ks);
            let rd = match fs::read_dir(&ks_dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", ks_dir.display())),
            };
            let mut dirs: Vec<(String, PathBuf)> = Vec::new();
            for e in rd {
                let e = e.with_context(|| format!("listing {}", ks_dir.display()))?;
                if e.file_type()?.is_dir() {
                    dirs.push((e.file_name().to_string_lossy().into_owned(), e.path()));
                }
            }
            dirs.sort();
            for (dir_name, table_dir) in dirs {
                let (table, id) = split_table_dir(&dir_name);
                if !is_valid_name(table) {
                    continue;
                }
                table_dirs_seen += 1;
                let snap = table_dir.join("snapshots").join(tag);
                if !snap.is_dir() {
                    continue;
                }
                let found = list_snapshot_dir(&snap, &mut info.warnings)?;
                let key = (ks.clone(), table.to_string());
                let idx = match table_index.get(&key) {
                    Some(&i) => i,
                    None => {
                        info.tables.push(TableInfo {
                            keyspace: ks.clone(),
                            table: table.to_string(),
                            id: id.map(str::to_string),
                            data_dir: data_dir.clone(),
                            dir: dir_name.clone(),
                            versions: Vec::new(),
                            sstables: 0,
                            bytes: 0,
                            components: Vec::new(),
                        });
                        table_index.insert(key, info.tables.len() - 1);
                        info.tables.len() - 1
                    }
                };
                let tp = TablePut {
                    ks,
                    table,
                    sink,
                    previous: &previous,
                    idx,
                };
                let mut tally = Tally {
                    names: &mut names,
                    summary: &mut *summary,
                    info: &mut *info,
                };
                put_table(&tp, &found, &mut tally)?;
            }
        }
    }
    if info.tables.is_empty() && table_dirs_seen > 0 {
        bail!(
            "`nodetool snapshot -t {tag}` succeeded but no snapshots/{tag} directory appeared \
             under {}: is [cassandra] data_dirs the node's data_file_directories (cassandra.yaml), \
             and is nodetool talking to the Cassandra on this machine?",
            cfg.data_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    summary.tables = info.tables.len();
    summary.warnings.extend(info.warnings.iter().cloned());
    Ok(())
}

/// `DESCRIBE KEYSPACE <ks>` of every keyspace through the configured cqlsh, stored as
/// `cassandra/<ks>/keyspace.cql`. Does nothing without a cqlsh; a cqlsh failure (or an answer
/// without CREATE KEYSPACE) is a warning; a sink failure is an error.
fn describe_keyspaces(
    cfg: &CassandraConfig,
    keyspaces: &[String],
    sink: &dyn ItemSink,
    summary: &mut CassandraSummary,
    info: &mut CassandraSourceInfo,
) -> Result<()> {
    let Some(cqlsh) = &cfg.cqlsh else {
        return Ok(());
    };
    let base = cqlsh.argv();
    for ks in keyspaces {
        // Mixed-case names are case-sensitive only when quoted.
        let quoted = if ks.bytes().any(|b| b.is_ascii_uppercase()) {
            format!("\"{ks}\"")
        } else {
            ks.clone()
        };
        let mut argv = base.clone();
        argv.extend(["-e".to_string(), format!("DESCRIBE KEYSPACE {quoted}")]);
        let result = run_command(
            &argv,
            "Check that Cassandra accepts CQL (port 9042) and the cqlsh command and credentials \
             in [cassandra] cqlsh.",
        );
        let text = match result {
            Ok(t) if t.to_ascii_uppercase().contains("CREATE KEYSPACE") => t,
            other => {
                let why = match other {
                    Ok(t) => format!(
                        "`DESCRIBE KEYSPACE {quoted}` printed no CREATE KEYSPACE ({:?})",
                        t.trim().chars().take(200).collect::<String>()
                    ),
                    Err(e) => format!("{e:#}"),
                };
                let w = format!(
                    "the schema of keyspace {ks} (replication, CREATE TABLE statements) is not \
                     in this backup, its SSTables are: {why}"
                );
                tracing::warn!("{w}");
                summary.warnings.push(w.clone());
                info.warnings.push(w);
                // Without it a restore into a node that lacks the keyspace cannot recreate it
                // with its real replication: a gap, never only a warning.
                sink.gap(
                    Gap::new("cassandra", "schema", why)
                        .subject(ks.clone())
                        .fix(
                            "make `DESCRIBE KEYSPACE` work with the [cassandra] cqlsh command \
                             (Cassandra's CQL port 9042, credentials), then take a new snapshot",
                        ),
                );
                continue;
            }
        };
        let spec = ItemSpec::content(
            CassandraItem::KeyspaceCql {
                keyspace: ks.clone(),
            }
            .encode(),
            false,
        );
        let mut reader = text.as_bytes();
        sink.put_reader(spec, &mut reader)
            .with_context(|| format!("storing the schema of Cassandra keyspace {ks}"))?;
        summary.files += 1;
        summary.bytes += text.len() as u64;
        summary.keyspace_schemas.push(ks.clone());
        info.keyspace_schemas.push(ks.clone());
    }
    Ok(())
}
