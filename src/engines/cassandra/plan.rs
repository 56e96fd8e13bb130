use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::cql::{keyspace_cql_script, never_placed, schema_table_id};
use super::items::{OpenFn, RestoreComponent};
use super::sstable::{is_valid_name, release_reads, split_table_dir, SstableFile};
use super::stage::read_all_limited;
use super::tool::{display_argv, node_release, Nodetool};
use crate::model::cassandra_info::KEYSPACE_CQL;

/// Where and how to restore.
#[derive(Debug, Clone)]
pub struct CassandraRestoreConfig {
    /// The node's data directory (`data_file_directories`; `/var/lib/cassandra/data`).
    pub data_dir: PathBuf,
    /// How to run nodetool (refresh / import).
    pub nodetool: Nodetool,
    /// `cqlsh` program and arguments (host, `-u`, …), used as `<cqlsh…> -f <file>` to create
    /// missing tables; None: the restore reports what to run instead.
    pub cqlsh: Option<Vec<String>>,
    /// Owner to give the restored files (`cassandra`); skipped with a note when no such user
    /// exists; None never changes ownership.
    pub owner: Option<String>,
    /// Load with `nodetool import <ks> <table> <dir>` from a staging directory instead of
    /// placing the files in the live table directory and running `nodetool refresh`.
    pub use_import: bool,
    /// Staging directory for `use_import` (default: `mnbackup-import` beside `data_dir`).
    pub import_dir: Option<PathBuf>,
    /// Replication for a keyspace that has to be created when the backup has no `keyspace.cql`
    /// for it (schema.cql does not hold it).
    pub keyspace_replication: String,
}

impl CassandraRestoreConfig {
    /// Defaults: refresh in place, owner `cassandra`, SimpleStrategy RF 1 for new keyspaces.
    pub fn new(data_dir: impl Into<PathBuf>, nodetool: Nodetool) -> Self {
        CassandraRestoreConfig {
            data_dir: data_dir.into(),
            nodetool,
            cqlsh: None,
            owner: Some("cassandra".to_string()),
            use_import: false,
            import_dir: None,
            keyspace_replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"
                .to_string(),
        }
    }

    fn staging_root(&self) -> PathBuf {
        self.import_dir.clone().unwrap_or_else(|| {
            self.data_dir
                .parent()
                .unwrap_or(Path::new("/"))
                .join("mnbackup-import")
        })
    }
}

/// One file of a [`TablePlan`].
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    /// Path relative to the table directory.
    pub name: String,
    pub size: u64,
    /// A file of that name already exists at the destination (restore accepts it only when its
    /// content is identical, and never overwrites it).
    pub exists: bool,
}

/// What happens to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    pub keyspace: String,
    pub table: String,
    /// The live table directory found (`<data_dir>/<ks>/<table>-<id>`), or None when the table
    /// does not exist on this node yet.
    pub table_dir: Option<PathBuf>,
    /// Where the files are written: the table directory, or the import staging directory.
    pub dest_dir: Option<PathBuf>,
    /// Other directories of the same table (left by a dropped and recreated table).
    pub other_dirs: Vec<PathBuf>,
    /// The table is not restored: why, and what to do (e.g. its live directory cannot be told).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Refused because the node's release cannot read the SSTables' format: the whole restore
    /// is refused before anything is placed.
    pub format_refused: bool,
    /// The table is missing and is created from the backup's `schema.cql` or `keyspace.cql`
    /// (through cqlsh).
    pub creates_table: bool,
    /// The keyspace directory is missing too (the keyspace is created first).
    pub keyspace_missing: bool,
    /// The missing keyspace (and its tables) is created from the backup's `keyspace.cql`, with
    /// its backed-up replication.
    pub from_keyspace_cql: bool,
    pub files: Vec<PlannedFile>,
    /// SSTables in the backup (distinct stems).
    pub sstables: usize,
    pub bytes: u64,
    /// Commands the restore runs for this table, in order.
    pub commands: Vec<String>,
    /// The table in the node's schema: `exists`, `created through cqlsh`, or why it is missing
    /// and not created (no cqlsh configured, no schema in the backup) or refused.
    pub schema: String,
    /// The CQL the restore runs through cqlsh for this table (its keyspace's `CREATE KEYSPACE`
    /// first when that is missing too), when it is created; filled by [`plan_with_cql`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_cql: Option<String>,
}

