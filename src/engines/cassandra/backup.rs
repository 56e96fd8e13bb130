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
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::config::CassandraConfig;
use super::cql::is_system_keyspace;
use super::digest::{digest_mismatch, ExpectedDigest, HashingReader};
use super::sstable::{is_valid_name, split_table_dir, SstableFile};
use super::tool::{run_command, Nodetool};
use crate::model::cassandra_info::{
    CassandraItem, CassandraSourceInfo, ComponentInfo, DigestCheck, TableInfo,
};
use crate::model::{EntryKind, Gap};
use crate::source::{ItemSink, ItemSpec};

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
struct Found {
    /// Relative to the snapshot directory (`md-1-big-Data.db`, `.idx/md-1-big-Data.db`).
    rel: String,
    path: PathBuf,
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

/// One table's snapshot directory being stored.
struct TablePut<'a> {
    ks: &'a str,
    table: &'a str,
    sink: &'a dyn ItemSink,
    /// The previous snapshot's components, by `<ks>/<table>/<name>`.
    previous: &'a BTreeMap<String, ComponentInfo>,
    /// The table's index in `info.tables`.
    idx: usize,
}

/// What the backup records as it goes.
struct Tally<'a> {
    /// Item names put so far.
    names: &'a mut BTreeSet<String>,
    summary: &'a mut CassandraSummary,
    info: &'a mut CassandraSourceInfo,
}

/// `("<subdir/>stem", parsed name)` of an SSTable component path.
fn key_of(rel: &str) -> Option<(String, SstableFile)> {
    let (sub, base) = match rel.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), rel),
    };
    SstableFile::parse(base).map(|s| (format!("{sub}{}", s.stem), s))
}

/// The first `limit` bytes of a file.
fn read_head(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut text = Vec::new();
    File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(limit)
        .read_to_end(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(text)
}

fn put_table(tp: &TablePut<'_>, found: &[Found], tally: &mut Tally<'_>) -> Result<()> {
    // Digests first: small files, read whole, keyed by "<subdir/>stem".
    let mut expected: BTreeMap<String, ExpectedDigest> = BTreeMap::new();
    let mut stems = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for f in found {
        let Some((key, sf)) = key_of(&f.rel) else {
            continue;
        };
        stems.insert(key.clone());
        versions.insert(sf.version.clone());
        if sf.is_digest() {
            let text = read_head(&f.path, 4096)?;
            let d = ExpectedDigest::parse(&sf.component, &text)
                .with_context(|| format!("SSTable {}", f.path.display()))?;
            let d = ExpectedDigest {
                component: f.rel.rsplit('/').next().unwrap_or(&f.rel).to_string(),
                ..d
            };
            expected.insert(key, d);
        }
    }
    tally.summary.digests_missing += found
        .iter()
        .filter_map(|f| key_of(&f.rel))
        .filter(|(k, s)| s.is_data() && !expected.contains_key(k))
        .map(|(k, _)| k)
        .collect::<BTreeSet<String>>()
        .len();

    let mut bad = incomplete_sstables(tp, found)?;
    // Data.db first: a damaged one is found before any other component of its SSTable is
    // stored, so a left-out SSTable leaves nothing behind.
    let mut ordered: Vec<&Found> = found.iter().collect();
    ordered.sort_by_key(|f| !key_of(&f.rel).is_some_and(|(_, s)| s.is_data()));
    for f in ordered {
        put_component(tp, f, &expected, &mut bad, tally)?;
    }
    let t = &mut tally.info.tables[tp.idx];
    let stored_stems = stems.iter().filter(|k| !bad.contains(*k)).count();
    t.sstables += stored_stems;
    tally.summary.sstables += stored_stems;
    for v in versions {
        if !t.versions.contains(&v) {
            t.versions.push(v);
        }
    }
    Ok(())
}

/// SSTables left out, each recorded as a gap: a component listed in TOC.txt is missing (found
/// now). (One whose Data.db does not match its digest is found while storing it.)
fn incomplete_sstables(tp: &TablePut<'_>, found: &[Found]) -> Result<BTreeSet<String>> {
    let mut bad: BTreeSet<String> = BTreeSet::new();
    let present: BTreeSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    for f in found {
        let Some((key, sf)) = key_of(&f.rel) else {
            continue;
        };
        if sf.component != "TOC.txt" {
            continue;
        }
        let text = String::from_utf8(read_head(&f.path, 4096)?)
            .with_context(|| format!("reading {}", f.path.display()))?;
        let prefix = f.rel.strip_suffix("TOC.txt").unwrap_or(&f.rel);
        let missing: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|c| !c.is_empty() && !present.contains(format!("{prefix}{c}").as_str()))
            .collect();
        if !missing.is_empty() {
            bad.insert(key.clone());
            tp.sink.gap(sstable_gap(
                tp,
                &key,
                format!(
                    "SSTable {key} is incomplete: its TOC.txt lists {} but the node has no \
                     such file; the SSTable was left out",
                    missing.join(", ")
                ),
            ));
        }
    }
    Ok(bad)
}

/// The gap of an SSTable left out.
fn sstable_gap(tp: &TablePut<'_>, key: &str, what: String) -> Gap {
    let (ks, table) = (tp.ks, tp.table);
    Gap::new("cassandra", "sstable", what)
        .subject(format!("{ks}.{table}/{key}"))
        .fix(format!(
            "run `nodetool scrub {ks} {table}` (or `nodetool repair {ks} {table}` to \
             fetch the data from other replicas), then take a new snapshot"
        ))
}

