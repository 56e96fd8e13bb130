//! Rebuild the node from a snapshot — every component in restore order (MariaDB, files,
//! Cassandra) — and prove it (MariaDB: the recorded row fingerprints).
//!
//! A [`RestoreSession`] is opened ([`open`]: lock, snapshot, one restore part per component
//! with data, the journal), then [`RestoreSession::preflight`] runs the checks (all of them
//! also for `--plan`, which changes nothing), [`RestoreSession::plan`] lists the steps, and
//! [`RestoreSession::run`] restores: with `--force` and something to replace, a safety
//! snapshot of it first (trigger `safety`, tag `pre-restore`, only the components that
//! replace something), then each part, then the `[restore] post_hooks` when everything
//! matched. Progress is journaled (`mnbackup_restore::journal`): running the same restore
//! again after an interruption skips what finished.

pub mod checks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{CheckStatus, PlanStep, RestorePlan};
use mnbackup_restore::report::RestoreReport;

use super::progress::Progress;
use super::snapshot::SnapshotRequest;
use super::Env;
use crate::engines::{CheckKind, Component, Preflight, RestoreEnv, RestorePart, RestoreRequest};
use crate::error::{integrity, usage, MnError, EXIT_INCOMPLETE, EXIT_MISMATCH};
use crate::model::{Item, Manifest};
use crate::repo::lock::Lock;

/// A component with data in the snapshot, and its restore.
struct Active {
    component: Arc<dyn Component>,
    part: Box<dyn RestorePart>,
}

/// One restore of one snapshot.
pub struct RestoreSession<'a> {
    env: &'a Env<'a>,
    pub req: RestoreRequest,
    pub id: String,
    pub manifest: Manifest,
    parts: Vec<Active>,
    excluded: Vec<Arc<dyn Component>>,
    journal: Arc<Mutex<Journal>>,
    /// For the report: warnings gathered before the run (journal notes).
    pub warnings: Vec<String>,
    lock: Option<Lock>,
    started: chrono::DateTime<chrono::Utc>,
    t0: Instant,
    /// Keep the journal after a successful run (a binlog replay follows; the caller removes
    /// it when that finished).
    pub keep_journal: bool,
}

/// The plan of a session (for `--plan`).
pub struct PlanView {
    pub plan: RestorePlan,
    /// Per component of the registry, its plan detail (JSON `null` when none).
    pub details: Vec<(String, serde_json::Value)>,
    /// The details' text (or the error that prevented one), in order.
    pub detail_text: String,
    pub warnings: Vec<String>,
    pub would_proceed: bool,
}

/// The result of a run.
pub struct RunResult {
    pub report: RestoreReport,
    /// Restored, but a table does not match the snapshot.
    pub mismatch: bool,
    /// What failed (a part, a hook).
    pub failures: Vec<String>,
}

fn renv<'b>(env: &'b Env, m: &'b Manifest, req: &'b RestoreRequest) -> RestoreEnv<'b> {
    RestoreEnv {
        config: env.config,
        repo: &env.repo,
        manifest: m,
        req,
    }
}

/// Open the restore of snapshot `spec` (an id, a prefix, `latest`).
pub fn open<'a>(
    env: &'a Env<'a>,
    req: RestoreRequest,
    spec: &str,
    journal_path: &Path,
) -> Result<RestoreSession<'a>> {
    let repo = &env.repo;
    let lock = Some(repo.lock(false, "restore", env.lock_wait)?);
    let id = repo.resolve(spec)?;
    let manifest = repo.load_manifest(&id)?;
    let mut parts = Vec::new();
    let mut excluded = Vec::new();
    {
        let e = renv(env, &manifest, &req);
        for c in env.registry.restore_order() {
            if req.skip.contains(c.name()) {
                if c.has_data(&manifest) {
                    excluded.push(c.clone());
                }
            } else if let Some(part) = c.restore(&e)? {
                parts.push(Active {
                    component: c.clone(),
                    part,
                });
            }
        }
        for c in env.registry.iter() {
            let active = parts.iter().any(|a| a.component.name() == c.name());
            if let Some(err) = c.request_error(&e, active) {
                return Err(err);
            }
        }
    }
    if parts.iter().all(|a| a.part.items().is_empty()) {
        let names: Vec<&str> = env.registry.iter().map(|c| c.name()).collect();
        return Err(usage(format!(
            "nothing to restore: snapshot {id} has no data of {} (or all were excluded with \
             --no-*)",
            names.join(", ")
        )));
    }
    let target = parts
        .iter()
        .find_map(|a| a.part.journal_target())
        .unwrap_or_else(|| "-".into());
    let (journal, jnote) = Journal::open(journal_path, &id, &target, &req.renames)?;
    Ok(RestoreSession {
        env,
        req,
        id,
        manifest,
        parts,
        excluded,
        journal: Arc::new(Mutex::new(journal)),
        warnings: jnote.into_iter().collect(),
        lock,
        started: chrono::Utc::now(),
        t0: Instant::now(),
        keep_journal: false,
    })
}

