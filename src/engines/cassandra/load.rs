use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::model::cassandra_info::KEYSPACE_CQL;
use mnbackup_restore::journal::{Journal, JournaledTable};

use super::cql::keyspace_cql_script;
use super::digest::{digest_mismatch, ExpectedDigest};
use super::items::RestoreComponent;
use super::plan::{
    build_plan, find_table_dirs, group_inputs, live_dir, metadata_of, CassandraPlan,
    CassandraRestoreConfig, CassandraRestoreReport, Live, TablePlan, TableReport,
};
use super::sstable::{fresh_names, stem_key, SstableFile};
use super::stage::{
    blake3_file, create_dir_owned, fsync_dir, has_data_content, lookup_user, read_all_limited,
    remove_empty_dirs, stage_file, Cleanup, StagedFile,
};
use super::tool::{run_command, PrivateTempFile};

/// Restore `components` into the node of `cfg`:
///
/// 1. tables missing on the node are created with `<cqlsh> -f <file>`: a missing keyspace for
///    which the backup has a `keyspace.cql` (its `DESCRIBE KEYSPACE`) is created from it, with
///    its backed-up replication and all its tables (statements made `IF NOT EXISTS`); other
///    missing tables from their `schema.cql` (a missing keyspace first, with
///    `keyspace_replication`); without a configured cqlsh the table is skipped and the report's
///    `pending` says what to run;
/// 2. per table, the live directory `<data_dir>/<ks>/<table>-<id>/` is found (the id differs on
///    a new node; `snapshots/` and `backups/` are never touched); every component is written to
///    a temporary name, fsynced, its size and (for `Data.db`) its digest checked, then linked to
///    its name, never replacing an existing file (an identical file is accepted as already
///    restored, a different one is refused), and the directory fsynced;
/// 3. files are given to the `owner` user when it exists;
/// 4. `nodetool refresh <ks> <table>` (or `nodetool import <ks> <table> <dir>`) loads them.
///
/// A failure stops the restore with an error naming the table; tables finished before it stay
/// restored (and a rerun accepts their identical files).
pub fn restore(
    cfg: &CassandraRestoreConfig,
    components: Vec<RestoreComponent<'_>>,
) -> Result<CassandraRestoreReport> {
    restore_journaled(cfg, components, None)
}

/// [`restore`], recording per table in `journal` what was placed (before the load command) and
/// that it was loaded (after the proof). A table the journal records as loaded into the same live
/// directory is not placed or loaded again, and neither is one whose placed files are all gone
/// (Cassandra renamed them: the load ran, the run stopped before recording it): a rerun never
/// loads a table twice, even when the loaded SSTables were compacted away meanwhile.
pub fn restore_journaled(
    cfg: &CassandraRestoreConfig,
    components: Vec<RestoreComponent<'_>>,
    mut journal: Option<&mut Journal>,
) -> Result<CassandraRestoreReport> {
    let (inputs, ks_cql) = group_inputs(&metadata_of(&components))?;
    let mut plan = build_plan(cfg, &inputs, &ks_cql)?;
    let unreadable: Vec<String> = plan
        .tables
        .iter()
        .filter(|t| t.format_refused)
        .filter_map(|t| t.refused.clone())
        .collect();
    if !unreadable.is_empty() {
        bail!(
            "refusing the Cassandra restore before placing anything: {}",
            unreadable.join("; ")
        );
    }
    let mut report = CassandraRestoreReport {
        notes: plan.notes.clone(),
        ..Default::default()
    };
    let mut sorted = sort_components(components, &ks_cql)?;

    // 1. Schema for missing tables.
    let (cql, need_schema) = schema_script(cfg, &plan, &sorted, &mut report)?;
    if !need_schema.is_empty() {
        apply_schema(cfg, &mut plan, &cql, &need_schema, &mut report)?;
    }

    // 2.–4. Place, own, load.
    let ctx = TableCtx {
        cfg,
        owner: resolve_owner(cfg, &mut report.notes),
        modes: &sorted.modes,
    };
    let mut chown_failed = false;
    for tp in &plan.tables {
        let (Some(table_dir), Some(dest_dir)) = (&tp.table_dir, &tp.dest_dir) else {
            continue;
        };
        let key = (tp.keyspace.clone(), tp.table.clone());
        let bucket = sorted
            .buckets
            .remove(&key)
            .expect("bucket of a planned table");
        let dirs = TableDirs {
            table_dir,
            dest_dir,
            label: format!("{}.{}", tp.keyspace, tp.table),
        };
        if let Some(done) = journaled_as_loaded(journal.as_deref_mut(), tp, &dirs, &mut report)? {
            report.tables.push(done);
            continue;
        }
        let (done, chown_bad) = restore_table(&ctx, tp, &dirs, bucket, journal.as_deref_mut())?;
        chown_failed |= chown_bad;
        report.tables.push(done);
    }
    if chown_failed {
        report.notes.push(format!(
            "some restored files could not be given to user {:?} (not running as root?): chown \
             them, or Cassandra may fail to read them",
            cfg.owner.as_deref().unwrap_or("")
        ));
    }
    Ok(report)
}

