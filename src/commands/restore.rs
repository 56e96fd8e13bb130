//! `mnbackup restore [SNAPSHOT|latest]`: rebuild the node from a snapshot — MariaDB, files,
//! Cassandra — and prove it with the recorded row fingerprints.
//!
//! The disaster scenario: Server 1 is dead; on new hardware the operator installs the OS,
//! MariaDB (and Cassandra / ZStack packages), mounts the pool and runs this one command.
//!
//! # What happens, in order
//!
//! 1. **Preflight** (all of it also runs for `--plan`, which changes nothing): the snapshot is
//!    complete (every object its restored items need exists with its recorded size); the target
//!    MariaDB answers and is not older than the source (a downgrade is a warning); the target
//!    databases (after `--rename-db`) are absent or empty — otherwise the restore is refused
//!    (exit 2) unless `--force`; when the live `zstack` database would be replaced, ZStack's
//!    `check_restore_mysql` comparison of `VolumeEO.installPath` (refused unless `--force` when
//!    volumes moved since the snapshot); enough free space under `--files-root`; the management
//!    service is stopped (`[restore] service_check`, see [`crate::config::RestoreConfig`]).
//! 2. `--force` with something to replace: a **safety snapshot** of what is replaced (the
//!    target's non-empty databases, and files that would be overwritten; trigger `safety`, tag
//!    `pre-restore`), then the databases are dropped.
//! 3. MariaDB: accounts, schema, data (parallel), routines, views, triggers, events, grants,
//!    AUTO_INCREMENT counters (`crate::engines::mariadb::load`), then the row fingerprint of every
//!    table is compared with the snapshot's.
//! 4. `--disable-vm-ha`: ZStack's VM HA switched off in `GlobalConfigVO` (as `restore_mysql`).
//! 5. Files under `--files-root` (default `/`); an existing different file is kept as
//!    `NAME.pre-restore` (replaced with `--force`), identical ones (size, mtime, mode) are left.
//! 6. Cassandra SSTables, with the `[cassandra]` configuration.
//! 7. `[restore] post_hooks` (e.g. `zstack-ctl start`), only when everything matched.
//!
//! # Resuming
//!
//! Progress is journaled (see `mnbackup_restore::journal`) in `restore-journal.json` beside the
//! daemon's state file, or `--journal PATH`. Running the same command again after an
//! interruption skips what finished and reloads the tables that were not complete.
//!
//! # Exit codes
//!
//! 0 restored and every table matches; 9 restored but a table does not match its fingerprint;
//! 2 refused by a preflight check (the message says what to do) or bad usage; 5 a damaged or
//! missing item (nothing of its table was loaded); 7 not enough space; 1 anything else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

<<<<<<< HEAD
use crate::engines::mariadb::load::{self as rm, ItemSource, LoadOptions, Loader, Target};
use crate::engines::mariadb::plan::{target_db, ItemKind, MariadbSource};
=======
use crate::engines::files::{place, Entry, Existing, Kind, PlaceOptions};
>>>>>>> i16-cassandra
use anyhow::{Context, Result};
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{
    estimate_secs, human_bytes, Check, CheckStatus, PlanStep, RestorePlan, FILE_RATE,
    FINGERPRINT_RATE, SQL_LOAD_RATE,
};
use mnbackup_restore::report::{HookReport, RestoreReport, StepReport, StepStatus};

use super::Ctx;
use crate::codec::decode_piece;
use crate::commands::export::{entry_of, RepoContent};
use crate::engines::mariadb::MariadbConfig;
use crate::error::{integrity, usage, MnError, EXIT_INCOMPLETE, EXIT_MISMATCH};
use crate::model::{Encoding, Item, Manifest, PieceData};
use crate::reader::read_item;
use crate::repo::Repo;

/// Where the restore (or the drill) loads MariaDB: defaults to the `[mariadb]` connection of the
/// configuration; each option overrides one part. The password follows the configuration's
/// rules (inline, `password_env`, `option_file`, `zstack_properties`) and is never taken from
/// the command line: `--target-password-env VAR` names an environment variable holding it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Target MariaDB host (TCP) [default: the [mariadb] connection].
    #[arg(long, value_name = "HOST")]
    pub target_host: Option<String>,
    /// Target MariaDB TCP port.
    #[arg(long, value_name = "PORT")]
    pub target_port: Option<u16>,
    /// Target MariaDB Unix socket (instead of TCP).
    #[arg(long, value_name = "PATH")]
    pub target_socket: Option<PathBuf>,
    /// Target MariaDB user.
    #[arg(long, value_name = "USER")]
    pub target_user: Option<String>,
    /// Name of an environment variable holding the target user's password.
    #[arg(long, value_name = "VAR")]
    pub target_password_env: Option<String>,
}

impl TargetArgs {
    /// The MariaDB configuration of the target (see the type's docs).
    pub fn config(&self, ctx: &Ctx) -> MariadbConfig {
        let mut c = ctx.config.mariadb.clone().unwrap_or_default();
        if self.target_host.is_some() {
            c.host = self.target_host.clone();
            c.socket = None;
        }
        if self.target_port.is_some() {
            c.port = self.target_port;
        }
        if self.target_socket.is_some() {
            c.socket = self.target_socket.clone();
            c.host = None;
        }
        if self.target_user.is_some() {
            c.user = self.target_user.clone();
        }
        if self.target_password_env.is_some() {
            c.password = None;
            c.password_env = self.target_password_env.clone();
        }
        c
    }

    /// The resolved target.
    pub fn target(&self, ctx: &Ctx) -> Result<(MariadbConfig, Target)> {
        let c = self.config(ctx);
        let p = c
            .resolve()
            .context("resolving the target MariaDB connection")?;
        let t = Target {
            opts: p.opts()?,
            address: p.address(),
            user: p.user().to_string(),
        };
        Ok((c, t))
    }
}

/// `mnbackup restore` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Show the ordered plan and the preflight results; change nothing.
    #[arg(long)]
    pub plan: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Restore database FROM as TO (repeatable), e.g. `--rename-db zstack=zstack_old` to inspect
    /// an old state beside the live one. Accounts, grants and events are then skipped.
    #[arg(long = "rename-db", value_name = "FROM=TO")]
    pub rename_db: Vec<String>,
    /// With --rename-db, restore the accounts and grants anyway.
    #[arg(long)]
    pub with_accounts: bool,
    /// Replace the target's own root@localhost with the snapshot's (its password and grants);
    /// by default the target's is kept and every other account is restored.
    #[arg(long)]
    pub replace_local_root: bool,
    /// Replace non-empty target databases and existing files (after a safety snapshot), and
    /// proceed although the management service runs or volumes moved.
    #[arg(long)]
    pub force: bool,
    /// Switch ZStack's VM HA off after the load (GlobalConfigVO ha.enable = false).
    #[arg(long)]
    pub disable_vm_ha: bool,
    /// Where files go (their original absolute paths below it).
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub files_root: PathBuf,
    /// Do not restore files.
    #[arg(long)]
    pub no_files: bool,
    /// Do not restore MariaDB.
    #[arg(long)]
    pub no_mariadb: bool,
    /// Do not restore Cassandra.
    #[arg(long)]
    pub no_cassandra: bool,
    /// Parallel MariaDB connections for the data [default: [mariadb] workers, or the cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The restore journal [default: restore-journal.json in [daemon] state_dir].
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// MiB of checked SQL items held in memory between their check and their load.
    #[arg(long, hide = true, default_value_t = 64)]
    pub memory_budget_mib: u64,
}