impl RestoreSession<'_> {
    /// The restore's journal (shared with the run).
    pub fn journal(&self) -> Arc<Mutex<Journal>> {
        self.journal.clone()
    }

    /// The preflight checks, in order: the snapshot, each component, the management service.
    pub fn preflight(&mut self) -> Result<Vec<Preflight>> {
        let e = renv(self.env, &self.manifest, &self.req);
        let restored: Vec<&Item> = self.parts.iter().flat_map(|a| a.part.items()).collect();
        let mut out = checks::snapshot_checks(&self.env.repo, &self.manifest, &restored)?;
        let j = self.journal.lock().expect("journal");
        for a in &mut self.parts {
            out.extend(a.part.preflight(&e, &j)?);
        }
        for c in &self.excluded {
            out.extend(c.excluded_checks().into_iter().map(Preflight::new));
        }
        let mut sc = checks::service_check(&self.env.config.restore.service_check);
        if sc.status == CheckStatus::Fail && self.req.force {
            sc.status = CheckStatus::Warn;
            sc.message.push_str(" (--force: proceeding anyway)");
        }
        out.push(Preflight::new(sc));
        if j.resumed {
            self.warnings.push(format!(
                "resuming the interrupted restore recorded in {} ({} steps and {} tables already \
                 done)",
                j.path.display(),
                j.data.steps_done.len(),
                j.data.tables_done.len()
            ));
        }
        Ok(out)
    }

    /// The plan: every part's steps, then the post hooks.
    pub fn plan(&self, checks: &[Preflight]) -> Result<PlanView> {
        let e = renv(self.env, &self.manifest, &self.req);
        let mut steps: Vec<PlanStep> = Vec::new();
        let j = self.journal.lock().expect("journal");
        for a in &self.parts {
            steps.extend(a.part.plan(&e, &j)?);
        }
        for h in &self.env.config.restore.post_hooks {
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
        let plan = RestorePlan::new(
            self.id.clone(),
            steps,
            checks.iter().map(|c| c.check.clone()).collect(),
        );
        let mut view = PlanView {
            would_proceed: plan.would_proceed,
            plan,
            details: Vec::new(),
            detail_text: String::new(),
            warnings: self.warnings.clone(),
        };
        for c in self.env.registry.iter() {
            let mut value = serde_json::Value::Null;
            if let Some(a) = self.parts.iter().find(|a| a.component.name() == c.name()) {
                match a.part.plan_detail(&e) {
                    Ok(Some((text, v))) => {
                        view.detail_text.push_str(&text);
                        value = v;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        view.would_proceed = false;
                        let msg = format!(
                            "the {} part of the plan could not be made: {err:#} (fix it, or skip \
                             {} with --no-{})",
                            c.title(),
                            c.title(),
                            c.name()
                        );
                        view.detail_text.push_str(&format!("error: {msg}\n"));
                        view.warnings.push(msg);
                    }
                }
            }
            view.details.push((c.name().to_string(), value));
        }
        Ok(view)
    }

    /// The error refusing the restore when a check failed (its kind decides the exit code).
    pub fn refusal(&self, checks: &[Preflight], spec: &str) -> Option<anyhow::Error> {
        let failed: Vec<&Preflight> = checks
            .iter()
            .filter(|c| c.check.status == CheckStatus::Fail)
            .collect();
        let first = failed.first()?;
        let list = failed
            .iter()
            .map(|c| format!("  {}: {}", c.check.name, c.check.message))
            .collect::<Vec<_>>()
            .join("\n");
        let msg = format!(
            "the restore of snapshot {} was refused by its preflight checks; nothing was \
             changed:\n{list}\n(`mnbackup restore {spec} --plan` shows the whole plan)",
            self.id
        );
        Some(match first.kind {
            CheckKind::Integrity => integrity(msg),
            CheckKind::NoSpace => MnError::NoSpace(msg).into(),
            CheckKind::Refused => usage(msg),
        })
    }

    /// Restore (the checks passed; see [`RestoreSession::refusal`]).
    pub fn run(mut self, checks: &[Preflight], progress: &dyn Progress) -> Result<RunResult> {
        for c in checks {
            if c.check.status == CheckStatus::Warn {
                tracing::warn!("{}: {}", c.check.name, c.check.message);
            }
        }
        let mut report = RestoreReport {
            snapshot: self.id.clone(),
            kind: "restore".into(),
            target: self
                .parts
                .iter()
                .find_map(|a| a.part.journal_target())
                .unwrap_or_else(|| "-".into()),
            started: self.started.to_rfc3339(),
            checks: checks.iter().map(|c| c.check.clone()).collect(),
            warnings: std::mem::take(&mut self.warnings),
            ..Default::default()
        };
        for a in &self.parts {
            report.notes.extend(a.part.notes());
        }
        if self.req.force {
            self.replace(&mut report, progress)?;
        }
        let e = renv(self.env, &self.manifest, &self.req);
        {
            let mut j = self.journal.lock().expect("journal");
            for a in &self.parts {
                j.data.created_databases.extend(a.part.created_names(&e));
            }
            j.save()?;
        }
        let journal = self.journal.clone();
        let mut result = self.run_parts(&journal, report, progress)?;
        self.run_hooks(&mut result);
        let report = &mut result.report;
        report.duration_ms = self.t0.elapsed().as_millis() as u64;
        report.exit_code = if result.mismatch {
            EXIT_MISMATCH
        } else if !result.failures.is_empty() {
            1
        } else if !self.manifest.complete {
            EXIT_INCOMPLETE
        } else {
            0
        };
        report.ok = report.exit_code == 0;
        if (report.ok || report.exit_code == EXIT_INCOMPLETE) && !self.keep_journal {
            journal.lock().expect("journal").remove()?;
        }
        drop(self.lock.take());
        Ok(result)
    }

    /// `--force`: the safety snapshot of what is replaced, then each part removes it.
    fn replace(&mut self, report: &mut RestoreReport, progress: &dyn Progress) -> Result<()> {
        let mut cfg = self.env.config.clone();
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut only = std::collections::BTreeSet::new();
        let mut what = Vec::new();
        for a in &self.parts {
            if let Some(w) = a.part.safety_scope(&mut cfg, &mut paths) {
                only.insert(a.component.name().to_string());
                what.push(w);
            }
        }
        if only.is_empty() {
            return Ok(());
        }
        drop(self.lock.take());
        let senv = Env {
            config: &cfg,
            repo: self.env.repo.clone(),
            lock_wait: self.env.lock_wait,
            registry: self.env.registry,
        };
        let safety = super::snapshot::take(
            &senv,
            &SnapshotRequest {
                tags: vec!["pre-restore".into()],
                files: paths,
                only: Some(only),
                trigger: "safety".into(),
                cancel: None,
                force_read: false,
                ..Default::default()
            },
            Arc::new(super::progress::NoProgress),
        )
        .context(
            "the safety snapshot of what --force would replace failed, so nothing was \
             replaced; fix the cause and run the restore again",
        )?
        .id;
        progress.note(&format!(
            "safety snapshot {safety} taken of what is replaced ({})",
            what.join("; ")
        ));
        report.safety_snapshot = Some(safety.clone());
        self.journal.lock().expect("journal").data.safety_snapshot = Some(safety);
        self.lock = Some(self.env.repo.lock(false, "restore", self.env.lock_wait)?);
        for a in &mut self.parts {
            report.changes.extend(a.part.replace()?);
        }
        Ok(())
    }

    /// Each part in restore order; then the steps of the excluded components.
    fn run_parts(
        &mut self,
        journal: &Arc<Mutex<Journal>>,
        mut report: RestoreReport,
        progress: &dyn Progress,
    ) -> Result<RunResult> {
        let e = renv(self.env, &self.manifest, &self.req);
        let mut mismatch = false;
        let mut failures = Vec::new();
        let mut done: Vec<String> = Vec::new();
        for a in &mut self.parts {
            if a.part.items().is_empty() {
                continue;
            }
            if let Some(line) = a.part.announce(&e) {
                progress.note(&line);
            }
            progress.phase(a.component.name(), None);
            let o = a
                .part
                .run(&e, journal, &finished_note(&done), &mut report)?;
            mismatch |= o.mismatch;
            failures.extend(o.failure);
            done.push(a.component.title().to_string());
        }
        for c in &self.excluded {
            report.steps.extend(c.excluded_steps());
        }
        Ok(RunResult {
            report,
            mismatch,
            failures,
        })
    }

    /// The `[restore] post_hooks`, only when everything matched.
    fn run_hooks(&self, r: &mut RunResult) {
        let hooks = &self.env.config.restore.post_hooks;
        if r.mismatch {
            if !hooks.is_empty() {
                r.report.warnings.push(
                    "post-restore hooks were NOT run because tables do not match the snapshot"
                        .into(),
                );
            }
            return;
        }
        for h in hooks {
            let hr = checks::run_hook(h);
            if !hr.ok {
                r.failures.push(format!(
                    "post-restore hook `{h}` failed (exit {:?})",
                    hr.exit_code
                ));
            }
            r.report.hooks.push(hr);
            if !r.failures.is_empty() {
                break;
            }
        }
    }
}

/// What an error of a later part says about the earlier ones: the components this restore
/// finished, and that a rerun finishes the rest.
fn finished_note(done: &[String]) -> String {
    match done {
        [] => "(nothing else was restored yet; rerun the same command to finish)".to_string(),
        [one] => format!("({one} is restored; rerun the same command to finish)"),
        _ => format!(
            "({} are restored; rerun the same command to finish)",
            done.join(" and ")
        ),
    }
}