/// The components of one table, the small ones (schema, digests) already read.
struct Bucket<'a> {
    schema: Option<String>,
    digests: BTreeMap<String, Vec<u8>>,
    files: Vec<RestoreComponent<'a>>,
}

/// Backed-up permission bits by (keyspace, table, name).
type Modes = BTreeMap<(String, String, String), u32>;

/// The components sorted into per-table buckets, the keyspaces' `keyspace.cql` texts and the
/// backed-up modes.
struct Sorted<'a> {
    buckets: BTreeMap<(String, String), Bucket<'a>>,
    keyspace_cql: BTreeMap<String, String>,
    modes: Modes,
}

fn sort_components<'a>(
    components: Vec<RestoreComponent<'a>>,
    ks_cql: &BTreeSet<String>,
) -> Result<Sorted<'a>> {
    let modes: Modes = components
        .iter()
        .filter_map(|c| {
            c.mode
                .map(|m| ((c.keyspace.clone(), c.table.clone(), c.name.clone()), m))
        })
        .collect();
    let mut buckets: BTreeMap<(String, String), Bucket<'_>> = BTreeMap::new();
    let mut keyspace_cql: BTreeMap<String, String> = BTreeMap::new();
    for c in components {
        if c.table.is_empty() {
            if c.name == KEYSPACE_CQL && ks_cql.contains(&c.keyspace) {
                let what = format!("keyspace.cql of {}", c.keyspace);
                let text = read_all_limited(c.open, &what, 16 << 20)?;
                keyspace_cql.insert(c.keyspace, String::from_utf8_lossy(&text).into_owned());
            }
            continue;
        }
        let key = (c.keyspace.clone(), c.table.clone());
        let b = buckets.entry(key).or_insert_with(|| Bucket {
            schema: None,
            digests: BTreeMap::new(),
            files: Vec::new(),
        });
        let what = format!("{}.{} {}", c.keyspace, c.table, c.name);
        match c.name.as_str() {
            "schema.cql" => {
                let text = read_all_limited(c.open, &what, 16 << 20)?;
                b.schema = Some(String::from_utf8_lossy(&text).into_owned());
            }
            "manifest.json" => {}
            _ if SstableFile::parse(c.name.rsplit('/').next().unwrap_or(&c.name))
                .is_some_and(|s| s.is_digest()) =>
            {
                let text = read_all_limited(c.open, &what, 4096)?;
                b.digests.insert(c.name.clone(), text);
            }
            _ => b.files.push(c),
        }
    }
    Ok(Sorted {
        buckets,
        keyspace_cql,
        modes,
    })
}

