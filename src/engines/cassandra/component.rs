//! The Cassandra component: SSTables of a snapshot (`nodetool snapshot`) under `cassandra/`,
//! restored into the node's data directory with `nodetool refresh/import`.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engines::cassandra::{OpenFn, RestoreComponent};
use anyhow::Result;
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{estimate_secs, Check, CheckStatus, PlanStep, FILE_RATE};
use mnbackup_restore::report::{RestoreReport, StepReport, StepStatus};

use crate::engines::{BackupCtx, Component, PartOutcome, Preflight, RestoreEnv, RestorePart};
use crate::error::usage;
use crate::model::Item;
use crate::model::ItemSink;
use crate::repo::reader::ItemReader;
use crate::repo::Repo;
use indicatif::HumanBytes;

/// The Cassandra component.
pub struct Cassandra;

const NAME: &str = "cassandra";

impl Component for Cassandra {
    fn name(&self) -> &str {
        NAME
    }
    fn title(&self) -> &str {
        "Cassandra"
    }
    fn restore_rank(&self) -> u32 {
        30
    }
    fn enabled(&self, ctx: &BackupCtx) -> bool {
        ctx.config.cassandra().is_some()
    }
    fn failure_fix(&self) -> &str {
        "check Cassandra (`nodetool status`, its system.log) and the [cassandra] settings \
         against the error, then take a new snapshot"
    }
    fn backup(&self, ctx: &BackupCtx, sink: Arc<dyn ItemSink>) -> Result<String> {
        let Some(c) = ctx.config.cassandra() else {
            return Ok(String::new());
        };
        // A shutdown request kills a running nodetool/cqlsh (its whole process group).
        let stop = crate::engines::cassandra::cancel_commands_flag();
        stop.store(false, Ordering::SeqCst);
        let done = AtomicBool::new(false);
        let summary = std::thread::scope(|sc| {
            if let Some(flag) = ctx.cancel {
                let done = &done;
                sc.spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        if flag.load(Ordering::SeqCst) {
                            stop.store(true, Ordering::SeqCst);
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
            }
            let r = crate::engines::cassandra::backup(c, ctx.snapshot_id, sink.as_ref());
            done.store(true, Ordering::SeqCst);
            r
        })?;
        Ok(format!(
            "cassandra: {} keyspaces, {} tables, {} SSTables ({} files, {}; {} files \
             unchanged, {} read); {} digests checked; snapshot {} {}",
            summary.keyspaces.len(),
            summary.tables,
            summary.sstables,
            summary.files,
            HumanBytes(summary.bytes),
            summary.files_unchanged,
            HumanBytes(summary.bytes_read),
            summary.digests_checked,
            summary.tag,
            if summary.snapshot_cleared {
                "cleared"
            } else {
                "NOT cleared (run `nodetool clearsnapshot`)"
            }
        ))
    }
    fn has_data(&self, m: &crate::model::Manifest) -> bool {
        m.sources.contains_key(NAME)
    }
    fn restore(&self, env: &RestoreEnv) -> Result<Option<Box<dyn RestorePart>>> {
        if !self.has_data(env.manifest) {
            return Ok(None);
        }
        let items = env
            .manifest
            .items
            .iter()
            .filter(|i| i.name.starts_with("cassandra/"))
            .cloned()
            .collect();
        Ok(Some(Box::new(CassandraPart { items })))
    }
    fn excluded_steps(&self) -> Vec<StepReport> {
        vec![StepReport::new(NAME, StepStatus::Skipped).note("--no-cassandra")]
    }
}

/// The restore of the Cassandra tables of one snapshot.
struct CassandraPart {
    items: Vec<Item>,
}

impl RestorePart for CassandraPart {
    fn items(&self) -> Vec<&Item> {
        self.items.iter().collect()
    }

    fn preflight(&mut self, env: &RestoreEnv, _journal: &Journal) -> Result<Vec<Preflight>> {
        // Checked before anything is restored: a bad [cassandra] found only after MariaDB and
        // the files were replaced leaves a half-restored node.
        let msg = match env.config.cassandra() {
            None => "the snapshot has Cassandra data but the configuration has no [cassandra] \
                     section (data_dirs, nodetool); add it, or skip Cassandra with \
                     --no-cassandra"
                .to_string(),
            Some(cc) => match cc.restore_config(None) {
                Ok(_) => return Ok(vec![]),
                Err(e) => format!("{e:#} (or skip Cassandra with --no-cassandra)"),
            },
        };
        Ok(vec![Preflight::new(Check::new(
            NAME,
            CheckStatus::Fail,
            msg,
        ))])
    }

