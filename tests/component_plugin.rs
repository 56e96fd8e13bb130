//! Adding a source is one component and one registry line: a tiny test-only component (a
//! directory of JSON documents) is registered here only, then backed up, listed, planned and
//! restored through the same use cases (`mnbackup::ops`) the commands call, without any change
//! to `ops` or `commands`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use mnbackup::config::Config;
use mnbackup::engines::{
    default_registry, BackupCtx, Component, PartOutcome, Preflight, Registry, RestoreEnv,
    RestorePart, RestoreRequest,
};
use mnbackup::model::{Item, Manifest};
use mnbackup::model::{ItemSink, ItemSpec};
use mnbackup::ops::progress::NoProgress;
use mnbackup::ops::snapshot::SnapshotRequest;
use mnbackup::ops::Env;
use mnbackup::repo::Repo;
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{Check, CheckStatus, PlanStep};
use mnbackup_restore::report::{RestoreReport, StepReport, StepStatus};

const NAME: &str = "jsondocs";

/// Backs up every `*.json` document of `src` (each must parse); restores them into `dest`.
struct JsonDocs {
    src: PathBuf,
    dest: PathBuf,
}

impl Component for JsonDocs {
    fn name(&self) -> &str {
        NAME
    }
    fn title(&self) -> &str {
        "the JSON documents"
    }
    fn enabled(&self, _ctx: &BackupCtx) -> bool {
        true
    }
    fn backup(&self, _ctx: &BackupCtx, sink: Arc<dyn ItemSink>) -> Result<String> {
        let mut names: Vec<_> = std::fs::read_dir(&self.src)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.retain(|n| n.ends_with(".json"));
        names.sort();
        for n in &names {
            let data = std::fs::read(self.src.join(n))?;
            serde_json::from_slice::<serde_json::Value>(&data)
                .map_err(|e| anyhow::anyhow!("{n} is not JSON: {e}"))?;
            sink.put_bytes(ItemSpec::content(format!("{NAME}/{n}"), true), &data)?;
        }
        sink.set_source_info(NAME, serde_json::json!({ "documents": names.len() }));
        Ok(format!("{NAME}: {} documents", names.len()))
    }
    fn restore(&self, env: &RestoreEnv) -> Result<Option<Box<dyn RestorePart>>> {
        let items: Vec<Item> = env
            .manifest
            .items
            .iter()
            .filter(|i| i.name.starts_with(&self.prefix()))
            .cloned()
            .collect();
        Ok((!items.is_empty()).then(|| {
            Box::new(JsonPart {
                items,
                dest: self.dest.clone(),
            }) as Box<dyn RestorePart>
        }))
    }
}

struct JsonPart {
    items: Vec<Item>,
    dest: PathBuf,
}

