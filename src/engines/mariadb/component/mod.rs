//! The MariaDB component: a consistent dump under `mariadb/`, restored with the loader of
//! `crate::engines::mariadb::load` and proved with the recorded row fingerprints; the drill loads
//! it into scratch databases and drops them.

mod backup;
mod drill;
mod plan;
mod preflight;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engines::mariadb::load::{self as rm, LoadOptions, Loader, Target};
use crate::engines::mariadb::plan::{target_db, MariadbSource};
use anyhow::{Context, Result};
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{Check, CheckStatus, PlanStep};
use mnbackup_restore::report::{RestoreReport, StepReport, StepStatus, TableCheck};

use crate::engines::mariadb::MariadbConfig;
use crate::engines::Sections;
use crate::engines::{
    BackupCtx, Component, PartOutcome, Preflight, RestoreEnv, RestorePart, RestoreRequest,
};
use crate::error::usage;
use crate::model::ItemSink;
use crate::model::{Item, Manifest};
use crate::repo::reader::RepoItems;

/// The MariaDB component.
pub struct Mariadb;

const NAME: &str = "mariadb";
const PREFIX: &str = "mariadb/";

impl Component for Mariadb {
    fn name(&self) -> &str {
        NAME
    }
    fn title(&self) -> &str {
        "MariaDB"
    }
    fn restore_rank(&self) -> u32 {
        10
    }
    fn enabled(&self, ctx: &BackupCtx) -> bool {
        ctx.config.mariadb().is_some()
    }
    fn failure_fix(&self) -> &str {
        "make MariaDB reachable with the [mariadb] settings (`mnbackup check` says what is \
         wrong), then take a new snapshot"
    }
    fn backup(&self, ctx: &BackupCtx, sink: Arc<dyn ItemSink>) -> Result<String> {
        backup::run(ctx, sink)
    }
    fn has_data(&self, m: &Manifest) -> bool {
        m.sources.contains_key(NAME)
    }
    fn restore(&self, env: &RestoreEnv) -> Result<Option<Box<dyn RestorePart>>> {
        Ok(MariadbPart::open(env)?.map(|p| Box::new(p) as Box<dyn RestorePart>))
    }
    fn excluded_checks(&self) -> Vec<Check> {
        vec![Check::new(
            "target MariaDB",
            CheckStatus::Skipped,
            "--no-mariadb",
        )]
    }
    fn request_error(&self, env: &RestoreEnv, active: bool) -> Option<anyhow::Error> {
        (!active && !env.req.renames.is_empty()).then(|| {
            usage(
                "--rename-db needs MariaDB data to restore, and there is none (or --no-mariadb \
                 was given)",
            )
        })
    }
    fn drill(&self, env: &RestoreEnv, report: &mut RestoreReport) -> Option<Result<()>> {
        if !self.has_data(env.manifest) {
            return None;
        }
        Some(drill::run(self, env, report))
    }
}

/// The target of a restore: the given connection, or the `[mariadb]` one.
pub fn target_config(config: &dyn Sections, req: &RestoreRequest) -> MariadbConfig {
    req.mariadb_target
        .clone()
        .or_else(|| config.mariadb().cloned())
        .unwrap_or_default()
}

/// Resolve a connection configuration to a restore target.
pub fn resolve_target(c: &MariadbConfig) -> Result<Target> {
    let p = c
        .resolve()
        .context("resolving the target MariaDB connection")?;
    Ok(Target {
        opts: p.opts()?,
        address: p.address(),
        user: p.user().to_string(),
    })
}

/// The runtime for the async MariaDB work.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The snapshot's MariaDB source (items, fingerprints), if it has one.
fn source_of(m: &Manifest) -> Result<Option<MariadbSource>> {
    let sizes: BTreeMap<String, u64> = m
        .items
        .iter()
        .filter(|i| i.name.starts_with(PREFIX))
        .map(|i| (i.name.clone(), i.size))
        .collect();
    match m.sources.get(NAME) {
        Some(info) => Ok(Some(MariadbSource::from_info(info, &sizes)?)),
        None => Ok(None),
    }
}

