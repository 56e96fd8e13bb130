//! The Prometheus component: the TSDB's blocks under `prometheus/<ulid>/<file>`, restored into
//! `[prometheus] data_dir` (empty, or with `--force`).

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{estimate_secs, Check, CheckStatus, PlanStep, FILE_RATE};
use mnbackup_restore::report::{RestoreReport, StepReport, StepStatus};

use super::{
    lookup_user, plan, restore, PrometheusPlan, PrometheusSourceInfo, RestoreFile, SOURCE,
};
use crate::engines::{BackupCtx, Component, PartOutcome, Preflight, RestoreEnv, RestorePart};
use crate::model::ItemSink;
use crate::model::{Item, Manifest};
use crate::repo::reader::ItemReader;
use crate::repo::Repo;

/// The Prometheus component.
pub struct Prometheus;

impl Component for Prometheus {
    fn name(&self) -> &str {
        SOURCE
    }
    fn title(&self) -> &str {
        "Prometheus"
    }
    fn restore_rank(&self) -> u32 {
        40
    }
    fn enabled(&self, ctx: &BackupCtx) -> bool {
        ctx.config.prometheus().is_some()
    }
    fn failure_fix(&self) -> &str {
        "check that Prometheus answers at [prometheus] url and that data_dir is its \
         --storage.tsdb.path, then take a new snapshot"
    }
    fn backup(&self, ctx: &BackupCtx, sink: Arc<dyn ItemSink>) -> Result<String> {
        let Some(c) = ctx.config.prometheus() else {
            return Ok(String::new());
        };
        let s = super::backup(c, sink.as_ref())?;
        let mut line = format!(
            "prometheus: {} blocks ({} unchanged, {} older than max_age_days left out), {} \
             files, {} bytes, method {:?}",
            s.blocks, s.blocks_unchanged, s.blocks_too_old, s.files, s.bytes, s.method
        );
        for w in &s.warnings {
            line.push_str("; ");
            line.push_str(w);
        }
        Ok(line)
    }
    fn has_data(&self, m: &Manifest) -> bool {
        m.sources.contains_key(SOURCE) || m.items.iter().any(|i| i.name.starts_with("prometheus/"))
    }
    fn restore(&self, env: &RestoreEnv) -> Result<Option<Box<dyn RestorePart>>> {
        if !self.has_data(env.manifest) {
            return Ok(None);
        }
        let items: Vec<Item> = env
            .manifest
            .items
            .iter()
            .filter(|i| {
                i.name.starts_with("prometheus/") && i.kind == crate::model::EntryKind::File
            })
            .cloned()
            .collect();
        let info = env
            .manifest
            .sources
            .get(SOURCE)
            .and_then(|v| serde_json::from_value::<PrometheusSourceInfo>(v.clone()).ok());
        Ok(Some(Box::new(PrometheusPart {
            items,
            info,
            plan: None,
        })))
    }
    fn excluded_steps(&self) -> Vec<StepReport> {
        vec![StepReport::new(SOURCE, StepStatus::Skipped).note("--no-prometheus")]
    }
}

/// The restore of the Prometheus blocks of one snapshot.
struct PrometheusPart {
    items: Vec<Item>,
    info: Option<PrometheusSourceInfo>,
    plan: Option<PrometheusPlan>,
}

impl PrometheusPart {
    fn make_plan(&self, env: &RestoreEnv) -> Result<PrometheusPlan> {
        let cfg = env.config.prometheus().cloned().unwrap_or_default();
        let files: Vec<(String, u64)> = self
            .items
            .iter()
            .map(|i| (i.name.clone(), i.size))
            .collect();
        plan(
            self.info.as_ref(),
            &files,
            &cfg.data_dir,
            lookup_user(&cfg.owner),
            env.req.force,
        )
    }
}

impl RestorePart for PrometheusPart {
    fn items(&self) -> Vec<&Item> {
        self.items.iter().collect()
    }

    fn preflight(&mut self, env: &RestoreEnv, _journal: &Journal) -> Result<Vec<Preflight>> {
        match self.make_plan(env) {
            Ok(p) => {
                let detail = format!("{} blocks into {}", p.blocks.len(), p.data_dir.display());
                self.plan = Some(p);
                Ok(vec![Preflight::new(Check::new(
                    SOURCE,
                    CheckStatus::Ok,
                    detail,
                ))])
            }
            Err(e) => Ok(vec![Preflight::new(Check::new(
                SOURCE,
                CheckStatus::Fail,
                format!("{e:#} (or skip Prometheus with --no-prometheus)"),
            ))]),
        }
    }

    fn plan(&self, env: &RestoreEnv, journal: &Journal) -> Result<Vec<PlanStep>> {
        let p = match &self.plan {
            Some(p) => p.clone(),
            None => self.make_plan(env)?,
        };
        let bytes = p.bytes();
        Ok(vec![PlanStep {
            step: SOURCE.into(),
            what: p.describe().join("\n"),
            destination: p.data_dir.display().to_string(),
            items: self.items.len(),
            bytes,
            rows: None,
            estimate_secs: estimate_secs(bytes, FILE_RATE),
            skipped: (journal.resumed && journal.step_done(SOURCE))
                .then(|| "done by the interrupted run".into()),
        }])
    }

    fn plan_detail(&self, env: &RestoreEnv) -> Result<Option<(String, serde_json::Value)>> {
        let p = self.make_plan(env)?;
        let blocks: Vec<serde_json::Value> = p
            .blocks
            .iter()
            .map(|b| {
                serde_json::json!({
                    "ulid": b.ulid, "min_time": b.min_time, "max_time": b.max_time,
                    "num_samples": b.num_samples, "files": b.files.len(), "bytes": b.bytes(),
                })
            })
            .collect();
        Ok(Some((
            p.describe().join("\n"),
            serde_json::json!({ "data_dir": p.data_dir, "blocks": blocks }),
        )))
    }

    fn run(
        &mut self,
        env: &RestoreEnv,
        journal: &Arc<Mutex<Journal>>,
        finished: &str,
        report: &mut RestoreReport,
    ) -> Result<PartOutcome> {
        let t0 = Instant::now();
        if journal.lock().expect("journal").step_done(SOURCE) {
            report
                .steps
                .push(StepReport::new(SOURCE, StepStatus::AlreadyDone));
            return Ok(PartOutcome::default());
        }
        let p = match &self.plan {
            Some(p) => p.clone(),
            None => self.make_plan(env)?,
        };
        let r = restore(&p, restore_files(env.repo, &self.items))
            .map_err(|e| e.context(format!("restoring Prometheus {finished}")))?;
        journal.lock().expect("journal").mark_step(SOURCE)?;
        let mut s = StepReport::new(SOURCE, StepStatus::Done);
        s.items = r.files as usize;
        s.bytes = r.bytes;
        s.duration_ms = t0.elapsed().as_millis() as u64;
        report.steps.push(s.note(format!(
            "{} blocks into {}{}",
            r.blocks.len(),
            p.data_dir.display(),
            if r.chowned { " (owner set)" } else { "" }
        )));
        Ok(PartOutcome::default())
    }
}

/// The restore input: each block file opened from the repository on demand, checked as read.
fn restore_files<'a>(repo: &'a Repo, items: &'a [Item]) -> Vec<RestoreFile<'a>> {
    items
        .iter()
        .map(|i| RestoreFile {
            item: i.name.clone(),
            size: i.size,
            open: Box::new(move || Ok(Box::new(ItemReader::new(repo, i)) as Box<dyn Read + 'a>)),
        })
        .collect()
}