/// The CQL that creates the planned tables missing on the node (and their keyspaces), and
/// those tables; tables that cannot be created go to the report's `pending`.
fn schema_script(
    cfg: &CassandraRestoreConfig,
    plan: &CassandraPlan,
    sorted: &Sorted<'_>,
    report: &mut CassandraRestoreReport,
) -> Result<(String, Vec<(String, String)>)> {
    let mut cql = String::new();
    let mut created_keyspaces = BTreeSet::new();
    let mut need_schema = Vec::new();
    for tp in &plan.tables {
        if let Some(why) = &tp.refused {
            report.pending.push(why.clone());
            continue;
        }
        if tp.table_dir.is_some() {
            continue;
        }
        if tp.from_keyspace_cql {
            if created_keyspaces.insert(tp.keyspace.clone()) {
                let text = &sorted.keyspace_cql[&tp.keyspace];
                cql.push_str(&keyspace_cql_script(&tp.keyspace, text)?);
                report.notes.push(format!(
                    "keyspace {} is created with its backed-up replication and tables (the \
                     backup's keyspace.cql)",
                    tp.keyspace
                ));
            }
            need_schema.push((tp.keyspace.clone(), tp.table.clone()));
            continue;
        }
        let b = &sorted.buckets[&(tp.keyspace.clone(), tp.table.clone())];
        let Some(schema) = &b.schema else {
            report.pending.push(format!(
                "{}.{}: the table does not exist on this node and the backup has no schema.cql \
                 for it; create it (start the application that owns it, or run its CREATE TABLE \
                 in cqlsh), then run the restore again",
                tp.keyspace, tp.table
            ));
            continue;
        };
        if tp.keyspace_missing && created_keyspaces.insert(tp.keyspace.clone()) {
            cql.push_str(&format!(
                "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {};\n",
                tp.keyspace, cfg.keyspace_replication
            ));
            report.notes.push(format!(
                "keyspace {} is created with replication {} (schema.cql does not hold the \
                 keyspace's replication; ALTER KEYSPACE it if the cluster had another)",
                tp.keyspace, cfg.keyspace_replication
            ));
        }
        cql.push_str(schema.trim_end());
        cql.push('\n');
        need_schema.push((tp.keyspace.clone(), tp.table.clone()));
    }
    Ok((cql, need_schema))
}

/// Run `cql` through cqlsh and point the plan of `need_schema` at the created tables'
/// directories; without cqlsh, write it to a file and say in `pending` what to run.
fn apply_schema(
    cfg: &CassandraRestoreConfig,
    plan: &mut CassandraPlan,
    cql: &str,
    need_schema: &[(String, String)],
    report: &mut CassandraRestoreReport,
) -> Result<()> {
    let Some(cqlsh) = &cfg.cqlsh else {
        let path = std::env::temp_dir().join(format!(
            "mnbackup-cassandra-schema-{}.cql",
            std::process::id()
        ));
        fs::write(&path, cql).with_context(|| format!("writing {}", path.display()))?;
        let tables: Vec<String> = need_schema
            .iter()
            .map(|(k, t)| format!("{k}.{t}"))
            .collect();
        report.pending.push(format!(
            "{} do(es) not exist on this node and no cqlsh is configured ([cassandra] \
             cqlsh): run `cqlsh -f {}`, then run the restore again",
            tables.join(", "),
            path.display()
        ));
        return Ok(());
    };
    let f = PrivateTempFile::create("schema.cql", cql.as_bytes())?;
    let mut argv = cqlsh.clone();
    argv.extend(["-f".to_string(), f.path.display().to_string()]);
    run_command(
        &argv,
        "Check that Cassandra is running and accepts CQL (port 9042), and the cqlsh \
         command and credentials in [cassandra] cqlsh.",
    )
    .context(
        "creating the missing Cassandra keyspaces and tables from the backup's \
         keyspace.cql / schema.cql",
    )?;
    for (ks, table) in need_schema {
        let dirs = find_table_dirs(&cfg.data_dir, ks, table)?;
        let dir = match live_dir(cfg, ks, table, &dirs)? {
            Live::Dir(d) => d,
            Live::Missing => bail!(
                "cqlsh ran the CREATE statements, but {ks}.{table} is still not in the \
                 schema (system_schema.tables); check the statements in the cqlsh \
                 output and the node's log"
            ),
            Live::Unknown(why) => bail!("{why}"),
        };
        let tp = plan
            .tables
            .iter_mut()
            .find(|t| &t.keyspace == ks && &t.table == table)
            .expect("planned table");
        tp.table_dir = Some(dir.clone());
        if !cfg.use_import {
            tp.dest_dir = Some(dir);
        }
    }
    Ok(())
}