/// The result of [`plan`]: nothing has been changed.
#[derive(Debug, Clone, Serialize)]
pub struct CassandraPlan {
    pub data_dir: PathBuf,
    pub tables: Vec<TablePlan>,
    pub notes: Vec<String>,
}

impl CassandraPlan {
    /// Total bytes to write.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

impl fmt::Display for CassandraPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Cassandra: {} table(s), {} byte(s) into {}",
            self.tables.len(),
            self.bytes(),
            self.data_dir.display()
        )?;
        for t in &self.tables {
            let dest = match &t.dest_dir {
                Some(d) => d.display().to_string(),
                None => "(table missing on this node)".to_string(),
            };
            writeln!(
                f,
                "  {}.{}: {} SSTable(s), {} file(s), {} bytes -> {}",
                t.keyspace,
                t.table,
                t.sstables,
                t.files.len(),
                t.bytes,
                dest
            )?;
            let existing = t.files.iter().filter(|p| p.exists).count();
            if existing > 0 {
                writeln!(
                    f,
                    "    {existing} file(s) already exist there (kept when identical, refused \
                     otherwise)"
                )?;
            }
            writeln!(
                f,
                "    live directory: {}",
                t.table_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "(none yet)".to_string())
            )?;
            writeln!(f, "    schema: {}", t.schema)?;
            if let Some(cql) = &t.create_cql {
                if t.commands.iter().any(|c| c.contains(" -f <")) {
                    writeln!(f, "    cqlsh runs:")?;
                } else {
                    writeln!(
                        f,
                        "    to create it yourself (cqlsh -f FILE, then run the restore again):"
                    )?;
                }
                for l in cql.lines() {
                    writeln!(f, "      {l}")?;
                }
            }
            for c in &t.commands {
                writeln!(f, "    run: {c}")?;
            }
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// What [`restore`] did for one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub keyspace: String,
    pub table: String,
    pub dir: PathBuf,
    pub files_written: usize,
    /// Files that were already there with identical content.
    pub files_present: usize,
    pub bytes_written: u64,
    /// Data.db files whose digest was verified.
    pub digests_verified: usize,
    /// `refresh` or `import`; `journal` when an earlier run loaded it (nothing done now).
    pub loaded_with: String,
}

/// What [`restore`] did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CassandraRestoreReport {
    pub tables: Vec<TableReport>,
    /// Tables not restored, with what must be done before running the restore again.
    pub pending: Vec<String>,
    pub notes: Vec<String>,
}

/// Metadata view of the input, shared by [`plan`] and [`restore`].
pub(crate) struct TableInput {
    pub(crate) keyspace: String,
    pub(crate) table: String,
    /// (name, size) of files to place, sorted.
    pub(crate) files: Vec<(String, u64)>,
    pub(crate) has_schema: bool,
}

pub(crate) fn check_relative_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = match parts.as_slice() {
        [f] => is_plain_file_name(f),
        [d, f] => {
            d.len() > 1 && d.starts_with('.') && is_valid_name(&d[1..]) && is_plain_file_name(f)
        }
        _ => false,
    };
    if !ok {
        return Err(anyhow!(
            "refusing Cassandra component name {name:?}: not a file name in a table directory \
             (or a `.<index>/` secondary index directory); the snapshot may be damaged or forged"
        ));
    }
    Ok(())
}

fn is_plain_file_name(f: &str) -> bool {
    !f.is_empty() && f != "." && f != ".." && !f.contains('/') && !f.contains('\0')
}

