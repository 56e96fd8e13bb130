//! The engines: one module per source (MariaDB, Cassandra, files), each owning both directions
//! of its format, and the [`Component`] trait with the [`Registry`] that the use cases in
//! `ops` loop over.
//!
//! A component's name is at once its item prefix (`name/`), its key in the manifest's
//! `sources`, its restore-journal step key, its `--no-<name>` flag and its configuration
//! section. Adding a source is one new engine module with a `component.rs` and one line in
//! [`default_registry`].

pub mod binlog;
pub mod cassandra;
pub mod files;
pub mod mariadb;
pub mod prometheus;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{Check, PlanStep};
use mnbackup_restore::report::{RestoreReport, StepReport};

use crate::model::ItemSink;
use crate::model::{Item, Manifest};
use crate::repo::Repo;

/// The engine sections of the configuration file (`[mariadb]`, `[cassandra]`, `[[files]]`), as
/// the components read them; `config::Config` (a layer above) implements it.
pub trait Sections: Send + Sync {
    fn mariadb(&self) -> Option<&mariadb::MariadbConfig>;
    fn cassandra(&self) -> Option<&cassandra::CassandraConfig>;
    fn files(&self) -> &[files::FilesConfig];
    fn prometheus(&self) -> Option<&prometheus::PrometheusConfig> {
        None
    }
    /// Replace `[mariadb]` (the safety snapshot's scope).
    fn set_mariadb(&mut self, m: Option<mariadb::MariadbConfig>);
    /// Replace the `[[files]]` entries (the safety snapshot's scope).
    fn set_files(&mut self, f: Vec<files::FilesConfig>);
    /// `[limits] memory`: the bytes the buffers of a snapshot or restore are sized from.
    fn memory(&self) -> u64 {
        64 << 20
    }
}

/// What a component's backup gets.
pub struct BackupCtx<'a> {
    pub config: &'a dyn Sections,
    /// The id of the snapshot being written.
    pub snapshot_id: &'a str,
    /// Paths given on the command line (`--files`), for the component that backs them up.
    pub extra_files: &'a [PathBuf],
    /// Set by a shutdown request; a component stops at its next safe point.
    pub cancel: Option<&'a AtomicBool>,
    /// Read every file (`snapshot --force-read`): sources reuse nothing unread.
    pub force_read: bool,
}

impl BackupCtx<'_> {
    /// Whether a shutdown was requested.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// The kind of a failed preflight check: it decides the exit code of a refused restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Bad usage or a state the operator must change (exit 2).
    Refused,
    /// Damaged or missing snapshot data (exit 5).
    Integrity,
    /// Not enough space (exit 7).
    NoSpace,
}

/// One preflight check with its kind.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub kind: CheckKind,
    pub check: Check,
}

impl Preflight {
    pub fn new(check: Check) -> Preflight {
        Preflight {
            kind: CheckKind::Refused,
            check,
        }
    }
    pub fn kind(mut self, kind: CheckKind) -> Preflight {
        self.kind = kind;
        self
    }
}

/// The options of one restore (or drill), as the components read them. Options of one engine
/// are ignored by the others.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Show the plan only; change nothing.
    pub plan: bool,
    /// Replace what exists (after a safety snapshot).
    pub force: bool,
    /// Components excluded by `--no-<name>`.
    pub skip: BTreeSet<String>,
    /// MariaDB: the target connection (`None`: the `[mariadb]` one).
    pub mariadb_target: Option<crate::engines::mariadb::MariadbConfig>,
    /// MariaDB: database renames (`--rename-db`; the drill's scratch names).
    pub renames: BTreeMap<String, String>,
    pub with_accounts: bool,
    pub replace_local_root: bool,
    /// MariaDB: rebuild mode, the server's durability off for the load (`--rebuild`).
    pub rebuild: bool,
    /// MariaDB: in rebuild mode, also `sql_log_bin = 0` (`--rebuild-skip-binlog`).
    pub rebuild_skip_binlog: bool,
    /// MariaDB: skip the events (a renamed or scratch copy must not run scheduled jobs).
    pub skip_events: bool,
    pub disable_vm_ha: bool,
    pub workers: Option<usize>,
    pub memory_budget: u64,
    /// Files: where they go.
    pub files_root: PathBuf,
    /// The drill: what runs after the snapshot is loaded and proven in the scratch databases,
    /// before they are dropped (`verify --drill --until`: the binlog replay).
    pub after_drill_load: Option<DrillHook>,
}