/// uid and gid of the configured owner of restored files, when that user exists here.
fn resolve_owner(cfg: &CassandraRestoreConfig, notes: &mut Vec<String>) -> Option<(u32, u32)> {
    let user = cfg.owner.as_ref()?;
    let ids = lookup_user(user);
    if ids.is_none() {
        notes.push(format!(
            "no user {user:?} on this machine: the restored files keep the restoring \
             user's ownership (chown them if Cassandra runs as another user)"
        ));
    }
    ids
}

/// What every table's restore shares.
struct TableCtx<'c> {
    cfg: &'c CassandraRestoreConfig,
    owner: Option<(u32, u32)>,
    modes: &'c Modes,
}

/// Where one table goes.
struct TableDirs<'p> {
    /// The live directory.
    table_dir: &'p PathBuf,
    /// Where its files are placed (the live directory, or the import staging directory).
    dest_dir: &'p PathBuf,
    /// `ks.table`.
    label: String,
}

/// The report of a table an earlier run of this restore loaded (the journal says so, or every
/// file it placed is gone: Cassandra renamed them), recording that as loaded; None otherwise.
fn journaled_as_loaded(
    journal: Option<&mut Journal>,
    tp: &TablePlan,
    dirs: &TableDirs<'_>,
    report: &mut CassandraRestoreReport,
) -> Result<Option<TableReport>> {
    let label = &dirs.label;
    let Some(j) = journal else {
        return Ok(None);
    };
    let Some(rec) = j.data.cassandra_tables.get(label).cloned() else {
        return Ok(None);
    };
    let renamed_all =
        !rec.placed.is_empty() && rec.placed.iter().all(|p| p.symlink_metadata().is_err());
    if &rec.dir != dirs.table_dir || !(rec.loaded || renamed_all) {
        return Ok(None);
    }
    if !rec.loaded {
        report.notes.push(format!(
            "{label}: the interrupted run placed {} files and ran `{}`; Cassandra \
             renamed every one of them (it loaded them), so the table is not \
             loaded again",
            rec.placed.len(),
            rec.command
        ));
        let mut done = rec.clone();
        done.loaded = true;
        j.data.cassandra_tables.insert(label.clone(), done);
        j.save()?;
    }
    Ok(Some(TableReport {
        keyspace: tp.keyspace.clone(),
        table: tp.table.clone(),
        dir: dirs.table_dir.clone(),
        files_written: 0,
        files_present: rec.generations.len(),
        bytes_written: 0,
        digests_verified: 0,
        loaded_with: "journal".to_string(),
    }))
}

/// A staged file, the `<sub/>stem` of its SSTable, and whether it is the `Data.db`.
type Staged = (StagedFile, Option<String>, bool);