/// Store one file of the table's snapshot directory: recorded without reading when unchanged
/// since the previous snapshot, else streamed, a `Data.db` checked against its digest (a
/// mismatch leaves its SSTable out, as a gap, and adds it to `bad`).
fn put_component(
    tp: &TablePut<'_>,
    f: &Found,
    expected: &BTreeMap<String, ExpectedDigest>,
    bad: &mut BTreeSet<String>,
    tally: &mut Tally<'_>,
) -> Result<()> {
    let (ks, table) = (tp.ks, tp.table);
    let parsed = key_of(&f.rel);
    if parsed.as_ref().is_some_and(|(k, _)| bad.contains(k)) {
        return Ok(());
    }
    let name = CassandraItem::TableFile {
        keyspace: ks.to_string(),
        table: table.to_string(),
        file: f.rel.clone(),
    }
    .encode();
    if !tally.names.insert(name.clone()) {
        if matches!(f.rel.as_str(), "schema.cql" | "manifest.json") {
            // A table spread over several data directories has one of these in each.
            return Ok(());
        }
        bail!(
            "two files of Cassandra table {ks}.{table} are named {} (in different data \
             directories); this should not happen, check the node's data_file_directories",
            f.rel
        );
    }
    let file = File::open(&f.path).with_context(|| format!("opening {}", f.path.display()))?;
    let md = file
        .metadata()
        .with_context(|| format!("reading the metadata of {}", f.path.display()))?;
    use std::os::unix::fs::MetadataExt;
    let (mtime_ns, ino) = (md.mtime() * 1_000_000_000 + md.mtime_nsec(), md.ino());
    let spec = ItemSpec {
        name,
        kind: EntryKind::File,
        meta: Some(crate::engines::files::file_meta(&md)),
        target: None,
        delta: false,
    };
    let component = |size: u64| ComponentInfo {
        name: f.rel.clone(),
        size,
        mtime_ns: Some(mtime_ns),
        ino: Some(ino),
    };
    let unchanged = parsed.is_some()
        && tp
            .previous
            .get(&format!("{ks}/{table}/{}", f.rel))
            .is_some_and(|p| {
                p.size == md.len() && p.mtime_ns == Some(mtime_ns) && p.ino == Some(ino)
            });
    if unchanged && tp.sink.put_unchanged(spec.clone(), md.len())? {
        tally.summary.files += 1;
        tally.summary.files_unchanged += 1;
        tally.summary.bytes += md.len();
        let t = &mut tally.info.tables[tp.idx];
        t.bytes += md.len();
        t.components.push(component(md.len()));
        return Ok(());
    }
    let exp = parsed
        .as_ref()
        .filter(|(_, s)| s.is_data())
        .and_then(|(k, _)| expected.get(k));
    let mut reader = VerifyingReader {
        inner: HashingReader::new(file, exp.map(|e| e.algo)),
        expected: exp.map(|e| e.value.clone()),
        mismatch: None,
    };
    let stored = tp.sink.put_reader(spec, &mut reader);
    let check = |actual: String, ok: bool, exp: &ExpectedDigest| {
        let (key, _) = parsed.as_ref().expect("parsed data file");
        DigestCheck {
            sstable: format!("{ks}.{table}/{key}"),
            algorithm: format!("{:?}", exp.algo).to_lowercase(),
            expected: exp.value.clone(),
            actual,
            ok,
        }
    };
    if let (Some(exp), Some(actual)) = (exp, reader.mismatch.take()) {
        // The damaged SSTable is left out (the sink did not record the item), the rest of
        // the node is backed up.
        let (key, _) = parsed.as_ref().expect("parsed data file");
        tally
            .info
            .digest_checks
            .push(check(actual.clone(), false, exp));
        bad.insert(key.clone());
        let e = digest_mismatch(&f.path.display().to_string(), exp, &actual);
        tp.sink.gap(sstable_gap(
            tp,
            key,
            format!("{e:#}; the SSTable was left out"),
        ));
        return Ok(());
    }
    stored.with_context(|| format!("storing {}", f.path.display()))?;
    if let (Some(exp), Some(d)) = (exp, &reader.inner.digester) {
        tally.info.digest_checks.push(check(d.value(), true, exp));
        tally.summary.digests_checked += 1;
    }
    let bytes = reader.inner.bytes;
    tally.summary.files += 1;
    tally.summary.bytes += bytes;
    tally.summary.bytes_read += bytes;
    let t = &mut tally.info.tables[tp.idx];
    t.bytes += bytes;
    t.components.push(component(bytes));
    Ok(())
}

/// Streams a `Data.db` while computing its digest; at the end, a digest that differs from the
/// expected one fails the read (so the sink does not record the item) and is kept in
/// `mismatch`.
struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Option<String>,
    /// The actual digest, when it did not match.
    mismatch: Option<String>,
}

impl<R: std::io::Read> std::io::Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let (Some(want), Some(d)) = (&self.expected, &self.inner.digester) {
                let actual = d.value();
                if &actual != want {
                    self.mismatch = Some(actual);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "Data.db does not match its digest component",
                    ));
                }
            }
        }
        Ok(n)
    }
}