/// Runs in the drill after the load, with the renames (source database → scratch database);
/// returns a line for the report's notes. An error fails the drill.
#[derive(Clone)]
pub struct DrillHook(pub Arc<DrillFn>);

/// The function of a [`DrillHook`].
pub type DrillFn = dyn Fn(&BTreeMap<String, String>) -> Result<String> + Send + Sync;

impl std::fmt::Debug for DrillHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrillHook")
    }
}

/// What a restore part sees of the session.
pub struct RestoreEnv<'a> {
    pub config: &'a dyn Sections,
    pub repo: &'a Repo,
    pub manifest: &'a Manifest,
    pub req: &'a RestoreRequest,
}

/// What one part's run reports back to the session.
#[derive(Debug, Default)]
pub struct PartOutcome {
    /// Restored, but the result does not match the snapshot (exit 9).
    pub mismatch: bool,
    /// Not fully restored, and why (exit 1).
    pub failure: Option<String>,
}

/// A source's restore for one snapshot: its preflight checks, its plan steps and its run.
pub trait RestorePart: Send {
    /// The items of the snapshot this part restores (their objects are checked first).
    fn items(&self) -> Vec<&Item>;
    /// The journal key's target (MariaDB's address), if this part has one.
    fn journal_target(&self) -> Option<String> {
        None
    }
    /// Names this part creates that a resumed run may find partly restored (databases); the
    /// journal records them before the run.
    fn created_names(&self, _env: &RestoreEnv) -> Vec<String> {
        Vec::new()
    }
    /// Notes for the report once the preflight ran (e.g. the target's version).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// A line for the operator before the run starts.
    fn announce(&self, _env: &RestoreEnv) -> Option<String> {
        None
    }
    /// The preflight checks (also run for `--plan`).
    fn preflight(&mut self, env: &RestoreEnv, journal: &Journal) -> Result<Vec<Preflight>>;
    /// The plan steps, in order.
    fn plan(&self, env: &RestoreEnv, journal: &Journal) -> Result<Vec<PlanStep>>;
    /// Extra detail for `--plan` (text and JSON under the component's name).
    fn plan_detail(&self, _env: &RestoreEnv) -> Result<Option<(String, serde_json::Value)>> {
        Ok(None)
    }
    /// With `--force`: add what would be replaced to the safety snapshot's configuration and
    /// extra paths, and say what it is (`None`: nothing is replaced).
    fn safety_scope(&self, _cfg: &mut dyn Sections, _paths: &mut Vec<PathBuf>) -> Option<String> {
        None
    }
    /// With `--force`, after the safety snapshot: remove what is replaced; returns the changes.
    fn replace(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Restore. `finished` says what earlier parts restored (for error messages).
    fn run(
        &mut self,
        env: &RestoreEnv,
        journal: &Arc<Mutex<Journal>>,
        finished: &str,
        report: &mut RestoreReport,
    ) -> Result<PartOutcome>;
}

/// A source: backup, restore, drill.
pub trait Component: Send + Sync {
    /// The name: item prefix `name/`, manifest source key, journal key, `--no-<name>`.
    fn name(&self) -> &str;
    /// How messages name what this component restored ("MariaDB", "the files").
    fn title(&self) -> &str;
    /// The item prefix.
    fn prefix(&self) -> String {
        format!("{}/", self.name())
    }
    /// Restore order (lower first); the backup follows the registry's order.
    fn restore_rank(&self) -> u32 {
        100
    }
    /// Whether the configuration (or the request) has something for this component to back up.
    fn enabled(&self, ctx: &BackupCtx) -> bool;
    /// Back up into `sink`; returns a one-line summary for the log.
    fn backup(&self, ctx: &BackupCtx, sink: Arc<dyn ItemSink>) -> Result<String>;
    /// What an operator does when the whole source failed.
    fn failure_fix(&self) -> &str {
        "fix the error (a path, permissions), then take a new snapshot"
    }
    /// Whether snapshot `m` has data of this component.
    fn has_data(&self, m: &Manifest) -> bool {
        let p = self.prefix();
        m.sources.contains_key(self.name()) || m.items.iter().any(|i| i.name.starts_with(&p))
    }
    /// The restore of snapshot `env.manifest`, or `None` when it has nothing of this component.
    fn restore(&self, env: &RestoreEnv) -> Result<Option<Box<dyn RestorePart>>>;
    /// An error in the request given what is restored (`active`: this component restores
    /// something), e.g. an option of this component without its data.
    fn request_error(&self, _env: &RestoreEnv, _active: bool) -> Option<anyhow::Error> {
        None
    }
    /// Checks reported when the component is excluded (`--no-<name>`) but has data.
    fn excluded_checks(&self) -> Vec<Check> {
        Vec::new()
    }
    /// Steps reported when the component is excluded (`--no-<name>`) but has data.
    fn excluded_steps(&self) -> Vec<StepReport> {
        Vec::new()
    }
    /// The drill's scratch name of `name` (a database, a keyspace).
    fn scratch_name(&self, name: &str) -> String {
        format!("mnbackup_drill_{name}")
    }
    /// The drill: load into scratch names, prove, drop. `None`: this component has no drill.
    fn drill(&self, _env: &RestoreEnv, _report: &mut RestoreReport) -> Option<Result<()>> {
        None
    }
}

/// The components, in backup order.
#[derive(Clone, Default)]
pub struct Registry {
    components: Vec<Arc<dyn Component>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }
    /// Add a component (after the others).
    pub fn push(&mut self, c: Arc<dyn Component>) -> &mut Registry {
        self.components.push(c);
        self
    }
    /// The components in backup order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Component>> {
        self.components.iter()
    }
    /// The component named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Component>> {
        self.components.iter().find(|c| c.name() == name)
    }
    /// The component whose prefix an item name has.
    pub fn owner(&self, item: &str) -> Option<&Arc<dyn Component>> {
        self.components
            .iter()
            .find(|c| item.starts_with(&c.prefix()))
    }
    /// The components in restore order.
    pub fn restore_order(&self) -> Vec<&Arc<dyn Component>> {
        let mut v: Vec<_> = self.components.iter().collect();
        v.sort_by_key(|c| c.restore_rank());
        v
    }
}