/// Parse `--rename-db FROM=TO` options.
pub fn parse_renames(list: &[String]) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    let mut targets = BTreeSet::new();
    for r in list {
        let Some((a, b)) = r.split_once('=') else {
            return Err(usage(format!(
                "--rename-db {r}: expected FROM=TO, e.g. --rename-db zstack=zstack_old"
            )));
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() || b.is_empty() || b.len() > 64 {
            return Err(usage(format!(
                "--rename-db {r}: both names must be given, and TO at most 64 characters"
            )));
        }
        if ["mysql", "information_schema", "performance_schema", "sys"].contains(&b) {
            return Err(usage(format!("--rename-db {r}: {b} is a system database")));
        }
        if m.insert(a.to_string(), b.to_string()).is_some() || !targets.insert(b.to_string()) {
            return Err(usage(format!(
                "--rename-db {r}: each database may be renamed once, to a distinct name"
            )));
        }
    }
    Ok(m)
}

/// Reads manifest items for the loader, every byte checked (`read_item`).
pub struct RepoItems {
    pub repo: Repo,
    pub items: HashMap<String, Item>,
}

impl RepoItems {
    /// The MariaDB items (`mariadb/…`) of a snapshot.
    pub fn mariadb(repo: &Repo, m: &Manifest) -> RepoItems {
        RepoItems {
            repo: repo.clone(),
            items: m
                .items
                .iter()
                .filter(|i| i.name.starts_with("mariadb/"))
                .map(|i| (i.name.clone(), i.clone()))
                .collect(),
        }
    }
}

impl ItemSource for RepoItems {
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let item = self.items.get(name).ok_or_else(|| {
            integrity(format!(
                "the snapshot has no item {name}; its manifest is inconsistent"
            ))
        })?;
        read_item(&self.repo, item)
    }
}

/// Streams an item piece by piece (each checked), checking the whole item's BLAKE3 at the end.
struct ItemReader {
    repo: Repo,
    item: Item,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    hasher: blake3::Hasher,
    total: u64,
}

impl Read for ItemReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.next == self.item.pieces.len() {
                if self.total != self.item.size
                    || self.hasher.finalize().to_hex().as_str() != self.item.blake3
                {
                    return Err(std::io::Error::other(format!(
                        "item `{}`: the reassembled content does not match its recorded BLAKE3",
                        self.item.name
                    )));
                }
                return Ok(0);
            }
            let p = &self.item.pieces[self.next].piece;
            let b = decode_piece(&self.repo, p, &format!("item `{}`", self.item.name))
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            self.hasher.update(&b);
            self.total += b.len() as u64;
            self.buf = b;
            self.pos = 0;
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn chain_ok(repo: &Repo, p: &PieceData, missing: &mut BTreeSet<String>) -> Result<bool> {
    let (obj, stored) = p.data.object();
    let mut ok = match repo.object_size(obj)? {
        Some(sz) => sz == stored,
        None => false,
    };
    if !ok {
        missing.insert(obj.to_string());
    }
    if let Encoding::Delta { base, .. } = &p.data {
        ok &= chain_ok(repo, base, missing)?;
    }
    Ok(ok)
}

/// Check that every object the given items need exists with its recorded size. Returns the
/// items that cannot be restored and the objects missing or of the wrong size.
pub fn incomplete_items(repo: &Repo, items: &[&Item]) -> Result<(Vec<String>, BTreeSet<String>)> {
    let mut bad = Vec::new();
    let mut objects = BTreeSet::new();
    for i in items {
        let mut ok = true;
        for p in &i.pieces {
            ok &= chain_ok(repo, &p.piece, &mut objects)?;
        }
        if !ok {
            bad.push(i.name.clone());
        }
    }
    Ok((bad, objects))
}

/// The service check of `[restore] service_check` (see [`crate::config::RestoreConfig`]).
pub fn service_check(cmd: &str) -> Check {
    if cmd.trim().is_empty() {
        return Check::new(
            "management service",
            CheckStatus::Skipped,
            "not checked ([restore] service_check is empty)",
        );
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Check::new(
                "management service",
                CheckStatus::Warn,
                format!(
                    "could not run `{cmd}` ({e}); make sure ZStack is stopped (`zstack-ctl stop`)"
                ),
            )
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code();
    if code == Some(127) {
        return Check::new(
            "management service",
            CheckStatus::Ok,
            format!("`{cmd}` is not installed here: no management service to stop"),
        );
    }
    let running = code == Some(0)
        && text.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("running") && !l.contains("not running")
        });
    if running {
        let line = text
            .lines()
            .find(|l| l.to_ascii_lowercase().contains("running"))
            .unwrap_or("")
            .trim()
            .to_string();
        Check::new(
            "management service",
            CheckStatus::Fail,
            format!(
                "`{cmd}` says the service is running ({line}); stop it first (`zstack-ctl \
                 stop`; on an HA pair, on both nodes), or use --force"
            ),
        )
    } else {
        Check::new(
            "management service",
            CheckStatus::Ok,
            format!("not running (`{cmd}` exit {})", code.unwrap_or(-1)),
        )
    }
}

/// Free bytes for unprivileged writes on the filesystem holding `path` (or its nearest existing
/// ancestor).
fn free_space(path: &Path) -> Option<(PathBuf, u64)> {
    let mut p = path.to_path_buf();
    loop {
        if p.exists() {
            let s = nix::sys::statvfs::statvfs(&p).ok()?;
            return Some((p, s.blocks_available() as u64 * s.fragment_size() as u64));
        }
        if !p.pop() {
            return None;
        }
    }
}

/// Whether the destination of a file entry already holds exactly it (same size, mode, mtime and
/// content hash for files, same target for symlinks): such entries are left alone.
fn already_there(root: &Path, e: &Entry) -> bool {
    let p = root.join(crate::engines::files::rel_path(&e.path));
    let Ok(md) = std::fs::symlink_metadata(&p) else {
        return false;
    };
    match e.kind {
        Kind::Dir => md.is_dir(),
        Kind::Symlink => {
            md.file_type().is_symlink()
                && std::fs::read_link(&p).ok().is_some_and(|t| {
                    use std::os::unix::ffi::OsStrExt;
                    Some(crate::engines::files::encode_name(t.as_os_str().as_bytes()).as_str())
                        == e.target.as_deref()
                })
        }
        Kind::File => {
            md.is_file()
                && md.len() == e.size
                && e.meta.as_ref().is_some_and(|m| {
                    (md.permissions().mode() & 0o7777) == (m.mode & 0o7777)
                        && md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128
                            == m.mtime_ns as i128
                })
                // Equal metadata does not prove equal content (a file rewritten with its old
                // mtime): compare the content hash the manifest records.
                && e.blake3.as_deref().is_some_and(|want| {
                    let mut h = blake3::Hasher::new();
                    std::fs::File::open(&p)
                        .and_then(|mut f| std::io::copy(&mut f, &mut h))
                        .is_ok_and(|n| n == e.size)
                        && h.finalize().to_hex().as_str() == want
                })
        }
    }
}

