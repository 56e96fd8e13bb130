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
//! The restore half is `mnbackup_restore::cassandra`, which also holds what both halves share
//! (running nodetool, SSTable names, digests).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use mnbackup_restore::cassandra::{
    digest_mismatch, is_valid_name, run_command, split_command_line, split_table_dir,
    CassandraRestoreConfig, ExpectedDigest, HashingReader, JmxPassword, Nodetool, SstableFile,
};
use serde::{Deserialize, Serialize};

use crate::error::MnError;
use crate::model::{EntryKind, Gap};
use crate::source::{ItemSink, ItemSpec};

/// A command given in the configuration either as one string (`"nodetool"`,
/// `"/opt/cassandra/bin/nodetool -Dcom.sun.jndi.rmiURLParsing=legacy"`, split like a shell
/// would, without expansions) or as a list of words.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CommandLine {
    Line(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// Program and arguments.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Line(s) => split_command_line(s),
            CommandLine::Argv(v) => v.clone(),
        }
    }
}

/// `[cassandra]`: back up the local Cassandra node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CassandraConfig {
    /// The node's `data_file_directories` (cassandra.yaml).
    pub data_dirs: Vec<PathBuf>,
    /// How to run nodetool: a path or a command with arguments.
    pub nodetool: CommandLine,
    /// JMX host (nodetool `-h`); unset uses nodetool's default, 127.0.0.1.
    pub host: Option<String>,
    /// JMX port (nodetool `-p`).
    pub port: u16,
    /// JMX user, when JMX authentication is on.
    pub jmx_user: Option<String>,
    /// Name of an environment variable holding the JMX password.
    pub jmx_password_env: Option<String>,
    /// A file holding the JMX password, or a JMX password file (`<user> <password>` lines).
    pub jmx_password_file: Option<PathBuf>,
    /// Keyspaces to back up; unset: every keyspace found in `data_dirs` except Cassandra's own
    /// (`system*`, `dse_*`).
    pub keyspaces: Option<Vec<String>>,
    /// Run `nodetool flush` per keyspace before the snapshot.
    pub flush: bool,
    /// cqlsh command (with host, `-u`, … as needed): the backup stores each keyspace's
    /// `DESCRIBE KEYSPACE` through it, the restore creates missing keyspaces and tables with it.
    pub cqlsh: Option<CommandLine>,
    /// Owner of restored files (skipped when the user does not exist).
    pub owner: Option<String>,
    /// Restore with `nodetool import` (Cassandra 4.0+) instead of placing the files in the live
    /// table directory and running `nodetool refresh`.
    pub import: bool,
    /// Seconds a nodetool or cqlsh command may run before it is killed (with its children) and
    /// the backup or restore of Cassandra fails naming it.
    pub command_timeout_seconds: u64,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            data_dirs: vec![PathBuf::from("/var/lib/cassandra/data")],
            nodetool: CommandLine::Line("nodetool".to_string()),
            host: None,
            port: 7199,
            jmx_user: None,
            jmx_password_env: None,
            jmx_password_file: None,
            keyspaces: None,
            flush: true,
            cqlsh: None,
            owner: Some("cassandra".to_string()),
            import: false,
            command_timeout_seconds: mnbackup_restore::cassandra::DEFAULT_COMMAND_TIMEOUT_SECS,
        }
    }
}

/// Cassandra's own keyspaces, never backed up by default.
pub fn is_system_keyspace(name: &str) -> bool {
    matches!(
        name,
        "system"
            | "system_auth"
            | "system_schema"
            | "system_distributed"
            | "system_traces"
            | "system_views"
            | "system_virtual_schema"
    ) || name.starts_with("dse_")
}