/// The built-in components: MariaDB first (its consistent point), then Cassandra, then files.
pub fn default_registry() -> Registry {
    let mut r = Registry::new();
    r.push(Arc::new(mariadb::component::Mariadb))
        .push(Arc::new(cassandra::component::Cassandra))
        .push(Arc::new(files::component::Files))
        .push(Arc::new(prometheus::component::Prometheus));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_registry_backs_up_mariadb_first_and_restores_files_before_cassandra() {
        let r = default_registry();
        let backup: Vec<&str> = r.iter().map(|c| c.name()).collect();
        assert_eq!(backup, ["mariadb", "cassandra", "files", "prometheus"]);
        let restore: Vec<&str> = r.restore_order().iter().map(|c| c.name()).collect();
        assert_eq!(restore, ["mariadb", "files", "cassandra", "prometheus"]);
        assert_eq!(r.owner("files/etc/hosts").map(|c| c.name()), Some("files"));
        assert_eq!(
            r.owner("mariadb/zstack/VmInstanceVO.0001.sql")
                .map(|c| c.name()),
            Some("mariadb")
        );
        assert!(r.owner("other/x").is_none());
        assert_eq!(
            r.get("mariadb").unwrap().scratch_name("zstack"),
            "mnbackup_drill_zstack"
        );
    }
}