fn exists_nondir(root: &Path, e: &Entry) -> bool {
    e.kind != Kind::Dir
        && std::fs::symlink_metadata(root.join(crate::engines::files::rel_path(&e.path))).is_ok()
}

/// The file entries of a snapshot relative to the files root (`files/etc/x` → `etc/x`).
fn file_entries(items: &[&Item]) -> Vec<(Entry, String)> {
    items
        .iter()
        .filter_map(|i| {
            let rel = i.name.strip_prefix("files/")?;
            let mut e = entry_of(i);
            e.path = rel.to_string();
            Some((e, i.name.clone()))
        })
        .collect()
}

fn run_hook(cmd: &str) -> HookReport {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            HookReport {
                command: cmd.to_string(),
                exit_code: o.status.code(),
                ok: o.status.success(),
                output: tail,
            }
        }
        Err(e) => HookReport {
            command: cmd.to_string(),
            exit_code: None,
            ok: false,
            output: format!("could not start: {e}"),
        },
    }
}

/// Parallel MariaDB connections: `--workers`, `[mariadb] workers`, or the number of cores.
fn workers(ctx: &Ctx, args: &RestoreArgs) -> usize {
    args.workers
        .or(ctx.config.mariadb.as_ref().and_then(|m| m.workers))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .clamp(1, 64)
}

/// The runtime for the async MariaDB work.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The restore journal's default path: in `[daemon] state_dir`.
fn default_journal(ctx: &Ctx) -> PathBuf {
    ctx.config.daemon.state_dir.join("restore-journal.json")
}

/// Everything the preflight learned.
struct Preflight {
    checks: Vec<Check>,
    /// Target databases with content that the restore would replace (not ours per journal).
    to_replace: Vec<String>,
    /// Files that exist and differ (would be kept as .pre-restore, or replaced with --force).
    files_existing: Vec<PathBuf>,
    target_version: Option<String>,
}

fn print_out(ctx: &Ctx, text: &str, json: &serde_json::Value) -> Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(json)?);
    } else if !ctx.quiet {
        print!("{text}");
    }
    Ok(())
}