/// Place, own, load and prove one table. Returns its report and whether a chown failed.
fn restore_table(
    ctx: &TableCtx<'_>,
    tp: &TablePlan,
    dirs: &TableDirs<'_>,
    mut bucket: Bucket<'_>,
    journal: Option<&mut Journal>,
) -> Result<(TableReport, bool)> {
    let dest_dir = dirs.dest_dir;
    // Cassandra renames every SSTable it loads to a fresh generation, so the backed-up
    // generation numbers may be taken by the application's own SSTables: place each SSTable
    // under a generation that is free in its destination directory.
    let names: Vec<String> = bucket
        .digests
        .keys()
        .cloned()
        .chain(bucket.files.iter().map(|c| c.name.clone()))
        .collect();
    let renames = fresh_names(dest_dir, &names)?;
    let rename = |n: &str| renames.get(n).cloned().unwrap_or_else(|| n.to_string());
    let mode_of: BTreeMap<String, u32> = names
        .iter()
        .filter_map(|n| {
            ctx.modes
                .get(&(tp.keyspace.clone(), tp.table.clone(), n.clone()))
                .map(|m| (rename(n), *m))
        })
        .collect();
    bucket.digests = std::mem::take(&mut bucket.digests)
        .into_iter()
        .map(|(n, t)| (rename(&n), t))
        .collect();
    for c in &mut bucket.files {
        c.name = rename(&c.name);
    }

    create_dir_owned(dest_dir, ctx.owner)?;
    let mut cleanup = Cleanup(Vec::new());
    let (staged, verified) = stage_bucket(ctx, dirs, bucket, &mode_of, &mut cleanup)?;
    let (present, to_link) = skip_present(staged, dirs)?;
    let (written, bytes, chown_failed) = link_staged(&to_link, ctx.owner)?;
    drop(cleanup); // removes the temporary names (the data stays under the final names)

    // Journal what is placed before loading it: a rerun after the load ran but before its
    // proof was recorded sees the placed names gone (renamed by Cassandra).
    let rec = JournaledTable {
        dir: dirs.table_dir.clone(),
        placed: to_link.iter().map(|(s, _, _)| s.dest.clone()).collect(),
        generations: names.iter().map(|n| (n.clone(), rename(n))).collect(),
        loaded: false,
        command: load_command(ctx.cfg, tp, dest_dir).1,
    };
    let loaded_with = load_and_prove(ctx.cfg, tp, dirs, &to_link, rec, journal)?;
    if ctx.cfg.use_import {
        // The staging directory of this table is empty now (import moved everything).
        let _ = remove_empty_dirs(dest_dir);
    }
    let done = TableReport {
        keyspace: tp.keyspace.clone(),
        table: tp.table.clone(),
        dir: dirs.table_dir.clone(),
        files_written: written,
        files_present: present,
        bytes_written: bytes,
        digests_verified: verified,
        loaded_with: loaded_with.to_string(),
    };
    Ok((done, chown_failed))
}