impl RestorePart for JsonPart {
    fn items(&self) -> Vec<&Item> {
        self.items.iter().collect()
    }
    fn preflight(&mut self, _env: &RestoreEnv, _j: &Journal) -> Result<Vec<Preflight>> {
        let status = if self.dest.is_dir() {
            CheckStatus::Ok
        } else {
            CheckStatus::Fail
        };
        Ok(vec![Preflight::new(Check::new(
            "json destination",
            status,
            self.dest.display().to_string(),
        ))])
    }
    fn plan(&self, _env: &RestoreEnv, j: &Journal) -> Result<Vec<PlanStep>> {
        Ok(vec![PlanStep {
            step: NAME.into(),
            what: format!("{} documents", self.items.len()),
            destination: self.dest.display().to_string(),
            items: self.items.len(),
            bytes: self.items.iter().map(|i| i.size).sum(),
            rows: None,
            estimate_secs: 1,
            skipped: j.step_done(NAME).then(|| "done".into()),
        }])
    }
    fn run(
        &mut self,
        env: &RestoreEnv,
        journal: &Arc<Mutex<Journal>>,
        _finished: &str,
        report: &mut RestoreReport,
    ) -> Result<PartOutcome> {
        for i in &self.items {
            let data = mnbackup::repo::reader::read_item(env.repo, i)?;
            let file = i.name.strip_prefix("jsondocs/").expect("prefix");
            std::fs::write(self.dest.join(file), data)?;
        }
        journal.lock().unwrap().mark_step(NAME)?;
        let mut s = StepReport::new(NAME, StepStatus::Done);
        s.items = self.items.len();
        report.steps.push(s);
        Ok(PartOutcome::default())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    config: Config,
    registry: Registry,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for d in ["docs", "out", "repo"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Repo::init(&dir.path().join("repo")).unwrap();
        let mut config = Config::default();
        config.repository.cache_dir = Some(dir.path().join("cache"));
        config.restore.service_check = String::new();
        let mut registry = default_registry();
        registry.push(Arc::new(JsonDocs {
            src: dir.path().join("docs"),
            dest: dir.path().join("out"),
        }));
        Fixture {
            dir,
            config,
            registry,
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn env(&self) -> Env<'_> {
        Env {
            config: &self.config,
            repo: Repo::open(&self.path("repo")).unwrap(),
            lock_wait: Duration::ZERO,
            registry: &self.registry,
        }
    }
    fn snapshot(&self) -> Manifest {
        let req = SnapshotRequest {
            trigger: "test".into(),
            ..Default::default()
        };
        mnbackup::ops::snapshot::take(&self.env(), &req, Arc::new(NoProgress)).unwrap()
    }
}

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap();
}

#[test]
fn a_component_registered_in_a_test_is_backed_up_listed_planned_and_restored() {
    let f = Fixture::new();
    write(&f.path("docs/a.json"), r#"{"vm": "a", "cpus": 2}"#);
    write(&f.path("docs/b.json"), r#"[1, 2, 3]"#);
    write(&f.path("docs/notes.txt"), "not a document");
    let m = f.snapshot();
    assert!(m.complete, "{:?}", m.gaps);
    assert_eq!(m.sources[NAME]["documents"], 2);

    // Listed: the repository has the snapshot, and the registry names the owner of its items.
    let env = f.env();
    assert_eq!(env.repo.snapshot_ids().unwrap(), vec![m.id.clone()]);
    let loaded = env.repo.load_manifest(&m.id).unwrap();
    let names: Vec<&str> = loaded.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["jsondocs/a.json", "jsondocs/b.json"]);
    assert!(names
        .iter()
        .all(|n| f.registry.owner(n).map(|c| c.name()) == Some(NAME)));

    // Planned.
    let journal = f.path("state/restore-journal.json");
    let mut s =
        mnbackup::ops::restore::open(&env, RestoreRequest::default(), "latest", &journal).unwrap();
    let checks = s.preflight().unwrap();
    assert!(checks
        .iter()
        .any(|c| c.check.name == "json destination" && c.check.status == CheckStatus::Ok));
    let view = s.plan(&checks).unwrap();
    assert!(view.would_proceed);
    let step = view.plan.steps.iter().find(|p| p.step == NAME).unwrap();
    assert_eq!(step.items, 2);
    assert!(view.details.iter().any(|(n, _)| n == NAME));
    assert!(s.refusal(&checks, "latest").is_none());

    // Restored.
    let r = s.run(&checks, &NoProgress).unwrap();
    assert_eq!(r.report.exit_code, 0, "{}", r.report);
    assert!(r
        .report
        .steps
        .iter()
        .any(|st| st.step == NAME && st.status == StepStatus::Done));
    assert_eq!(
        std::fs::read_to_string(f.path("out/a.json")).unwrap(),
        r#"{"vm": "a", "cpus": 2}"#
    );
    assert_eq!(
        std::fs::read_to_string(f.path("out/b.json")).unwrap(),
        "[1, 2, 3]"
    );
    assert!(!f.path("out/notes.txt").exists());
    assert!(!journal.exists(), "a finished restore removes its journal");
}

#[test]
fn a_failing_test_component_is_a_gap_and_a_refused_check_names_it() {
    let f = Fixture::new();
    write(&f.path("docs/a.json"), "{ broken");
    let m = f.snapshot();
    assert!(!m.complete);
    assert_eq!(m.gaps.len(), 1);
    assert_eq!(m.gaps[0].source, NAME);
    assert!(m.items.is_empty());

    write(&f.path("docs/a.json"), "{}");
    f.snapshot();
    std::fs::remove_dir(f.path("out")).unwrap();
    let env = f.env();
    let journal = f.path("journal.json");
    let mut s =
        mnbackup::ops::restore::open(&env, RestoreRequest::default(), "latest", &journal).unwrap();
    let checks = s.preflight().unwrap();
    let e = s.refusal(&checks, "latest").expect("refused");
    assert!(format!("{e:#}").contains("json destination"), "{e:#}");
}