pub fn run(ctx: &Ctx, args: &RestoreArgs) -> Result<i32> {
    let t0 = Instant::now();
    let started = chrono::Utc::now();
    let repo = ctx.open_repo()?;
    let mut lock = Some(repo.lock(false, "restore", ctx.lock_wait())?);
    let id = repo.resolve(&args.snapshot)?;
    let m = repo.load_manifest(&id)?;
    let renames = parse_renames(&args.rename_db)?;

    // What is restored.
    let sizes: BTreeMap<String, u64> = m
        .items
        .iter()
        .filter(|i| i.name.starts_with("mariadb/"))
        .map(|i| (i.name.clone(), i.size))
        .collect();
    let src: Option<MariadbSource> = match m.sources.get("mariadb") {
        Some(info) if !args.no_mariadb => Some(MariadbSource::from_info(info, &sizes)?),
        _ => None,
    };
    if let Some(s) = &src {
        for from in renames.keys() {
            if !s.databases.contains(from) {
                return Err(usage(format!(
                    "--rename-db {from}=…: snapshot {id} has no database {from} (it has: {})",
                    s.databases.join(", ")
                )));
            }
        }
    } else if !renames.is_empty() {
        return Err(usage("--rename-db needs MariaDB data to restore, and there is none (or --no-mariadb was given)"));
    }
    let with_accounts = renames.is_empty() || args.with_accounts;
    let file_items: Vec<&Item> = if args.no_files {
        vec![]
    } else {
        m.items
            .iter()
            .filter(|i| i.name.starts_with("files/"))
            .collect()
    };
    let cass_items: Vec<&Item> = if args.no_cassandra || !m.sources.contains_key("cassandra") {
        vec![]
    } else {
        m.items
            .iter()
            .filter(|i| i.name.starts_with("cassandra/"))
            .collect()
    };
    if src.is_none() && file_items.is_empty() && cass_items.is_empty() {
        return Err(usage(format!(
            "nothing to restore: snapshot {id} has no MariaDB, files or Cassandra data (or all \
             were excluded with --no-*)"
        )));
    }
    let rt = runtime()?;
    let target = match &src {
        Some(_) => Some(args.target.target(ctx)?),
        None => None,
    };
    let journal_path = args.journal.clone().unwrap_or_else(|| default_journal(ctx));
    let (journal, jnote) = Journal::open(
        &journal_path,
        &id,
        target.as_ref().map(|t| t.1.address.as_str()).unwrap_or("-"),
        &renames,
    )?;
    let mut warnings: Vec<String> = jnote.into_iter().collect();
    let ours: BTreeSet<String> = if journal.resumed {
        journal.data.created_databases.clone()
    } else {
        BTreeSet::new()
    };
    let target_dbs: Vec<String> = src
        .as_ref()
        .map(|s| {
            s.databases
                .iter()
                .map(|d| target_db(&renames, d).to_string())
                .collect()
        })
        .unwrap_or_default();

    // Preflight.
    let files_root = args.files_root.clone();
    let entries = file_entries(&file_items);
    let restored: Vec<&Item> = m
        .items
        .iter()
        .filter(|i| {
            (src.is_some() && sizes.contains_key(&i.name))
                || i.name.starts_with("files/") && !args.no_files
                || i.name.starts_with("cassandra/") && !cass_items.is_empty()
        })
        .collect();
    let pf = preflight(
        ctx,
        args,
        &repo,
        &m,
        &rt,
        &src,
        &target,
        &renames,
        &ours,
        &target_dbs,
        &restored,
        &entries,
        &files_root,
    )?;
    if journal.resumed {
        pf_note(&mut warnings, &journal);
    }

    // The plan.
    let steps = plan_steps(
        ctx,
        args,
        &src,
        &target,
        &renames,
        with_accounts,
        &entries,
        &files_root,
        &cass_items,
        &journal,
    )?;
    let plan = RestorePlan::new(id.clone(), steps, pf.checks.clone());
    if args.plan {
        let mut text = plan.to_string();
        let mut would_proceed = plan.would_proceed;
        // Cassandra: per table the live directory, the schema (exists, or the CREATE
        // statements cqlsh will run, or why it cannot be created) and the commands.
        let mut cassandra = serde_json::Value::Null;
        if let (false, Some(cc)) = (cass_items.is_empty(), ctx.config.cassandra.as_ref()) {
            let made = cc.restore_config(None).and_then(|rcfg| {
                crate::engines::cassandra::plan_with_cql(
                    &rcfg,
                    cassandra_components(&repo, &cass_items),
                )
            });
            match made {
                Ok(cp) => {
                    text.push_str(&cp.to_string());
                    cassandra = serde_json::to_value(&cp)?;
                }
                Err(e) => {
                    would_proceed = false;
                    let msg = format!(
                        "the Cassandra part of the plan could not be made: {e:#} (fix it, or \
                         skip Cassandra with --no-cassandra)"
                    );
                    text.push_str(&format!("error: {msg}\n"));
                    warnings.push(msg);
                }
            }
        }
        for w in &warnings {
            text.push_str(&format!("warning: {w}\n"));
        }
        print_out(
            ctx,
            &text,
            &serde_json::json!({"plan": plan, "cassandra": cassandra, "warnings": warnings}),
        )?;
        return Ok(if would_proceed { 0 } else { 2 });
    }
    let failed: Vec<&Check> = pf
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .collect();
    if !failed.is_empty() {
        let list = failed
            .iter()
            .map(|c| format!("  {}: {}", c.name, c.message))
            .collect::<Vec<_>>()
            .join("\n");
        let msg = format!(
            "the restore of snapshot {id} was refused by its preflight checks; nothing was \
             changed:\n{list}\n(`mnbackup restore {} --plan` shows the whole plan)",
            args.snapshot
        );
        let first = failed[0].name.as_str();
        return Err(match first {
            "snapshot objects" => integrity(msg),
            "disk space" => MnError::NoSpace(msg).into(),
            _ => usage(msg),
        });
    }
    for c in &pf.checks {
        if c.status == CheckStatus::Warn {
            tracing::warn!("{}: {}", c.name, c.message);
        }
    }

    let mut report = RestoreReport {
        snapshot: id.clone(),
        kind: "restore".into(),
        target: target
            .as_ref()
            .map(|t| t.1.address.clone())
            .unwrap_or_else(|| "-".into()),
        started: started.to_rfc3339(),
        checks: pf.checks.clone(),
        warnings,
        ..Default::default()
    };
    if let Some(v) = &pf.target_version {
        report.notes.push(format!("target server version {v}"));
    }
    let journal = Arc::new(Mutex::new(journal));

    // --force: safety snapshot, then drop what is replaced.
    let replace_files: Vec<PathBuf> = if args.force {
        pf.files_existing.clone()
    } else {
        vec![]
    };
    if args.force && (!pf.to_replace.is_empty() || !replace_files.is_empty()) {
        drop(lock.take());
        let safety = safety_snapshot(
            ctx,
            &repo,
            target.as_ref().map(|t| &t.0),
            &pf.to_replace,
            &replace_files,
        )
        .context(
            "the safety snapshot of what --force would replace failed, so nothing was \
                 replaced; fix the cause and run the restore again",
        )?;
        ctx.say(format!(
            "safety snapshot {safety} taken of what is replaced (databases: {}; files: {})",
            if pf.to_replace.is_empty() {
                "none".to_string()
            } else {
                pf.to_replace.join(", ")
            },
            replace_files.len()
        ));
        report.safety_snapshot = Some(safety.clone());
        journal.lock().expect("journal").data.safety_snapshot = Some(safety);
        lock = Some(repo.lock(false, "restore", ctx.lock_wait())?);
        if !pf.to_replace.is_empty() {
            let t = &target.as_ref().expect("target").1;
            rt.block_on(async {
                let mut c = rm::connect(t, "dropping the replaced databases").await?;
                rm::drop_databases(&mut c, &pf.to_replace).await?;
                c.disconnect().await.ok();
                Ok::<_, anyhow::Error>(())
            })?;
            report.changes.push(format!(
                "dropped {} (saved in the safety snapshot)",
                pf.to_replace.join(", ")
            ));
        }
    }
    let _lock = lock;
    {
        let mut j = journal.lock().expect("journal");
        j.data.created_databases.extend(target_dbs.iter().cloned());
        j.save()?;
    }

    let workers = workers(ctx, args);
    let mut mismatch = false;
    let mut failures: Vec<String> = Vec::new();

    // MariaDB.
    if let (Some(src), Some((_, t))) = (&src, &target) {
        let src = Arc::new(src.clone());
        let items = Arc::new(RepoItems::mariadb(&repo, &m));
        let loader = Loader {
            target: t.clone(),
            src: src.clone(),
            items,
            opts: LoadOptions {
                renames: renames.clone(),
                with_accounts,
                replace_local_root: args.replace_local_root,
                // A renamed copy is for inspection: its events must not run scheduled jobs.
                skip_events: !renames.is_empty(),
                workers,
                memory_budget: args.memory_budget_mib.max(1) << 20,
            },
            journal: Some(journal.clone()),
            checked: Default::default(),
        };
        ctx.say(format!(
            "restoring MariaDB of snapshot {id} into {} ({} databases, {} items, {workers} \
             connections)",
            t.address,
            src.databases.len(),
            src.items.len()
        ));
        let steps = rt.block_on(loader.run())?;
        report.steps.extend(steps);
        let tf = Instant::now();
        let early = loader.checked.lock().expect("checked").clone();
        let checks = rt.block_on(rm::check_fingerprints(t, &src, &renames, workers, &early))?;
        let mut step = StepReport::new("mariadb fingerprints", StepStatus::Done);
        step.items = checks.len();
        step.rows = checks.iter().filter_map(|c| c.rows).sum();
        step.duration_ms = tf.elapsed().as_millis() as u64;
        report.steps.push(step);
        report.fingerprints = checks;
        report.tally();
        if report.tables_mismatched > 0 {
            mismatch = true;
            let mut j = journal.lock().expect("journal");
            for c in report.fingerprints.iter().filter(|c| !c.ok) {
                j.data.tables_done.remove(&c.table);
            }
            j.save()?;
        }
        if args.disable_vm_ha && src.databases.iter().any(|d| d == "zstack") {
            let db = target_db(&renames, "zstack").to_string();
            let change = rt.block_on(async {
                let mut c = rm::connect(t, "switching VM HA off").await?;
                let r = rm::disable_vm_ha(&mut c, &db).await;
                c.disconnect().await.ok();
                r
            })?;
            report.changes.push(change);
        }
    }

    // Files.
    if !entries.is_empty() {
        let note = finished_note(&report.steps);
        let r = restore_files(args, &repo, &m, &entries, &files_root, &journal, &note)?;
        report.steps.push(r);
    } else if !args.no_files && m.items.iter().any(|i| i.name.starts_with("files/")) {
        report
            .steps
            .push(StepReport::new("files", StepStatus::Skipped));
    }

    // Cassandra.
    if !cass_items.is_empty() {
        match restore_cassandra(ctx, &repo, &cass_items, &journal) {
            Ok(r) => {
                if r.status == StepStatus::Failed {
                    failures.push(format!(
                        "Cassandra is NOT fully restored: {}",
                        r.note.clone().unwrap_or_default()
                    ));
                }
                report.steps.push(r)
            }
            Err(e) => {
                return Err(e.context(format!(
                    "restoring Cassandra {}",
                    finished_note(&report.steps)
                )))
            }
        }
    } else if args.no_cassandra && m.sources.contains_key("cassandra") {
        report
            .steps
            .push(StepReport::new("cassandra", StepStatus::Skipped).note("--no-cassandra"));
    }

    // Hooks.
    if !mismatch {
        for h in &ctx.config.restore.post_hooks {
            let r = run_hook(h);
            if !r.ok {
                failures.push(format!(
                    "post-restore hook `{h}` failed (exit {:?})",
                    r.exit_code
                ));
            }
            report.hooks.push(r);
            if !failures.is_empty() {
                break;
            }
        }
    } else if !ctx.config.restore.post_hooks.is_empty() {
        report.warnings.push(
            "post-restore hooks were NOT run because tables do not match the snapshot".into(),
        );
    }

    report.duration_ms = t0.elapsed().as_millis() as u64;
    let incomplete = !m.complete;
    report.exit_code = if mismatch {
        EXIT_MISMATCH
    } else if !failures.is_empty() {
        1
    } else if incomplete {
        EXIT_INCOMPLETE
    } else {
        0
    };
    report.ok = report.exit_code == 0;
    if report.ok || report.exit_code == EXIT_INCOMPLETE {
        journal.lock().expect("journal").remove()?;
    }
    let mut text = report.to_string();
    if mismatch {
        text.push_str(
            "RESTORE DOES NOT MATCH THE SNAPSHOT: the tables above differ. Do not start the \
             management service on this data. Rerun the same command to reload the mismatched \
             tables; if they still differ, restore an older snapshot.\n",
        );
    } else if report.exit_code == EXIT_INCOMPLETE {
        text.push_str(&format!(
            "restore INCOMPLETE: every restored table matches snapshot {id}, but the snapshot \
             itself is incomplete, so this server lacks:\n"
        ));
        for g in &m.gaps {
            text.push_str(&format!("  - {}\n", g.describe()));
        }
        text.push_str(
            "Restore what is missing by hand (e.g. recreate the accounts and routines from \
             another source) before starting the management node, or restore a complete \
             snapshot (`mnbackup list` shows which are).\n",
        );
    } else if report.ok {
        text.push_str(&format!(
            "restore complete: every table matches snapshot {id}{}\n",
            if ctx.config.restore.post_hooks.is_empty() {
                ". Start the management node now (`zstack-ctl start`)"
            } else {
                ""
            }
        ));
    }
    for f in &failures {
        text.push_str(&format!("error: {f}\n"));
    }
    print_out(ctx, &text, &serde_json::to_value(&report)?)?;
    Ok(report.exit_code)
}