/// Write every component of `bucket` to a temporary name beside its destination (digest
/// components first, from memory, then the streamed files), each `Data.db` checked against its
/// digest. Returns the staged files and how many digests were verified.
fn stage_bucket(
    ctx: &TableCtx<'_>,
    dirs: &TableDirs<'_>,
    bucket: Bucket<'_>,
    mode_of: &BTreeMap<String, u32>,
    cleanup: &mut Cleanup,
) -> Result<(Vec<Staged>, usize)> {
    let (dest_dir, label) = (dirs.dest_dir, &dirs.label);
    let set_mode = |s: &StagedFile, name: &str| -> Result<()> {
        if let Some(m) = mode_of.get(name) {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&s.tmp, fs::Permissions::from_mode(m & 0o7777))
                .with_context(|| format!("setting the mode of {}", s.tmp.display()))?;
        }
        Ok(())
    };
    // Expected digests by SSTable (stem within its directory).
    let mut expected: BTreeMap<String, ExpectedDigest> = BTreeMap::new();
    for (name, text) in &bucket.digests {
        let (sub, base) = split_sub(name);
        let sf = SstableFile::parse(base).expect("digest names were parsed");
        let d = ExpectedDigest::parse(base, text).with_context(|| format!("table {label}"))?;
        expected.insert(format!("{sub}{}", sf.stem), d);
    }
    let mut staged: Vec<Staged> = Vec::new();
    let mut verified = 0;
    for (name, text) in &bucket.digests {
        let dest = dest_dir.join(name);
        create_dir_owned(dest.parent().expect("parent"), ctx.owner)?;
        let what = format!("{label} {name}");
        let len = text.len() as u64;
        let (s, _) = stage_file(&mut text.as_slice(), &dest, len, None, &what, cleanup)?;
        set_mode(&s, name)?;
        staged.push((s, stem_key(name), false));
    }
    for c in bucket.files {
        let dest = dest_dir.join(&c.name);
        create_dir_owned(dest.parent().expect("parent"), ctx.owner)?;
        let (sub, base) = split_sub(&c.name);
        let sf = SstableFile::parse(base);
        let exp = sf
            .as_ref()
            .filter(|s| s.is_data())
            .and_then(|s| expected.get(&format!("{sub}{}", s.stem)));
        let what = format!("{label} {}", c.name);
        let mut reader = (c.open)().with_context(|| format!("opening {what} in the backup"))?;
        let algo = exp.map(|e| e.algo);
        let (s, digest) = stage_file(&mut reader, &dest, c.size, algo, &what, cleanup)?;
        if let (Some(exp), Some(actual)) = (exp, digest) {
            if exp.value != actual {
                return Err(digest_mismatch(
                    &format!("{label} {}{}", sub, sf.expect("data file").stem),
                    exp,
                    &actual,
                )
                .context(
                    "the backed-up SSTable does not match its own digest; nothing of this \
                     table was placed (restore it from another snapshot)",
                ));
            }
            verified += 1;
        }
        let is_data = sf.as_ref().is_some_and(|s| s.is_data());
        set_mode(&s, &c.name)?;
        staged.push((s, stem_key(&c.name), is_data));
    }
    Ok((staged, verified))
}

/// `("<dir>/", base)` of a component name in a subdirectory, `("", name)` otherwise.
fn split_sub(name: &str) -> (String, &str) {
    match name.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), name),
    }
}

/// Leave out what is already there: an SSTable whose Data.db is already in the live directory
/// (same size and content, under whatever generation Cassandra gave it) was loaded by an
/// earlier run and is not placed again, so a rerun never loads a table twice; and never
/// overwrite: an existing file of the same name must be identical. Returns how many were
/// present and what is to be linked.
fn skip_present(staged: Vec<Staged>, dirs: &TableDirs<'_>) -> Result<(usize, Vec<Staged>)> {
    let mut already: BTreeSet<String> = BTreeSet::new();
    for (s, key, is_data) in &staged {
        if let (true, Some(key)) = (*is_data, key) {
            let sub = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            if has_data_content(&dirs.table_dir.join(sub), s.size, &s.blake3)? {
                already.insert(key.clone());
            }
        }
    }
    let mut present = 0;
    let mut to_link = Vec::new();
    for (s, key, is_data) in staged {
        if key.as_ref().is_some_and(|k| already.contains(k)) {
            present += 1;
            continue;
        }
        if s.dest.symlink_metadata().is_ok() {
            let same = fs::metadata(&s.dest).map(|m| m.len()).ok() == Some(s.size)
                && blake3_file(&s.dest)? == s.blake3;
            if !same {
                bail!(
                    "refusing to overwrite {} with the backed-up file of the same name: it \
                     exists with different content. Move it away (or restore into an empty \
                     table directory) and run the restore again; nothing of table {} \
                     was placed",
                    s.dest.display(),
                    dirs.label
                );
            }
            present += 1;
        } else {
            to_link.push((s, key, is_data));
        }
    }
    Ok((present, to_link))
}