/// The per-table inputs, and the keyspaces the backup has a `keyspace.cql` for.
pub(crate) fn group_inputs(
    components: &[(String, String, String, u64)],
) -> Result<(Vec<TableInput>, BTreeSet<String>)> {
    let mut map: BTreeMap<(String, String), TableInput> = BTreeMap::new();
    let mut ks_cql = BTreeSet::new();
    for (ks, table, name, size) in components {
        if table.is_empty() && name == KEYSPACE_CQL && is_valid_name(ks) {
            ks_cql.insert(ks.clone());
            continue;
        }
        if !is_valid_name(ks) || !is_valid_name(table) {
            bail!(
                "refusing Cassandra keyspace/table name {ks:?}.{table:?}: Cassandra names are \
                 [A-Za-z0-9_]; the snapshot may be damaged or forged"
            );
        }
        check_relative_name(name)?;
        let t = map
            .entry((ks.clone(), table.clone()))
            .or_insert_with(|| TableInput {
                keyspace: ks.clone(),
                table: table.clone(),
                files: Vec::new(),
                has_schema: false,
            });
        match name.as_str() {
            "schema.cql" => t.has_schema = true,
            "manifest.json" => {}
            _ => t.files.push((name.clone(), *size)),
        }
    }
    let mut out: Vec<TableInput> = map.into_values().collect();
    for t in &mut out {
        t.files.sort();
    }
    Ok((out, ks_cql))
}

/// Where table `ks.table` lives on the node.
#[derive(Debug, Clone)]
pub(crate) enum Live {
    /// The live directory (from the schema's table id, or the only directory there is).
    Dir(PathBuf),
    /// The table does not exist.
    Missing,
    /// It cannot be determined safely: why, and what to do.
    Unknown(String),
}