/// Load the snapshot's databases into `t` (renamed as `opts` says) and compare every table's
/// row fingerprint with the recorded one: the restore's and the drill's load-and-prove.
async fn load_and_prove(
    t: &Target,
    src: &Arc<MariadbSource>,
    items: Arc<RepoItems>,
    opts: LoadOptions,
    journal: Option<Arc<Mutex<Journal>>>,
) -> Result<(Vec<StepReport>, Vec<TableCheck>)> {
    let renames = opts.renames.clone();
    let workers = opts.workers;
    let loader = Loader {
        target: t.clone(),
        src: src.clone(),
        items,
        opts,
        journal,
        checked: Default::default(),
    };
    let mut steps = loader.run().await?;
    let tf = Instant::now();
    let early = loader.checked.lock().expect("checked").clone();
    let checks = rm::check_fingerprints(t, src, &renames, workers, &early).await?;
    let mut step = StepReport::new("mariadb fingerprints", StepStatus::Done);
    step.items = checks.len();
    step.rows = checks.iter().filter_map(|c| c.rows).sum();
    step.duration_ms = tf.elapsed().as_millis() as u64;
    steps.push(step);
    Ok((steps, checks))
}

/// The restore of the MariaDB databases of one snapshot.
struct MariadbPart {
    src: Arc<MariadbSource>,
    items: Vec<Item>,
    target_cfg: MariadbConfig,
    target: Target,
    rt: tokio::runtime::Runtime,
    /// Target databases with content the restore would replace (not ours per journal).
    to_replace: Vec<String>,
    target_version: Option<String>,
}

impl MariadbPart {
    fn open(env: &RestoreEnv) -> Result<Option<MariadbPart>> {
        let Some(src) = source_of(env.manifest)? else {
            return Ok(None);
        };
        for from in env.req.renames.keys() {
            if !src.databases.contains(from) {
                return Err(usage(format!(
                    "--rename-db {from}=…: snapshot {} has no database {from} (it has: {})",
                    env.manifest.id,
                    src.databases.join(", ")
                )));
            }
        }
        let rt = runtime()?;
        let target_cfg = target_config(env.config, env.req);
        let target = resolve_target(&target_cfg)?;
        let items = env
            .manifest
            .items
            .iter()
            .filter(|i| i.name.starts_with(PREFIX))
            .cloned()
            .collect();
        Ok(Some(MariadbPart {
            src: Arc::new(src),
            items,
            target_cfg,
            target,
            rt,
            to_replace: Vec::new(),
            target_version: None,
        }))
    }

    fn target_dbs(&self, renames: &BTreeMap<String, String>) -> Vec<String> {
        self.src
            .databases
            .iter()
            .map(|d| target_db(renames, d).to_string())
            .collect()
    }

    fn with_accounts(req: &RestoreRequest) -> bool {
        req.renames.is_empty() || req.with_accounts
    }

    /// Parallel MariaDB connections: `--workers`, `[mariadb] workers`, or the number of cores.
    fn workers(env: &RestoreEnv) -> usize {
        env.req
            .workers
            .or(env.config.mariadb().and_then(|m| m.workers))
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .clamp(1, 64)
    }
}