fn pf_note(warnings: &mut Vec<String>, j: &Journal) {
    warnings.push(format!(
        "resuming the interrupted restore recorded in {} ({} steps and {} tables already done)",
        j.path.display(),
        j.data.steps_done.len(),
        j.data.tables_done.len()
    ));
}

#[allow(clippy::too_many_arguments)]
fn preflight(
    ctx: &Ctx,
    args: &RestoreArgs,
    repo: &Repo,
    m: &Manifest,
    rt: &tokio::runtime::Runtime,
    src: &Option<MariadbSource>,
    target: &Option<(MariadbConfig, Target)>,
    renames: &BTreeMap<String, String>,
    ours: &BTreeSet<String>,
    target_dbs: &[String],
    restored: &[&Item],
    entries: &[(Entry, String)],
    files_root: &Path,
) -> Result<Preflight> {
    let mut checks = Vec::new();
    let mut to_replace = Vec::new();
    let mut target_version = None;

    // The snapshot is complete.
    let (bad, objects) = incomplete_items(repo, restored)?;
    checks.push(if bad.is_empty() {
        Check::new(
            "snapshot objects",
            CheckStatus::Ok,
            format!("all {} items to restore have their objects", restored.len()),
        )
    } else {
        Check::new(
            "snapshot objects",
            CheckStatus::Fail,
            format!(
                "snapshot {} cannot be fully restored: {} objects are missing or truncated, \
                 affecting {} items ({}{}); choose another snapshot (`mnbackup list`, `mnbackup \
                 verify` names the damage)",
                m.id,
                objects.len(),
                bad.len(),
                bad.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if bad.len() > 5 { ", …" } else { "" }
            ),
        )
    });
    // What the snapshot never captured: the restore brings back what there is and says so.
    for g in &m.gaps {
        checks.push(Check::new(
            "snapshot incomplete",
            CheckStatus::Warn,
            format!(
                "{} (the restore brings back what the snapshot has and ends with exit 10)",
                g.describe()
            ),
        ));
    }
    if !m.complete && m.gaps.is_empty() {
        checks.push(Check::new(
            "snapshot incomplete",
            CheckStatus::Warn,
            "the snapshot is marked incomplete (no gap recorded)",
        ));
    }

    // Routines that still name a renamed database in a string literal.
    if let (Some(src), Some(_)) = (src, target) {
        for si in src.items.iter().filter(|i| i.kind == ItemKind::Routines) {
            let Some((db, to)) = si.db.as_ref().and_then(|d| renames.get(d).map(|t| (d, t))) else {
                continue;
            };
            // An unreadable item is reported by the objects check above.
            let Some(text) = restored
                .iter()
                .find(|i| i.name == si.name)
                .and_then(|i| read_item(repo, i).ok())
            else {
                continue;
            };
            if let Some(n) = rm::schema_literal_note(&text, db, to) {
                checks.push(Check::new("renamed routines", CheckStatus::Warn, n));
            }
        }
    }

    // MariaDB.
    if let (Some(src), Some((_, t))) = (src, target) {
        let r: Result<()> = rt.block_on(async {
            let mut c = rm::connect(t, "checking the target").await?;
            let v = rm::server_version(&mut c).await?;
            target_version = Some(v.clone());
            checks.push(match rm::version_warning(&src.version, &v) {
                Some(w) => Check::new("target version", CheckStatus::Warn, w),
                None => Check::new(
                    "target version",
                    CheckStatus::Ok,
                    format!(
                        "{} reachable, {v} (snapshot from {})",
                        t.address, src.version
                    ),
                ),
            });
            // The largest statement must fit the target's max_allowed_packet.
            use mysql_async::prelude::Queryable;
            if let Some((table, &need)) = src.max_statement.iter().max_by_key(|(_, v)| **v) {
                let have: Option<u64> = c
                    .query_first("SELECT @@GLOBAL.max_allowed_packet")
                    .await
                    .context("reading the target's max_allowed_packet")?;
                let have = have.unwrap_or(0);
                // Room for the protocol header; the server wants a multiple of 1024.
                let want = (need + 64 * 1024).div_ceil(1024) * 1024;
                if need + 1024 <= have {
                    checks.push(Check::new(
                        "max_allowed_packet",
                        CheckStatus::Ok,
                        format!("{have} bytes; the largest statement is {need} bytes ({table})"),
                    ));
                } else if want > 1 << 30 {
                    checks.push(Check::new(
                        "max_allowed_packet",
                        CheckStatus::Fail,
                        format!(
                            "the largest statement ({table}, {need} bytes) exceeds MariaDB's \
                             1 GiB limit of max_allowed_packet; load that table by hand \
                             (`mnbackup export`) with smaller rows per INSERT"
                        ),
                    ));
                } else {
                    // Setting the current value again proves the privilege without a change.
                    let sql = if args.plan {
                        "SET GLOBAL max_allowed_packet = @@GLOBAL.max_allowed_packet".to_string()
                    } else {
                        format!("SET GLOBAL max_allowed_packet = {want}")
                    };
                    checks.push(match c.query_drop(sql).await {
                        Ok(()) => Check::new(
                            "max_allowed_packet",
                            CheckStatus::Warn,
                            format!(
                                "{} the target's max_allowed_packet from {have} to {want} bytes \
                                 (SET GLOBAL) for the largest statement ({table}, {need} bytes); \
                                 it lasts until the server restarts: set max_allowed_packet = \
                                 {want} in my.cnf to keep it",
                                if args.plan { "would raise" } else { "raised" }
                            ),
                        ),
                        Err(e) => Check::new(
                            "max_allowed_packet",
                            CheckStatus::Fail,
                            format!(
                                "the largest statement ({table}, {need} bytes) exceeds the \
                                 target's max_allowed_packet ({have} bytes) and {} may not raise \
                                 it ({e}); run as root `SET GLOBAL max_allowed_packet = {want};` \
                                 (and set it in my.cnf), then restore again",
                                t.user
                            ),
                        ),
                    });
                }
            }
            let states = rm::database_states(&mut c, target_dbs).await?;
            let nonempty: Vec<&rm::DbState> = states
                .iter()
                .filter(|s| !s.is_empty() && !ours.contains(&s.name))
                .collect();
            if nonempty.is_empty() {
                let resumed: Vec<&str> = states
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.name.as_str())
                    .collect();
                checks.push(Check::new(
                    "target databases",
                    CheckStatus::Ok,
                    if resumed.is_empty() {
                        format!("{} absent or empty", target_dbs.join(", "))
                    } else {
                        format!(
                            "{} absent or empty; {} partly restored by the interrupted run \
                             (the journal says so)",
                            target_dbs.join(", "),
                            resumed.join(", ")
                        )
                    },
                ));
            } else {
                let list = nonempty
                    .iter()
                    .map(|s| format!("{} ({} tables, {} routines)", s.name, s.tables, s.routines))
                    .collect::<Vec<_>>()
                    .join(", ");
                to_replace = nonempty.iter().map(|s| s.name.clone()).collect();
                checks.push(if args.force {
                    Check::new(
                        "target databases",
                        CheckStatus::Warn,
                        format!(
                            "not empty: {list}; --force: they are saved in a safety snapshot, \
                             then dropped and replaced"
                        ),
                    )
                } else {
                    Check::new(
                        "target databases",
                        CheckStatus::Fail,
                        format!(
                            "not empty on {}: {list}. Refusing to overwrite them. Restore \
                             beside them with --rename-db DB=NEWNAME, or replace them with \
                             --force (a safety snapshot of them is taken first)",
                            t.address
                        ),
                    )
                });
            }
            // ZStack's check_restore_mysql: volumes moved since the snapshot?
            let live = target_db(renames, "zstack").to_string();
            let replaces_live = src.databases.iter().any(|d| d == "zstack")
                && nonempty.iter().any(|s| s.name == live);
            if replaces_live {
                if args.plan {
                    checks.push(Check::new(
                        "volume paths",
                        CheckStatus::Skipped,
                        format!(
                            "the comparison of VolumeEO.installPath with the live {live} runs at \
                             restore time (it needs a scratch database; --plan changes nothing)"
                        ),
                    ));
                } else {
                    let items = RepoItems::mariadb(repo, m);
                    let vc = rm::volume_check(t, src, &items, "zstack", &live).await?;
                    checks.push(match (&vc.skipped, vc.moved.is_empty()) {
                        (Some(why), _) => {
                            Check::new("volume paths", CheckStatus::Skipped, why.clone())
                        }
                        (None, true) => Check::new(
                            "volume paths",
                            CheckStatus::Ok,
                            format!(
                                "{} volumes compared, none moved since the snapshot",
                                vc.compared
                            ),
                        ),
                        (None, false) => {
                            let list = vc
                                .moved
                                .iter()
                                .take(10)
                                .map(|(u, a, b)| {
                                    format!(
                                        "{u}: {} -> now {}",
                                        a.as_deref().unwrap_or("NULL"),
                                        b.as_deref().unwrap_or("NULL")
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("; ");
                            Check::new(
                                "volume paths",
                                if args.force {
                                    CheckStatus::Warn
                                } else {
                                    CheckStatus::Fail
                                },
                                format!(
                                    "{} of {} volumes moved since the snapshot ({list}); the \
                                     restored database would point at old locations. Use a newer \
                                     snapshot, or --force and fix the paths afterwards",
                                    vc.moved.len(),
                                    vc.compared
                                ),
                            )
                        }
                    });
                }
            }
            c.disconnect().await.ok();
            Ok(())
        });
        if let Err(e) = r {
            checks.push(Check::new(
                "target MariaDB",
                CheckStatus::Fail,
                format!("{e:#}"),
            ));
        }
    } else if m.sources.contains_key("mariadb") {
        checks.push(Check::new(
            "target MariaDB",
            CheckStatus::Skipped,
            "--no-mariadb",
        ));
    }

    // Disk space for files.
    let mut files_existing = Vec::new();
    if !entries.is_empty() {
        let mut need = 0u64;
        for (e, _) in entries {
            if already_there(files_root, e) {
                continue;
            }
            if exists_nondir(files_root, e) {
                files_existing.push(files_root.join(crate::engines::files::rel_path(&e.path)));
            }
            need += e.size;
        }
        checks.push(match free_space(files_root) {
            Some((p, free)) if free < need + (64 << 20) => Check::new(
                "disk space",
                CheckStatus::Fail,
                format!(
                    "{} needs {} for files but only {} is free on {}; free space or choose \
                     another --files-root",
                    files_root.display(),
                    human_bytes(need),
                    human_bytes(free),
                    p.display()
                ),
            ),
            Some((p, free)) => Check::new(
                "disk space",
                CheckStatus::Ok,
                format!(
                    "files need {}, {} free on {}",
                    human_bytes(need),
                    human_bytes(free),
                    p.display()
                ),
            ),
            None => Check::new(
                "disk space",
                CheckStatus::Warn,
                format!("cannot check the free space under {}", files_root.display()),
            ),
        });
        if !files_existing.is_empty() {
            checks.push(Check::new(
                "existing files",
                CheckStatus::Warn,
                format!(
                    "{} files exist under {} and differ from the snapshot: {}",
                    files_existing.len(),
                    files_root.display(),
                    if args.force {
                        "--force replaces them (after the safety snapshot)"
                    } else {
                        "each is kept as NAME.pre-restore"
                    }
                ),
            ));
        }
    }

    // The management service.
    let mut sc = service_check(&ctx.config.restore.service_check);
    if sc.status == CheckStatus::Fail && args.force {
        sc.status = CheckStatus::Warn;
        sc.message.push_str(" (--force: proceeding anyway)");
    }
    checks.push(sc);

    // Cassandra.
    if m.sources.contains_key("cassandra") && !args.no_cassandra && ctx.config.cassandra.is_none() {
        checks.push(Check::new(
            "cassandra",
            CheckStatus::Fail,
            "the snapshot has Cassandra data but the configuration has no [cassandra] section \
             (data_dirs, nodetool); add it, or skip Cassandra with --no-cassandra",
        ));
    }
    if let (true, false, Some(cc)) = (
        m.sources.contains_key("cassandra"),
        args.no_cassandra,
        ctx.config.cassandra.as_ref(),
    ) {
        // Checked before anything is restored: a bad [cassandra] found only after MariaDB and
        // the files were replaced leaves a half-restored node.
        if let Err(e) = cc.restore_config(None) {
            checks.push(Check::new(
                "cassandra",
                CheckStatus::Fail,
                format!("{e:#} (or skip Cassandra with --no-cassandra)"),
            ));
        }
    }
    Ok(Preflight {
        checks,
        to_replace,
        files_existing,
        target_version,
    })
}

#[allow(clippy::too_many_arguments)]
fn plan_steps(
    ctx: &Ctx,
    args: &RestoreArgs,
    src: &Option<MariadbSource>,
    target: &Option<(MariadbConfig, Target)>,
    renames: &BTreeMap<String, String>,
    with_accounts: bool,
    entries: &[(Entry, String)],
    files_root: &Path,
    cass_items: &[&Item],
    journal: &Journal,
) -> Result<Vec<PlanStep>> {
    let mut steps = Vec::new();
    if let (Some(s), Some((_, t))) = (src, target) {
        let dbs = s
            .databases
            .iter()
            .map(|d| {
                let to = target_db(renames, d);
                if to == d {
                    d.clone()
                } else {
                    format!("{d} as {to}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        for kind in [
            ItemKind::Accounts,
            ItemKind::Schema,
            ItemKind::Data,
            ItemKind::Routines,
            ItemKind::Views,
            ItemKind::Triggers,
            ItemKind::Events,
            ItemKind::Grants,
        ] {
            let items: Vec<_> = s.items.iter().filter(|i| i.kind == kind).collect();
            if items.is_empty() {
                continue;
            }
            let bytes: u64 = items.iter().map(|i| i.size).sum();
            let rows: u64 = items.iter().filter_map(|i| i.rows).sum();
            let skipped = match kind {
                ItemKind::Accounts | ItemKind::Grants if !with_accounts => {
                    Some("--rename-db without --with-accounts".to_string())
                }
                ItemKind::Data => {
                    let tables: BTreeSet<String> =
                        items.iter().filter_map(|i| i.table_key()).collect();
                    (journal.resumed && tables.iter().all(|k| journal.data.tables_done.contains(k)))
                        .then(|| "done by the interrupted run".to_string())
                }
                _ => (journal.resumed
                    && items.iter().all(|i| {
                        journal.step_done(&format!("mariadb:{}:{}", kind.as_str(), i.name))
                    }))
                .then(|| "done by the interrupted run".to_string()),
            };
            let what = match kind {
                ItemKind::Data => format!(
                    "rows of {} tables ({} parallel connections)",
                    items
                        .iter()
                        .filter_map(|i| i.table_key())
                        .collect::<BTreeSet<_>>()
                        .len(),
                    workers(ctx, args)
                ),
                ItemKind::Schema => format!("databases and tables: {dbs}"),
                ItemKind::Accounts if !s.accounts.is_empty() => {
                    let list: Vec<String> = s
                        .accounts
                        .iter()
                        .map(|a| {
                            let local = a
                                .rsplit_once('@')
                                .is_some_and(|(u, h)| u == "root" && h == "localhost");
                            if local && !args.replace_local_root {
                                format!("{a} (kept as it is on the target; --replace-local-root)")
                            } else {
                                a.clone()
                            }
                        })
                        .collect();
                    format!("accounts: {}", list.join(", "))
                }
                k => k.as_str().to_string(),
            };
            steps.push(PlanStep {
                step: format!("mariadb {}", kind.as_str()),
                what,
                destination: format!("MariaDB {} as {}", t.address, t.user),
                items: items.len(),
                bytes,
                rows: (kind == ItemKind::Data).then_some(rows),
                estimate_secs: estimate_secs(bytes, SQL_LOAD_RATE),
                skipped,
            });
        }
        let data = s.bytes_of(ItemKind::Data);
        steps.push(PlanStep {
            step: "mariadb auto_increment".into(),
            what: format!("{} AUTO_INCREMENT counters", s.auto_increment.len()),
            destination: t.address.clone(),
            items: s.auto_increment.len(),
            bytes: 0,
            rows: None,
            estimate_secs: 1,
            skipped: None,
        });
        steps.push(PlanStep {
            step: "mariadb fingerprints".into(),
            what: format!(
                "row fingerprints of {} tables compared with the snapshot",
                s.fingerprints.len()
            ),
            destination: t.address.clone(),
            items: s.fingerprints.len(),
            bytes: data,
            rows: Some(s.fingerprints.values().map(|f| f.rows).sum()),
            estimate_secs: estimate_secs(data, FINGERPRINT_RATE),
            skipped: None,
        });
        if args.disable_vm_ha {
            steps.push(PlanStep {
                step: "disable VM HA".into(),
                what: "GlobalConfigVO ha.enable = false".into(),
                destination: target_db(renames, "zstack").to_string(),
                items: 1,
                bytes: 0,
                rows: None,
                estimate_secs: 0,
                skipped: None,
            });
        }
    }
    if !entries.is_empty() {
        let bytes: u64 = entries.iter().map(|e| e.0.size).sum();
        let same = entries
            .iter()
            .filter(|e| already_there(files_root, &e.0))
            .count();
        steps.push(PlanStep {
            step: "files".into(),
            what: format!(
                "{} entries ({} already identical there){}",
                entries.len(),
                same,
                if args.force {
                    ", replacing different ones"
                } else {
                    ", different ones kept as .pre-restore"
                }
            ),
            destination: files_root.display().to_string(),
            items: entries.len(),
            bytes,
            rows: None,
            estimate_secs: estimate_secs(bytes, FILE_RATE),
            skipped: (journal.resumed && journal.step_done("files"))
                .then(|| "done by the interrupted run".into()),
        });
    }
    if !cass_items.is_empty() {
        let bytes: u64 = cass_items.iter().map(|i| i.size).sum();
        let dest = ctx
            .config
            .cassandra
            .as_ref()
            .and_then(|c| c.data_dirs.first().cloned())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(no [cassandra] configured)".into());
        steps.push(PlanStep {
            step: "cassandra".into(),
            what: format!(
                "{} SSTable components, then nodetool refresh/import",
                cass_items.len()
            ),
            destination: dest,
            items: cass_items.len(),
            bytes,
            rows: None,
            estimate_secs: estimate_secs(bytes, FILE_RATE),
            skipped: (journal.resumed && journal.step_done("cassandra"))
                .then(|| "done by the interrupted run".into()),
        });
    }
    for h in &ctx.config.restore.post_hooks {
        steps.push(PlanStep {
            step: "post hook".into(),
            what: format!("sh -c {h:?} (only when every table matches)"),
            destination: "this node".into(),
            items: 1,
            bytes: 0,
            rows: None,
            estimate_secs: 0,
            skipped: None,
        });
    }
    Ok(steps)
}

/// Take the safety snapshot of what `--force` replaces: the target's databases `dbs` (through
/// the MariaDB source, restricted to them) and the files `files`. Returns its id.
fn safety_snapshot(
    ctx: &Ctx,
    repo: &Repo,
    target: Option<&MariadbConfig>,
    dbs: &[String],
    files: &[PathBuf],
) -> Result<String> {
    let mut cfg = ctx.config.clone();
    cfg.mariadb = match (target, dbs.is_empty()) {
        (Some(t), false) => Some(MariadbConfig {
            databases: Some(dbs.to_vec()),
            exclude_tables: vec![],
            zstack_ui_properties: None,
            ..t.clone()
        }),
        _ => None,
    };
    cfg.cassandra = None;
    cfg.files = vec![];
    let sctx = Ctx {
        repo_path: Some(repo.location().into()),
        config_path: ctx.config_path.clone(),
        config: cfg,
        json: true,
        quiet: true,
        verbose: ctx.verbose,
    };
    let m = super::snapshot::take(
        &sctx,
        &super::snapshot::SnapshotRequest {
            tags: vec!["pre-restore".into()],
            files: files.to_vec(),
            only_files: false,
            trigger: "safety".into(),
            cancel: None,
        },
    )?;
    Ok(m.id)
}

/// What an error of a later step says about the earlier ones: only the components this restore
/// included and finished (MariaDB, the files), and that a rerun finishes the rest.
fn finished_note(steps: &[StepReport]) -> String {
    let done = |f: &dyn Fn(&str) -> bool| {
        steps
            .iter()
            .any(|s| f(&s.step) && matches!(s.status, StepStatus::Done | StepStatus::AlreadyDone))
    };
    let mut parts = Vec::new();
    if done(&|n| n == "mariadb fingerprints") {
        parts.push("MariaDB");
    }
    if done(&|n| n == "files") {
        parts.push("the files");
    }
    match parts.as_slice() {
        [] => "(nothing else was restored yet; rerun the same command to finish)".to_string(),
        [one] => format!("({one} is restored; rerun the same command to finish)"),
        _ => format!(
            "({} are restored; rerun the same command to finish)",
            parts.join(" and ")
        ),
    }
}

fn restore_files(
    args: &RestoreArgs,
    repo: &Repo,
    m: &Manifest,
    entries: &[(Entry, String)],
    root: &Path,
    journal: &Arc<Mutex<Journal>>,
    finished: &str,
) -> Result<StepReport> {
    let t0 = Instant::now();
    if journal.lock().expect("journal").step_done("files") {
        return Ok(StepReport::new("files", StepStatus::AlreadyDone));
    }
    let by_name: HashMap<&str, &Item> = m.items.iter().map(|i| (i.name.as_str(), i)).collect();
    let todo: Vec<Entry> = entries
        .iter()
        .filter(|(e, _)| e.kind == Kind::Dir || !already_there(root, e))
        .map(|(e, _)| e.clone())
        .collect();
    let same = entries.len() - todo.len();
    let content = RepoContent {
        repo,
        items: entries
            .iter()
            .filter_map(|(e, n)| by_name.get(n.as_str()).map(|i| (e.path.clone(), *i)))
            .collect(),
    };
    let is_slash = root
        .canonicalize()
        .map(|p| p == Path::new("/"))
        .unwrap_or(false);
    let r = place(
        &todo,
        root,
        &content,
        &PlaceOptions {
            existing: if args.force {
                Existing::Overwrite
            } else {
                Existing::KeepAsPreRestore
            },
            allow_outside_symlinks: is_slash,
            absolute_symlinks_as_data: true,
            no_special_bits: false,
            chown: true,
        },
    )
    .map_err(|e| {
        if e.downcast_ref::<crate::engines::files::Unsafe>().is_some() {
            crate::error::unsafe_content(format!("restoring files under {}: {e:#}", root.display()))
        } else {
            e.context(format!(
                "restoring files under {} {finished}",
                root.display()
            ))
        }
    })?;
    journal.lock().expect("journal").mark_step("files")?;
    let mut s = StepReport::new("files", StepStatus::Done);
    s.items = (r.files + r.dirs + r.symlinks) as usize;
    s.bytes = r.bytes;
    s.duration_ms = t0.elapsed().as_millis() as u64;
    let mut note = format!(
        "{} files, {} directories, {} symlinks under {}",
        r.files,
        r.dirs,
        r.symlinks,
        root.display()
    );
    if same > 0 {
        note.push_str(&format!("; {same} already identical, left alone"));
    }
    if !r.kept.is_empty() {
        note.push_str(&format!(
            "; {} existing files kept as .pre-restore (e.g. {})",
            r.kept.len(),
            r.kept[0]
        ));
    }
    Ok(s.note(note))
}

/// The restore input of Cassandra items: each component opened from the repository on demand.
fn cassandra_components<'a>(
    repo: &Repo,
    items: &[&Item],
) -> Vec<crate::engines::cassandra::RestoreComponent<'a>> {
    let mut comps = Vec::new();
    for i in items {
        let item = (*i).clone();
        let repo = repo.clone();
        let open: crate::engines::cassandra::OpenFn<'_> = Box::new(move || {
            Ok(Box::new(ItemReader {
                repo,
                item,
                next: 0,
                buf: Vec::new(),
                pos: 0,
                hasher: blake3::Hasher::new(),
                total: 0,
            }) as Box<dyn Read>)
        });
        if let Some(mut c) =
            crate::engines::cassandra::RestoreComponent::from_item_name(&i.name, i.size, open)
        {
            c.mode = i.meta.as_ref().map(|m| m.mode);
            comps.push(c);
        }
    }
    comps
}

fn restore_cassandra(
    ctx: &Ctx,
    repo: &Repo,
    items: &[&Item],
    journal: &Arc<Mutex<Journal>>,
) -> Result<StepReport> {
    let t0 = Instant::now();
    if journal.lock().expect("journal").step_done("cassandra") {
        return Ok(StepReport::new("cassandra", StepStatus::AlreadyDone));
    }
    let cc = ctx.config.cassandra.as_ref().ok_or_else(|| {
        usage("the snapshot has Cassandra data but the configuration has no [cassandra]; add it or use --no-cassandra")
    })?;
    let rcfg = cc.restore_config(None)?;
    let comps = cassandra_components(repo, items);
    let r = {
        let mut j = journal.lock().expect("journal");
        crate::engines::cassandra::restore_journaled(&rcfg, comps, Some(&mut j))?
    };
    // A table left pending is not restored: the step is not done (a rerun finishes it; tables
    // already loaded are in the journal, or recognised by content, and not loaded twice).
    let status = if r.pending.is_empty() {
        journal.lock().expect("journal").mark_step("cassandra")?;
        StepStatus::Done
    } else {
        StepStatus::Failed
    };
    let mut s = StepReport::new("cassandra", status);
    s.items = r
        .tables
        .iter()
        .map(|t| t.files_written + t.files_present)
        .sum();
    s.bytes = r.tables.iter().map(|t| t.bytes_written).sum();
    s.duration_ms = t0.elapsed().as_millis() as u64;
    let mut note = format!("{} tables loaded", r.tables.len());
    if !r.pending.is_empty() {
        note.push_str(&format!("; PENDING: {}", r.pending.join("; ")));
    }
    Ok(s.note(note))
}