/// The live directory of `ks.table`: from the schema's table id when cqlsh is configured (a
/// dropped and re-created table leaves its old directory on disk, so modification times prove
/// nothing), else the only directory of the table; several directories without cqlsh cannot be
/// told apart and are refused.
pub(crate) fn live_dir(
    cfg: &CassandraRestoreConfig,
    ks: &str,
    table: &str,
    dirs: &[PathBuf],
) -> Result<Live> {
    if let Some(cqlsh) = &cfg.cqlsh {
        return Ok(match schema_table_id(cqlsh, ks, table)? {
            None => Live::Missing,
            Some(id) => {
                let dir = cfg.data_dir.join(ks).join(format!("{table}-{id}"));
                if dir.is_dir() {
                    Live::Dir(dir)
                } else {
                    Live::Unknown(format!(
                        "{ks}.{table}: the schema gives table id {id}, but its directory {} does \
                         not exist: is {} the node's data_file_directories (cassandra.yaml)? Not \
                         restored; fix [cassandra] data_dirs (or --cassandra-data-dir) and run \
                         the restore again",
                        dir.display(),
                        cfg.data_dir.display()
                    ))
                }
            }
        });
    }
    Ok(match dirs {
        [] => Live::Missing,
        [one] => Live::Dir(one.clone()),
        many => Live::Unknown(format!(
            "{ks}.{table}: {} directories exist ({}); one is left by a dropped table and only \
             the table id in the schema tells which is live. Not restored: configure [cassandra] \
             cqlsh so the restore can read `SELECT id FROM system_schema.tables`, or move the \
             dead directory away, then run the restore again",
            many.len(),
            many.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

/// Every directory of table `ks.table` under `data_dir` (live and dead ones), sorted by name.
pub fn find_table_dirs(data_dir: &Path, ks: &str, table: &str) -> Result<Vec<PathBuf>> {
    let ks_dir = data_dir.join(ks);
    let rd = match fs::read_dir(&ks_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", ks_dir.display())),
    };
    let mut found = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("listing {}", ks_dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if split_table_dir(name).0 != table || !e.file_type()?.is_dir() {
            continue;
        }
        found.push(e.path());
    }
    found.sort();
    Ok(found)
}

pub(crate) fn build_plan(
    cfg: &CassandraRestoreConfig,
    inputs: &[TableInput],
    ks_cql: &BTreeSet<String>,
) -> Result<CassandraPlan> {
    let mut plan = CassandraPlan {
        data_dir: cfg.data_dir.clone(),
        tables: Vec::new(),
        notes: Vec::new(),
    };
    if !cfg.data_dir.is_dir() {
        plan.notes.push(format!(
            "{} does not exist: is Cassandra installed, and is this its data_file_directories?",
            cfg.data_dir.display()
        ));
    }
    // The node's release decides which SSTable formats it reads.
    let release = match node_release(&cfg.nodetool) {
        Ok(r) => Some(r),
        Err(e) => {
            plan.notes.push(format!(
                "the SSTable formats could not be checked against the node's Cassandra release: \
                 {e:#}"
            ));
            None
        }
    };
    let major: Option<u32> = release
        .as_deref()
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse().ok());
    for t in inputs {
        if never_placed(&t.keyspace) {
            plan.notes.push(format!(
                "{}.{} is not restored: Cassandra's own keyspaces (system*) hold the node's \
                 identity, tokens and schema; placing them into a live node would corrupt it",
                t.keyspace, t.table
            ));
            continue;
        }
        let release = release.as_deref();
        let tp = plan_table(cfg, t, ks_cql, release, major, &mut plan.notes)?;
        plan.tables.push(tp);
    }
    Ok(plan)
}

/// The plan of one table; notes about it go to `notes`.
fn plan_table(
    cfg: &CassandraRestoreConfig,
    t: &TableInput,
    ks_cql: &BTreeSet<String>,
    release: Option<&str>,
    major: Option<u32>,
    notes: &mut Vec<String>,
) -> Result<TablePlan> {
    let format_refusal = format_refusal(t, release, major);
    let dirs = find_table_dirs(&cfg.data_dir, &t.keyspace, &t.table)?;
    let (table_dir, mut refused) = match live_dir(cfg, &t.keyspace, &t.table, &dirs)? {
        Live::Dir(d) => (Some(d), None),
        Live::Missing => (None, None),
        Live::Unknown(why) => (None, Some(why)),
    };
    let format_refused = format_refusal.is_some();
    if format_refused {
        refused = format_refusal;
    }
    let other_dirs: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| Some(*d) != table_dir.as_ref())
        .cloned()
        .collect();
    if refused.is_none() && !other_dirs.is_empty() {
        notes.push(format!(
            "{}.{}: {} is {}; not used: {} (left by a dropped table)",
            t.keyspace,
            t.table,
            match &table_dir {
                Some(d) => d.display().to_string(),
                None => "the table (to be created)".to_string(),
            },
            if table_dir.is_some() {
                "the live directory (table id from system_schema.tables)"
            } else {
                "missing from the schema"
            },
            other_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(why) = &refused {
        notes.push(format!("REFUSED {why}"));
    }
    let keyspace_missing = !cfg.data_dir.join(&t.keyspace).is_dir();
    let dest_dir = if cfg.use_import {
        Some(cfg.staging_root().join(&t.keyspace).join(&t.table))
    } else {
        table_dir.clone()
    };
    let (files, sstables) = planned_files(t, dest_dir.as_ref());
    let mut commands = Vec::new();
    let from_keyspace_cql = refused.is_none()
        && table_dir.is_none()
        && keyspace_missing
        && ks_cql.contains(&t.keyspace);
    let creates_table =
        refused.is_none() && table_dir.is_none() && (t.has_schema || from_keyspace_cql);
    let cqlsh = cfg
        .cqlsh
        .as_ref()
        .map(|c| display_argv(c))
        .unwrap_or_else(|| "cqlsh".to_string());
    // Without cqlsh nothing is created: no cqlsh command runs, and the table is not loaded.
    let will_create = creates_table && cfg.cqlsh.is_some();
    if from_keyspace_cql && will_create {
        commands.push(format!(
            "{cqlsh} -f <CREATE KEYSPACE {} and its tables, IF NOT EXISTS, from the backup's \
             keyspace.cql>",
            t.keyspace
        ));
        let note = format!(
            "keyspace {} does not exist on this node: it is created with its backed-up \
             replication and tables from the backup's keyspace.cql (DESCRIBE KEYSPACE)",
            t.keyspace
        );
        if !notes.contains(&note) {
            notes.push(note);
        }
    } else if will_create {
        commands.push(format!(
            "{cqlsh} -f <schema of {}.{} from the backup's schema.cql>",
            t.keyspace, t.table
        ));
    }
    let schema = schema_state(
        cfg,
        t,
        refused.as_deref(),
        table_dir.is_some(),
        creates_table,
        from_keyspace_cql,
    );
    if creates_table && cfg.cqlsh.is_none() {
        notes.push(format!(
            "{}.{} does not exist on this node and no cqlsh is configured ([cassandra] \
             cqlsh): the restore cannot create it, leaves it pending and exits non-zero",
            t.keyspace, t.table
        ));
    }
    if table_dir.is_none() && !creates_table && refused.is_none() {
        notes.push(format!(
            "{}.{} does not exist on this node and the backup has no schema.cql for it \
             (Cassandra before 3.0 does not write one): create the table first (start the \
             application that owns it, e.g. the management node or KairosDB, or run its \
             CREATE TABLE in cqlsh), then run the restore again",
            t.keyspace, t.table
        ));
    }
    let nt = display_argv(&cfg.nodetool.argv);
    let loads = refused.is_none() && (table_dir.is_some() || will_create);
    if loads && cfg.use_import {
        commands.push(format!(
            "{nt} import {} {} {}",
            t.keyspace,
            t.table,
            dest_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ));
    } else if loads {
        commands.push(format!("{nt} refresh {} {}", t.keyspace, t.table));
    }
    Ok(TablePlan {
        keyspace: t.keyspace.clone(),
        table: t.table.clone(),
        table_dir,
        dest_dir,
        other_dirs,
        refused,
        format_refused,
        creates_table,
        keyspace_missing,
        from_keyspace_cql,
        bytes: files.iter().map(|f| f.size).sum(),
        sstables,
        files,
        commands,
        schema,
        create_cql: None,
    })
}

/// Why the table's SSTables cannot be placed on this node: formats its release cannot read.
fn format_refusal(t: &TableInput, release: Option<&str>, major: Option<u32>) -> Option<String> {
    let unreadable: BTreeSet<String> = t
        .files
        .iter()
        .filter_map(|(n, _)| SstableFile::parse(n.rsplit('/').next().unwrap_or(n)))
        .map(|s| s.version)
        .filter(|v| major.and_then(|m| release_reads(m, v)) == Some(false))
        .collect();
    (!unreadable.is_empty()).then(|| {
        format!(
            "{}.{}: its SSTables are of format {} which Cassandra {} on this node cannot \
             read; nothing is placed. Restore onto a node of the release that wrote them \
             (then upgrade it and run `nodetool upgradesstables`), or convert them with \
             `sstableupgrade` first",
            t.keyspace,
            t.table,
            unreadable.iter().cloned().collect::<Vec<_>>().join(", "),
            release.unwrap_or("?")
        )
    })
}

/// The files to place (whether each exists at its destination already) and the number of
/// SSTables among them.
fn planned_files(t: &TableInput, dest_dir: Option<&PathBuf>) -> (Vec<PlannedFile>, usize) {
    let mut files = Vec::new();
    let mut stems = BTreeSet::new();
    for (name, size) in &t.files {
        let exists = dest_dir
            .map(|d| d.join(name).symlink_metadata().is_ok())
            .unwrap_or(false);
        let base = name.rsplit('/').next().unwrap_or(name);
        if let Some(s) = SstableFile::parse(base) {
            if !name.contains('/') {
                stems.insert(s.stem);
            }
        }
        files.push(PlannedFile {
            name: name.clone(),
            size: *size,
            exists,
        });
    }
    (files, stems.len())
}

/// What the plan says of the table's schema.
fn schema_state(
    cfg: &CassandraRestoreConfig,
    t: &TableInput,
    refused: Option<&str>,
    has_dir: bool,
    creates_table: bool,
    from_keyspace_cql: bool,
) -> String {
    if let Some(why) = refused {
        format!("REFUSED: {why}")
    } else if has_dir {
        if cfg.cqlsh.is_some() {
            "exists (its table id in system_schema.tables names the live directory)".to_string()
        } else {
            "exists".to_string()
        }
    } else if creates_table && cfg.cqlsh.is_some() {
        if from_keyspace_cql {
            format!(
                "missing, with its keyspace: created through cqlsh from the backup's \
                 keyspace.cql (CREATE KEYSPACE {} … and its tables, IF NOT EXISTS)",
                t.keyspace
            )
        } else {
            "missing: created through cqlsh from the backup's schema.cql".to_string()
        }
    } else if creates_table {
        format!(
            "MISSING and NOT created: no cqlsh is configured ([cassandra] cqlsh). The \
             restore writes the CREATE statements to a file, leaves {}.{} pending and exits \
             non-zero; configure cqlsh, or run the statements with cqlsh -f yourself, then \
             run the restore again",
            t.keyspace, t.table
        )
    } else {
        format!(
            "MISSING and NOT created: the backup has no schema.cql for {}.{}; create the \
             table first, then run the restore again",
            t.keyspace, t.table
        )
    }
}

pub(crate) fn metadata_of(
    components: &[RestoreComponent<'_>],
) -> Vec<(String, String, String, u64)> {
    components
        .iter()
        .map(|c| (c.keyspace.clone(), c.table.clone(), c.name.clone(), c.size))
        .collect()
}

/// What a restore of `components` would do: per table the directory the files go to, the
/// files, bytes, the live directory, whether the table exists or is created through cqlsh, and
/// the commands that will run. Reads the data directory, changes nothing, and never opens the
/// components (see [`plan_with_cql`] for the CREATE statements).
pub fn plan(
    cfg: &CassandraRestoreConfig,
    components: &[RestoreComponent<'_>],
) -> Result<CassandraPlan> {
    let (inputs, ks_cql) = group_inputs(&metadata_of(components))?;
    build_plan(cfg, &inputs, &ks_cql)
}

/// [`plan`], with each created table's CQL read from the backup (`create_cql`): the statements
/// cqlsh will run. Reads only the small schema.cql / keyspace.cql of the tables to be created.
pub fn plan_with_cql(
    cfg: &CassandraRestoreConfig,
    components: Vec<RestoreComponent<'_>>,
) -> Result<CassandraPlan> {
    let mut plan = plan(cfg, &components)?;
    let mut schemas: BTreeMap<(String, String), OpenFn<'_>> = BTreeMap::new();
    for c in components {
        if c.name == KEYSPACE_CQL && c.table.is_empty() || c.name == "schema.cql" {
            schemas.insert((c.keyspace, c.table), c.open);
        }
    }
    // The CQL of the tables to be created (the small schema.cql / keyspace.cql only).
    let mut ks_done = BTreeSet::new();
    for tp in plan.tables.iter_mut().filter(|t| t.creates_table) {
        let mut cql = String::new();
        if tp.from_keyspace_cql {
            if ks_done.insert(tp.keyspace.clone()) {
                let open = schemas
                    .remove(&(tp.keyspace.clone(), String::new()))
                    .ok_or_else(|| {
                        anyhow!(
                            "the backup lists keyspace.cql of {} but it cannot be read; the \
                             snapshot may be damaged (mnbackup verify)",
                            tp.keyspace
                        )
                    })?;
                let what = format!("keyspace.cql of {}", tp.keyspace);
                let text = read_all_limited(open, &what, 16 << 20)?;
                cql = keyspace_cql_script(&tp.keyspace, &String::from_utf8_lossy(&text))?;
            } else {
                cql = format!("(created with keyspace {} above)\n", tp.keyspace);
            }
        } else if let Some(open) = schemas.remove(&(tp.keyspace.clone(), tp.table.clone())) {
            if tp.keyspace_missing && ks_done.insert(tp.keyspace.clone()) {
                cql.push_str(&format!(
                    "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {};\n",
                    tp.keyspace, cfg.keyspace_replication
                ));
            }
            let what = format!("{}.{} schema.cql", tp.keyspace, tp.table);
            let text = read_all_limited(open, &what, 16 << 20)?;
            cql.push_str(String::from_utf8_lossy(&text).trim_end());
            cql.push('\n');
        }
        tp.create_cql = Some(cql);
    }
    Ok(plan)
}