    fn plan(&self, env: &RestoreEnv, journal: &Journal) -> Result<Vec<PlanStep>> {
        if self.items.is_empty() {
            return Ok(vec![]);
        }
        let bytes: u64 = self.items.iter().map(|i| i.size).sum();
        let dest = env
            .config
            .cassandra()
            .and_then(|c| c.data_dirs.first().cloned())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(no [cassandra] configured)".into());
        Ok(vec![PlanStep {
            step: NAME.into(),
            what: format!(
                "{} SSTable components, then nodetool refresh/import",
                self.items.len()
            ),
            destination: dest,
            items: self.items.len(),
            bytes,
            rows: None,
            estimate_secs: estimate_secs(bytes, FILE_RATE),
            skipped: (journal.resumed && journal.step_done(NAME))
                .then(|| "done by the interrupted run".into()),
        }])
    }

    /// Per table the live directory, the schema (exists, or the CREATE statements cqlsh will
    /// run, or why it cannot be created) and the commands.
    fn plan_detail(&self, env: &RestoreEnv) -> Result<Option<(String, serde_json::Value)>> {
        let Some(cc) = env.config.cassandra() else {
            return Ok(None);
        };
        if self.items.is_empty() {
            return Ok(None);
        }
        let rcfg = cc.restore_config(None)?;
        let cp =
            crate::engines::cassandra::plan_with_cql(&rcfg, components(env.repo, &self.items))?;
        Ok(Some((cp.to_string(), serde_json::to_value(&cp)?)))
    }

    fn run(
        &mut self,
        env: &RestoreEnv,
        journal: &Arc<Mutex<Journal>>,
        finished: &str,
        report: &mut RestoreReport,
    ) -> Result<PartOutcome> {
        if self.items.is_empty() {
            return Ok(PartOutcome::default());
        }
        let r = self
            .restore(env, journal)
            .map_err(|e| e.context(format!("restoring Cassandra {finished}")))?;
        let failure = (r.status == StepStatus::Failed).then(|| {
            format!(
                "Cassandra is NOT fully restored: {}",
                r.note.clone().unwrap_or_default()
            )
        });
        report.steps.push(r);
        Ok(PartOutcome {
            mismatch: false,
            failure,
        })
    }
}

impl CassandraPart {
    fn restore(&self, env: &RestoreEnv, journal: &Arc<Mutex<Journal>>) -> Result<StepReport> {
        let t0 = Instant::now();
        if journal.lock().expect("journal").step_done(NAME) {
            return Ok(StepReport::new(NAME, StepStatus::AlreadyDone));
        }
        let cc = env.config.cassandra().ok_or_else(|| {
            usage("the snapshot has Cassandra data but the configuration has no [cassandra]; add it or use --no-cassandra")
        })?;
        let rcfg = cc.restore_config(None)?;
        let comps = components(env.repo, &self.items);
        let r = {
            let mut j = journal.lock().expect("journal");
            crate::engines::cassandra::restore_journaled(&rcfg, comps, Some(&mut j))?
        };
        // A table left pending is not restored: the step is not done (a rerun finishes it;
        // tables already loaded are in the journal, or recognised by content, and not loaded
        // twice).
        let status = if r.pending.is_empty() {
            journal.lock().expect("journal").mark_step(NAME)?;
            StepStatus::Done
        } else {
            StepStatus::Failed
        };
        let mut s = StepReport::new(NAME, status);
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
}

/// The restore input of Cassandra items: each component opened from the repository on demand.
fn components<'a>(repo: &'a Repo, items: &'a [Item]) -> Vec<RestoreComponent<'a>> {
    let mut comps = Vec::new();
    for i in items {
        let open: OpenFn<'a> =
            Box::new(move || Ok(Box::new(ItemReader::new(repo, i)) as Box<dyn Read + 'a>));
        if let Some(mut c) = RestoreComponent::from_item_name(&i.name, i.size, open) {
            c.mode = i.meta.as_ref().map(|m| m.mode);
            comps.push(c);
        }
    }
    comps
}