impl CassandraConfig {
    /// Check the configuration without running anything.
    pub fn validate(&self) -> Result<()> {
        if self.data_dirs.is_empty() {
            return Err(MnError::Usage(
                "[cassandra] data_dirs is empty; give the node's data_file_directories \
                 (default /var/lib/cassandra/data)"
                    .into(),
            )
            .into());
        }
        if self.command_timeout_seconds == 0 {
            return Err(MnError::Usage(
                "[cassandra] command_timeout_seconds is 0; give the seconds a nodetool or cqlsh \
                 command may take (default 600)"
                    .into(),
            )
            .into());
        }
        if self.nodetool.argv().is_empty() {
            return Err(MnError::Usage("[cassandra] nodetool is empty".into()).into());
        }
        if self.jmx_password_env.is_some() && self.jmx_password_file.is_some() {
            return Err(MnError::Usage(
                "[cassandra] sets both jmx_password_env and jmx_password_file; keep one".into(),
            )
            .into());
        }
        if (self.jmx_password_env.is_some() || self.jmx_password_file.is_some())
            && self.jmx_user.is_none()
        {
            return Err(MnError::Usage(
                "[cassandra] has a JMX password but no jmx_user; nodetool needs both".into(),
            )
            .into());
        }
        if let Some(list) = &self.keyspaces {
            for ks in list {
                if !is_valid_name(ks) {
                    return Err(MnError::Usage(format!(
                        "[cassandra] keyspaces: {ks:?} is not a Cassandra keyspace name \
                         ([A-Za-z0-9_])"
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    /// How to run nodetool, with the JMX password resolved (never placed on a command line).
    pub fn nodetool(&self) -> Result<Nodetool> {
        self.validate()?;
        let password = if let Some(var) = &self.jmx_password_env {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(JmxPassword::Value(v)),
                _ => {
                    return Err(MnError::Usage(format!(
                        "[cassandra] jmx_password_env names {var}, but that environment variable \
                         is not set (or empty) in mnbackup's environment"
                    ))
                    .into())
                }
            }
        } else if let Some(path) = &self.jmx_password_file {
            let text = fs::read_to_string(path).with_context(|| {
                format!(
                    "reading the JMX password file {} ([cassandra] jmx_password_file)",
                    path.display()
                )
            })?;
            let user = self.jmx_user.as_deref().unwrap_or("");
            let jmx_format = text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() == 2 && w[0] == user
            });
            if jmx_format {
                Some(JmxPassword::PasswordFile(path.clone()))
            } else {
                let pw = text.trim_end_matches(['\r', '\n']).to_string();
                if pw.is_empty() {
                    return Err(MnError::Usage(format!(
                        "the JMX password file {} is empty",
                        path.display()
                    ))
                    .into());
                }
                Some(JmxPassword::Value(pw))
            }
        } else {
            None
        };
        Ok(Nodetool {
            argv: self.nodetool.argv(),
            host: self.host.clone(),
            port: Some(self.port),
            user: self.jmx_user.clone(),
            password,
        })
    }

    /// The restore's configuration: into `data_dir` (default: the first of `data_dirs`).
    pub fn restore_config(&self, data_dir: Option<PathBuf>) -> Result<CassandraRestoreConfig> {
        let nodetool = self.nodetool()?; // validates: data_dirs is not empty
        mnbackup_restore::cassandra::set_command_timeout(self.command_timeout_seconds);
        let data_dir = match data_dir.or_else(|| self.data_dirs.first().cloned()) {
            Some(d) => d,
            None => {
                return Err(MnError::Usage(
                    "[cassandra] data_dirs is empty; give the node's data_file_directories \
                     (default /var/lib/cassandra/data)"
                        .into(),
                )
                .into())
            }
        };
        let mut rc = CassandraRestoreConfig::new(data_dir, nodetool);
        rc.cqlsh = self.cqlsh.as_ref().map(|c| c.argv());
        rc.owner = self.owner.clone();
        rc.use_import = self.import;
        Ok(rc)
    }
}

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

/// Source info: one component.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Path relative to the table directory (`md-1-big-Data.db`, `.idx/…`).
    pub name: String,
    pub size: u64,
    /// Modification time (ns) and inode of the file when it was backed up: an SSTable
    /// component with the same name, size, mtime and inode in the next run is unchanged
    /// (SSTables are immutable) and is not read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
}

/// Source info: one table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableInfo {
    pub keyspace: String,
    pub table: String,
    /// The table id (hex, from the directory name); None for 2.0-style directories.
    pub id: Option<String>,
    pub data_dir: PathBuf,
    /// The table directory's name (`<table>-<id>`).
    pub dir: String,
    /// SSTable format versions present (`ka`, `md`, `nb`, …).
    pub versions: Vec<String>,
    pub sstables: usize,
    pub bytes: u64,
    pub components: Vec<ComponentInfo>,
}

/// Source info: one digest check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestCheck {
    /// `<ks>.<table>/<sstable stem>`.
    pub sstable: String,
    pub algorithm: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

/// The `cassandra` entry of a manifest's `sources`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CassandraSourceInfo {
    pub tag: String,
    pub keyspaces: Vec<String>,
    pub data_dirs: Vec<PathBuf>,
    pub tables: Vec<TableInfo>,
    pub digest_checks: Vec<DigestCheck>,
    pub snapshot_cleared: bool,
    /// Keyspaces whose `DESCRIBE KEYSPACE` was stored as `cassandra/<ks>/keyspace.cql`.
    #[serde(default)]
    pub keyspace_schemas: Vec<String>,
    /// `mnbackup-*` snapshots of earlier runs found on the node and cleared.
    #[serde(default)]
    pub leaked_snapshots_cleared: Vec<String>,
    /// SSTable components unchanged since the previous snapshot, recorded without reading.
    #[serde(default)]
    pub files_unchanged: usize,
    /// Bytes read from the node's files by this run.
    #[serde(default)]
    pub bytes_read: u64,
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
    mnbackup_restore::cassandra::set_command_timeout(cfg.command_timeout_seconds);
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
                put_table(
                    ks, table, &found, sink, &mut names, summary, info, idx, &previous,
                )?;
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
        let spec = ItemSpec::content(format!("cassandra/{ks}/keyspace.cql"), false);
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

#[allow(clippy::too_many_arguments)]
fn put_table(
    ks: &str,
    table: &str,
    found: &[Found],
    sink: &dyn ItemSink,
    names: &mut BTreeSet<String>,
    summary: &mut CassandraSummary,
    info: &mut CassandraSourceInfo,
    idx: usize,
    previous: &BTreeMap<String, ComponentInfo>,
) -> Result<()> {
    // Digests first: small files, read whole, keyed by "<subdir/>stem".
    let key_of = |rel: &str| -> Option<(String, SstableFile)> {
        let (sub, base) = match rel.rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), rel),
        };
        SstableFile::parse(base).map(|s| (format!("{sub}{}", s.stem), s))
    };
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
            let mut text = Vec::new();
            use std::io::Read;
            File::open(&f.path)
                .with_context(|| format!("opening {}", f.path.display()))?
                .take(4096)
                .read_to_end(&mut text)
                .with_context(|| format!("reading {}", f.path.display()))?;
            let d = ExpectedDigest::parse(&sf.component, &text)
                .with_context(|| format!("SSTable {}", f.path.display()))?;
            let d = ExpectedDigest {
                component: f.rel.rsplit('/').next().unwrap_or(&f.rel).to_string(),
                ..d
            };
            expected.insert(key, d);
        }
    }
    let data_keys: BTreeSet<String> = found
        .iter()
        .filter_map(|f| key_of(&f.rel))
        .filter(|(_, s)| s.is_data())
        .map(|(k, _)| k)
        .collect();
    summary.digests_missing += data_keys
        .iter()
        .filter(|k| !expected.contains_key(*k))
        .count();

    // SSTables left out, each recorded as a gap: a component listed in TOC.txt is missing
    // (found now), or Data.db does not match its digest (found while storing it).
    let mut bad: BTreeSet<String> = BTreeSet::new();
    let present: BTreeSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    for f in found {
        let Some((key, sf)) = key_of(&f.rel) else {
            continue;
        };
        if sf.component != "TOC.txt" {
            continue;
        }
        let mut text = String::new();
        use std::io::Read;
        File::open(&f.path)
            .with_context(|| format!("opening {}", f.path.display()))?
            .take(4096)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", f.path.display()))?;
        let prefix = f.rel.strip_suffix("TOC.txt").unwrap_or(&f.rel);
        let missing: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|c| !c.is_empty() && !present.contains(format!("{prefix}{c}").as_str()))
            .collect();
        if !missing.is_empty() {
            bad.insert(key.clone());
            sink.gap(
                Gap::new(
                    "cassandra",
                    "sstable",
                    format!(
                        "SSTable {key} is incomplete: its TOC.txt lists {} but the node has no \
                         such file; the SSTable was left out",
                        missing.join(", ")
                    ),
                )
                .subject(format!("{ks}.{table}/{key}"))
                .fix(format!(
                    "run `nodetool scrub {ks} {table}` (or `nodetool repair {ks} {table}` to \
                     fetch the data from other replicas), then take a new snapshot"
                )),
            );
        }
    }
    // Data.db first: a damaged one is found before any other component of its SSTable is
    // stored, so a left-out SSTable leaves nothing behind.
    let mut ordered: Vec<&Found> = found.iter().collect();
    ordered.sort_by_key(|f| !key_of(&f.rel).is_some_and(|(_, s)| s.is_data()));

    for f in ordered {
        let parsed = key_of(&f.rel);
        if parsed.as_ref().is_some_and(|(k, _)| bad.contains(k)) {
            continue;
        }
        let name = format!("cassandra/{ks}/{table}/{}", f.rel);
        if !names.insert(name.clone()) {
            if matches!(f.rel.as_str(), "schema.cql" | "manifest.json") {
                // A table spread over several data directories has one of these in each.
                continue;
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
        let unchanged = parsed.is_some()
            && previous
                .get(&format!("{ks}/{table}/{}", f.rel))
                .is_some_and(|p| {
                    p.size == md.len() && p.mtime_ns == Some(mtime_ns) && p.ino == Some(ino)
                });
        if unchanged {
            let spec = ItemSpec {
                name: name.clone(),
                kind: EntryKind::File,
                meta: Some(crate::sources::files::file_meta(&md)),
                target: None,
                delta: false,
            };
            if sink.put_unchanged(spec, md.len())? {
                summary.files += 1;
                summary.files_unchanged += 1;
                summary.bytes += md.len();
                let t = &mut info.tables[idx];
                t.bytes += md.len();
                t.components.push(ComponentInfo {
                    name: f.rel.clone(),
                    size: md.len(),
                    mtime_ns: Some(mtime_ns),
                    ino: Some(ino),
                });
                continue;
            }
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
        let spec = ItemSpec {
            name: name.clone(),
            kind: EntryKind::File,
            meta: Some(crate::sources::files::file_meta(&md)),
            target: None,
            delta: false,
        };
        let stored = sink.put_reader(spec, &mut reader);
        if let (Some(exp), Some(actual)) = (exp, reader.mismatch.take()) {
            // The damaged SSTable is left out (the sink did not record the item), the rest of
            // the node is backed up.
            let (key, _) = parsed.as_ref().expect("parsed data file");
            info.digest_checks.push(DigestCheck {
                sstable: format!("{ks}.{table}/{key}"),
                algorithm: format!("{:?}", exp.algo).to_lowercase(),
                expected: exp.value.clone(),
                actual: actual.clone(),
                ok: false,
            });
            bad.insert(key.clone());
            let e = digest_mismatch(&f.path.display().to_string(), exp, &actual);
            sink.gap(
                Gap::new(
                    "cassandra",
                    "sstable",
                    format!("{e:#}; the SSTable was left out"),
                )
                .subject(format!("{ks}.{table}/{key}"))
                .fix(format!(
                    "run `nodetool scrub {ks} {table}` (or `nodetool repair {ks} {table}` to \
                         fetch the data from other replicas), then take a new snapshot"
                )),
            );
            continue;
        }
        stored.with_context(|| format!("storing {}", f.path.display()))?;
        if let (Some(exp), Some(d)) = (exp, &reader.inner.digester) {
            let actual = d.value();
            let (key, _) = parsed.as_ref().expect("parsed data file");
            info.digest_checks.push(DigestCheck {
                sstable: format!("{ks}.{table}/{key}"),
                algorithm: format!("{:?}", exp.algo).to_lowercase(),
                expected: exp.value.clone(),
                actual,
                ok: true,
            });
            summary.digests_checked += 1;
        }
        let reader = reader.inner;
        summary.files += 1;
        summary.bytes += reader.bytes;
        summary.bytes_read += reader.bytes;
        let t = &mut info.tables[idx];
        t.bytes += reader.bytes;
        t.components.push(ComponentInfo {
            name: f.rel.clone(),
            size: reader.bytes,
            mtime_ns: Some(mtime_ns),
            ino: Some(ino),
        });
    }
    let t = &mut info.tables[idx];
    let stored_stems = stems.iter().filter(|k| !bad.contains(*k)).count();
    t.sstables += stored_stems;
    summary.sstables += stored_stems;
    for v in versions {
        if !t.versions.contains(&v) {
            t.versions.push(v);
        }
    }
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

/// Parse a `[cassandra]` table (for tests and `config check`).
pub fn parse_config(toml_text: &str) -> Result<CassandraConfig> {
    toml::from_str(toml_text).map_err(|e| anyhow!("invalid [cassandra] configuration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c = parse_config("").unwrap();
        assert_eq!(c.data_dirs, vec![PathBuf::from("/var/lib/cassandra/data")]);
        assert_eq!(c.port, 7199);
        assert!(c.flush);
        assert_eq!(c.nodetool.argv(), vec!["nodetool"]);
        let c = parse_config(
            "nodetool = \"/opt/cassandra/bin/nodetool -Dx=1\"\nkeyspaces = [\"kairosdb\"]\n\
             cqlsh = [\"cqlsh\", \"127.0.0.1\"]\nflush = false",
        )
        .unwrap();
        assert_eq!(
            c.nodetool.argv(),
            vec!["/opt/cassandra/bin/nodetool", "-Dx=1"]
        );
        assert_eq!(c.cqlsh.unwrap().argv(), vec!["cqlsh", "127.0.0.1"]);
        assert!(!c.flush);
        let e = parse_config("nodetol = \"x\"").unwrap_err();
        assert!(format!("{e:#}").contains("nodetol"), "{e:#}");
    }

    #[test]
    fn system_keyspaces_are_excluded() {
        for ks in [
            "system",
            "system_auth",
            "system_schema",
            "system_distributed",
            "system_traces",
            "system_views",
            "system_virtual_schema",
            "dse_security",
        ] {
            assert!(is_system_keyspace(ks), "{ks}");
        }
        for ks in ["zstack_billing", "zstack_logging", "kairosdb", "systems"] {
            assert!(!is_system_keyspace(ks), "{ks}");
        }
    }

    #[test]
    fn password_needs_user_and_stays_off_argv() {
        let c = CassandraConfig {
            jmx_password_env: Some("MNB_TEST_UNSET_VAR_XYZ".into()),
            ..Default::default()
        };
        assert!(c.nodetool().is_err());
        std::env::set_var("MNB_TEST_JMX_PW_1", "s3cret");
        let c = CassandraConfig {
            jmx_user: Some("cassandra".into()),
            jmx_password_env: Some("MNB_TEST_JMX_PW_1".into()),
            ..Default::default()
        };
        let nt = c.nodetool().unwrap();
        assert!(!format!("{nt:?}").contains("s3cret"));
        assert!(!nt.argv.iter().any(|a| a.contains("s3cret")));
    }
}