/// Link every staged file to its name (never replacing one), give it to `owner`, and fsync the
/// directories. Returns files and bytes written, and whether a chown failed.
fn link_staged(to_link: &[Staged], owner: Option<(u32, u32)>) -> Result<(usize, u64, bool)> {
    let (mut written, mut bytes, mut chown_failed) = (0, 0, false);
    let mut dirs_to_sync = BTreeSet::new();
    for (s, _, _) in to_link {
        // link(2) fails when the name exists: an atomic rename that never replaces.
        fs::hard_link(&s.tmp, &s.dest).with_context(|| {
            format!(
                "placing {} (refusing to replace a file that appeared meanwhile)",
                s.dest.display()
            )
        })?;
        if let Some((uid, gid)) = owner {
            if std::os::unix::fs::chown(&s.dest, Some(uid), Some(gid)).is_err() {
                chown_failed = true;
            }
        }
        written += 1;
        bytes += s.size;
        dirs_to_sync.insert(s.dest.parent().expect("parent").to_path_buf());
    }
    for d in &dirs_to_sync {
        fsync_dir(d)?;
    }
    Ok((written, bytes, chown_failed))
}

/// How the table is loaded: `refresh` or `import`, and the nodetool command line.
fn load_command(
    cfg: &CassandraRestoreConfig,
    tp: &TablePlan,
    dest_dir: &Path,
) -> (&'static str, String) {
    if cfg.use_import {
        let dir = dest_dir.display();
        (
            "import",
            format!("nodetool import {} {} {dir}", tp.keyspace, tp.table),
        )
    } else {
        (
            "refresh",
            format!("nodetool refresh {} {}", tp.keyspace, tp.table),
        )
    }
}

/// Journal `rec` (what is placed), run the load command, prove the load, and journal it as
/// loaded. Returns how it was loaded (`refresh` or `import`).
fn load_and_prove(
    cfg: &CassandraRestoreConfig,
    tp: &TablePlan,
    dirs: &TableDirs<'_>,
    to_link: &[Staged],
    mut rec: JournaledTable,
    mut journal: Option<&mut Journal>,
) -> Result<&'static str> {
    let (table_dir, label) = (dirs.table_dir, &dirs.label);
    if let Some(j) = journal.as_deref_mut() {
        j.data.cassandra_tables.insert(label.clone(), rec.clone());
        j.save()?;
    }
    let (loaded_with, command) = load_command(cfg, tp, dirs.dest_dir);
    let dir = dirs.dest_dir.display().to_string();
    let args: Vec<&str> = if cfg.use_import {
        vec!["import", &tp.keyspace, &tp.table, &dir]
    } else {
        vec!["refresh", &tp.keyspace, &tp.table]
    };
    cfg.nodetool
        .run(&args)
        .with_context(|| format!("loading the restored SSTables of {label}"))?;

    // Prove the load: Cassandra renames every SSTable it loads, so nothing placed may be
    // left under its placed name, and every placed Data.db must now be in the live
    // directory (by size and content).
    let left: Vec<String> = to_link
        .iter()
        .filter(|(s, _, _)| s.dest.symlink_metadata().is_ok())
        .map(|(s, _, _)| s.dest.display().to_string())
        .collect();
    if !left.is_empty() {
        bail!(
            "`{command}` succeeded, but Cassandra did not load {} of the {} files placed for \
             {label} (they are still under their placed names: {}); the table is NOT \
             restored. Check Cassandra's system.log for why (an SSTable version it cannot \
             read, a wrong owner or mode, another data directory), then run the restore again",
            left.len(),
            to_link.len(),
            left.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for (s, key, is_data) in to_link {
        if !is_data {
            continue;
        }
        let sub = key
            .as_deref()
            .and_then(|k| k.rsplit_once('/'))
            .map(|(d, _)| d)
            .unwrap_or("");
        if !has_data_content(&table_dir.join(sub), s.size, &s.blake3)? {
            bail!(
                "`{command}` succeeded, but the SSTable placed as {} is not in the live \
                 directory {} afterwards; the table {label} is NOT restored. Check that {} is \
                 the directory of the table the node serves and Cassandra's system.log, then \
                 run the restore again",
                s.dest.display(),
                table_dir.join(sub).display(),
                table_dir.display()
            );
        }
    }
    if let Some(j) = journal {
        rec.loaded = true;
        j.data.cassandra_tables.insert(label.clone(), rec);
        j.save()?;
    }
    Ok(loaded_with)
}