impl RestorePart for MariadbPart {
    fn items(&self) -> Vec<&Item> {
        self.items.iter().collect()
    }
    fn journal_target(&self) -> Option<String> {
        Some(self.target.address.clone())
    }
    fn created_names(&self, env: &RestoreEnv) -> Vec<String> {
        self.target_dbs(&env.req.renames)
    }
    fn notes(&self) -> Vec<String> {
        self.target_version
            .iter()
            .map(|v| format!("target server version {v}"))
            .collect()
    }
    fn announce(&self, env: &RestoreEnv) -> Option<String> {
        Some(format!(
            "restoring MariaDB of snapshot {} into {} ({} databases, {} items, {} connections)",
            env.manifest.id,
            self.target.address,
            self.src.databases.len(),
            self.src.items.len(),
            Self::workers(env)
        ))
    }
    fn preflight(&mut self, env: &RestoreEnv, journal: &Journal) -> Result<Vec<Preflight>> {
        preflight::run(self, env, journal)
    }
    fn plan(&self, env: &RestoreEnv, journal: &Journal) -> Result<Vec<PlanStep>> {
        Ok(plan::steps(self, env, journal))
    }
    fn safety_scope(&self, cfg: &mut dyn Sections, _paths: &mut Vec<PathBuf>) -> Option<String> {
        if self.to_replace.is_empty() {
            return None;
        }
        cfg.set_mariadb(Some(MariadbConfig {
            databases: Some(self.to_replace.clone()),
            exclude_tables: vec![],
            zstack_ui_properties: None,
            ..self.target_cfg.clone()
        }));
        Some(format!("databases: {}", self.to_replace.join(", ")))
    }
    fn replace(&mut self) -> Result<Vec<String>> {
        if self.to_replace.is_empty() {
            return Ok(vec![]);
        }
        let t = &self.target;
        self.rt.block_on(async {
            let mut c = rm::connect(t, "dropping the replaced databases").await?;
            rm::drop_databases(&mut c, &self.to_replace).await?;
            c.disconnect().await.ok();
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(vec![format!(
            "dropped {} (saved in the safety snapshot)",
            self.to_replace.join(", ")
        )])
    }
    fn run(
        &mut self,
        env: &RestoreEnv,
        journal: &Arc<Mutex<Journal>>,
        _finished: &str,
        report: &mut RestoreReport,
    ) -> Result<PartOutcome> {
        let req = env.req;
        let t = &self.target;
        let workers = Self::workers(env);
        let opts = LoadOptions {
            renames: req.renames.clone(),
            with_accounts: Self::with_accounts(req),
            replace_local_root: req.replace_local_root,
            // A renamed copy is for inspection: its events must not run scheduled jobs.
            skip_events: req.skip_events || !req.renames.is_empty(),
            workers,
            memory_budget: req.memory_budget.max(1 << 20),
            rebuild: req.rebuild,
            rebuild_skip_binlog: req.rebuild_skip_binlog,
        };
        let items = Arc::new(RepoItems::with_prefix(env.repo, env.manifest, PREFIX));
        let (steps, checks) = self.rt.block_on(load_and_prove(
            t,
            &self.src,
            items,
            opts,
            Some(journal.clone()),
        ))?;
        report.steps.extend(steps);
        report.fingerprints = checks;
        report.tally();
        let mut outcome = PartOutcome::default();
        if report.tables_mismatched > 0 {
            outcome.mismatch = true;
            let mut j = journal.lock().expect("journal");
            for c in report.fingerprints.iter().filter(|c| !c.ok) {
                j.data.tables_done.remove(&c.table);
            }
            j.save()?;
        }
        if req.disable_vm_ha && self.src.databases.iter().any(|d| d == "zstack") {
            let db = target_db(&req.renames, "zstack").to_string();
            let change = self.rt.block_on(async {
                let mut c = rm::connect(t, "switching VM HA off").await?;
                let r = rm::disable_vm_ha(&mut c, &db).await;
                c.disconnect().await.ok();
                r
            })?;
            report.changes.push(change);
        }
        Ok(outcome)
    }
}

/// The databases the journal says this restore created (a resumed run may find them partly
/// restored: they are not "someone else's" content).
fn ours(journal: &Journal) -> BTreeSet<String> {
    if journal.resumed {
        journal.data.created_databases.clone()
    } else {
        BTreeSet::new()
    }
}
