//! The TOML configuration: where the repository is, what is backed up, and how.
//!
//! Unknown keys are errors naming the key and its line. Secrets (passwords) are never taken from
//! the command line: they come from the config file (which must then not be world-readable), an
//! environment variable, or a MariaDB option file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::engines::cassandra::CassandraConfig;
use crate::engines::files::FilesConfig;
use crate::engines::mariadb::MariadbConfig;
use crate::engines::prometheus::PrometheusConfig;
use crate::error::MnError;
use crate::repo::codec::CodecPolicy;
pub use crate::store::config::ObjectStoreConfig;

/// The longest lock wait accepted (`--lock-wait`, `[repository] lock_wait_seconds`): one week.
pub const MAX_LOCK_WAIT_SECONDS: u64 = 7 * 24 * 3600;

/// The default config path, used when it exists and no `-c` is given.
pub const DEFAULT_CONFIG: &str = "/etc/mnbackup/mnbackup.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub delta: DeltaConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[[schedule]]` entries; when none are given the daemon takes a snapshot at
    /// `0 0,12 * * *` (twice daily).
    #[serde(default)]
    pub schedule: Vec<ScheduleConfig>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mariadb: Option<MariadbConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cassandra: Option<CassandraConfig>,
    /// `[prometheus]`: the node's Prometheus TSDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusConfig>,
    /// `[[files]]` entries.
    #[serde(default)]
    pub files: Vec<FilesConfig>,
    /// `[restore]`: how `mnbackup restore` checks the node and what it runs afterwards.
    #[serde(default)]
    pub restore: RestoreConfig,
    /// `[cluster]`: several management nodes sharing one repository (docs/cluster.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// `[binlog]`: point-in-time recovery (binlog shipping, `docs/binlog.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<BinlogConfig>,
    /// `[[copy]]` targets: second repositories for `mnbackup copy --to NAME` and the daemon's
    /// `copy` job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<CopyTargetConfig>,
    /// `[limits]`: the memory snapshot and restore size their buffers from.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[[copy]]`: a second repository snapshots are copied to (`mnbackup copy --to NAME`, the
/// daemon's `copy` job), as restic's `copy`: the selected snapshots the target lacks, sending
/// only the objects it lacks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CopyTargetConfig {
    /// The target's name (`copy --to NAME`, `args = ["NAME"]` of a `copy` job).
    pub name: String,
    /// The target repository: a path (another pool) or URL (`s3://bucket/prefix`, ...). It must
    /// exist (`mnbackup -r LOCATION init`).
    pub to: String,
    /// Which snapshots: `all` (default) or `latest` (the newest of this node's series).
    #[serde(default = "default_copy_snapshots")]
    pub snapshots: String,
    /// Only snapshots of this host (default: every host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Upload limit in KiB/s (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload: Option<u64>,
    /// Only the snapshots `forget` with this policy would keep in each host's series (the
    /// keys of `[retention]`; default: none, every selected snapshot). Not with `latest`.
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// `[copy.s3]`: endpoint and credentials of an object-store target (the keys of
    /// `[repository.s3]`); default: `[repository.s3]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<ObjectStoreConfig>,
}

fn default_copy_snapshots() -> String {
    "all".into()
}

impl CopyTargetConfig {
    /// Check one target (names, selection, location syntax); the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = &self.name;
        let name_ok = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(format!(
                "[[copy]] name = {n:?} is not usable: 1 to 64 letters, digits, `-`, `_` or `.`"
            ));
        }
        let at = format!("[[copy]] {n:?}");
        if self.to.trim().is_empty() {
            return Err(format!(
                "{at}: `to` is empty; give the target repository's path or URL"
            ));
        }
        if let Some((scheme, _)) = self.to.split_once("://") {
            if scheme == "file" {
                if !self.to["file://".len()..].starts_with('/') {
                    return Err(format!(
                        "{at}: to = {:?}: a file:// URL needs an absolute path",
                        self.to
                    ));
                }
            } else if crate::store::object::SCHEMES.contains(&scheme) {
                crate::store::object::ObjectUrl::parse(&self.to)
                    .map_err(|e| format!("{at}: to = {:?}: {e:#}", self.to))?;
            } else {
                return Err(format!(
                    "{at}: to = {:?} has the unknown scheme `{scheme}://`; use a path or {}",
                    self.to,
                    crate::store::SCHEMES.join(", ")
                ));
            }
        }
        if !matches!(self.snapshots.as_str(), "all" | "latest") {
            return Err(format!(
                "{at}: snapshots = {:?} is not a selection; use \"all\" or \"latest\"",
                self.snapshots
            ));
        }
        if self.limit_upload == Some(0) {
            return Err(format!(
                "{at}: limit_upload = 0 would never send anything; leave it out for no limit"
            ));
        }
        let keep = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        if keep.iter().any(Option::is_some) {
            if self.snapshots == "latest" {
                return Err(format!(
                    "{at}: snapshots = \"latest\" and keep_* exclude each other (latest is one \
                     snapshot, keep_* a policy); remove one of them"
                ));
            }
            if keep.iter().all(|k| k.unwrap_or(0) == 0) {
                return Err(format!(
                    "{at}: every keep_* is 0, a policy keeping nothing; give a count above 0 \
                     or leave keep_* out to copy every snapshot"
                ));
            }
        }
        if let Some(h) = &self.host {
            check_host(h).map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(())
    }
}

/// `[limits]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The memory the buffers of `snapshot` and `restore` are sized from: `"64MiB"`, `"1GiB"`,
    /// or a number of MiB (default 64 MiB; 16 MiB to 64 GiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySize>,
}

/// A memory size: a number of MiB or a text with a unit (`KiB`, `MiB`, `GiB`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum MemorySize {
    Mib(u64),
    Text(String),
}

/// The default of `[limits] memory`.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

impl LimitsConfig {
    /// `memory` in bytes, or why it is not a size this program can use.
    pub fn memory_bytes(&self) -> std::result::Result<u64, String> {
        let n = match &self.memory {
            None => return Ok(DEFAULT_MEMORY),
            Some(MemorySize::Mib(n)) => n.checked_mul(1 << 20),
            Some(MemorySize::Text(t)) => {
                let t = t.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                    "" | "mib" | "m" | "mb" => 1 << 20,
                    "kib" | "k" | "kb" => 1 << 10,
                    "gib" | "g" | "gb" => 1 << 30,
                    _ => {
                        return Err(format!(
                            "[limits] memory = {t:?}: unknown unit (KiB, MiB, GiB)"
                        ))
                    }
                };
                num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult))
            }
        };
        match n {
            Some(n) if (16 << 20..=64 << 30).contains(&n) => Ok(n),
            _ => Err(format!(
                "[limits] memory = {:?} is out of range: 16 MiB to 64 GiB (e.g. \"64MiB\")",
                self.memory
                    .as_ref()
                    .map(|m| match m {
                        MemorySize::Mib(n) => format!("{n}"),
                        MemorySize::Text(t) => t.clone(),
                    })
                    .unwrap_or_default()
            )),
        }
    }

    /// [`LimitsConfig::memory_bytes`], the default when invalid (validated when loading).
    pub fn memory(&self) -> u64 {
        self.memory_bytes().unwrap_or(DEFAULT_MEMORY)
    }
}

/// `[binlog]`: shipping the MariaDB binlog into the repository (`mnbackup binlog --once`, the
/// daemon's `binlog` job). The source is the `[mariadb]` connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BinlogConfig {
    /// Close a segment this many seconds after its first event.
    pub segment_seconds: u64,
    /// Close a segment once it has this many bytes.
    pub segment_bytes: u64,
    /// `status` alarms when the newest shipped event is older than this.
    pub max_lag_seconds: u64,
    /// The `server_id` the capture registers with (unique among the server's replicas).
    pub server_id: u32,
}

impl Default for BinlogConfig {
    fn default() -> Self {
        BinlogConfig {
            segment_seconds: 60,
            segment_bytes: 64 << 20,
            max_lag_seconds: 300,
            server_id: 0x6d6e_6200,
        }
    }
}

impl crate::engines::Sections for Config {
    fn mariadb(&self) -> Option<&MariadbConfig> {
        self.mariadb.as_ref()
    }
    fn cassandra(&self) -> Option<&CassandraConfig> {
        self.cassandra.as_ref()
    }
    fn files(&self) -> &[FilesConfig] {
        &self.files
    }
    fn prometheus(&self) -> Option<&crate::engines::prometheus::PrometheusConfig> {
        self.prometheus.as_ref()
    }
    fn set_mariadb(&mut self, m: Option<MariadbConfig>) {
        self.mariadb = m;
    }
    fn set_files(&mut self, f: Vec<FilesConfig>) {
        self.files = f;
    }
    fn memory(&self) -> u64 {
        self.limits.memory()
    }
}

/// `[cluster]`: the daemons of `nodes` run the same schedules; each slot is taken by one node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The management nodes' names; when empty (or absent), the `host_list` of ZStack's HA
    /// configuration ([`ClusterConfig::ha_config`]).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// ZStack's HA configuration, read for `nodes` when they are not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_config: Option<PathBuf>,
    /// This node's name (default: the host name); snapshots are recorded under it.
    #[serde(default)]
    pub node: Option<String>,
    /// How long a claim holds without renewal: a dead taker's slot is taken by another node
    /// after this.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
}

fn default_lease() -> u64 {
    60
}

/// Where ZStack's HA installation (`zstack-ctl install_ha`) keeps its configuration.
pub const ZSTACK_HA_CONFIG: &str = "/var/lib/zstack/ha/ha.yaml";

/// The management nodes of ZStack's HA configuration: its top-level `host_list` key, the nodes'
/// addresses separated by commas (`host_list: 10.0.0.11,10.0.0.12`, possibly quoted). The file
/// is a flat YAML mapping written by `zstack-ctl`; only this key is read.
pub fn ha_nodes(text: &str) -> Option<Vec<String>> {
    let value = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == "host_list").then_some(v)
    })?;
    let value = value.split(" #").next().unwrap_or("").trim();
    let value = value.trim_matches(|c| c == '\'' || c == '"');
    let nodes: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

impl ClusterConfig {
    /// Fill `nodes` from ZStack's HA configuration when they are not given.
    fn discover_nodes(&mut self, origin: &str) -> Result<()> {
        if !self.nodes.is_empty() {
            return Ok(());
        }
        let path = self
            .ha_config
            .clone()
            .unwrap_or_else(|| PathBuf::from(ZSTACK_HA_CONFIG));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            MnError::Usage(format!(
                "the configuration {origin}: [cluster] nodes is not set and ZStack's HA \
                 configuration {} cannot be read ({e}); set [cluster] nodes = [\"mn1\", \"mn2\"]",
                path.display()
            ))
        })?;
        self.nodes = ha_nodes(&text).ok_or_else(|| {
            MnError::Usage(format!(
                "the configuration {origin}: [cluster] nodes is not set and ZStack's HA \
                 configuration {} has no host_list; set [cluster] nodes = [\"mn1\", \"mn2\"]",
                path.display()
            ))
        })?;
        Ok(())
    }

    /// This node's name.
    pub fn node_name(&self) -> String {
        self.node
            .clone()
            .unwrap_or_else(crate::repo::lock::hostname)
    }
}

impl Config {
    /// The name snapshots are recorded under: `[cluster] node`, else the host name.
    pub fn host_name(&self) -> String {
        self.cluster
            .as_ref()
            .map(|c| c.node_name())
            .unwrap_or_else(crate::repo::lock::hostname)
    }
}

/// `[restore]`
///
/// `service_check` is run with `sh -c` by the restore's preflight (also by `--plan`, so it must
/// only read). The management service counts as **running** when the command exits
/// 0 and a line of its output contains `running` (any case) but not `not running`; ZStack's
/// `zstack-ctl status` prints `MN status: Running [PID:…]` then. A running service refuses the
/// restore unless `--force`. Exit 127 (command not found: ZStack is not installed yet) counts as
/// not running. An empty string disables the check.
///
/// `post_hooks` are run in order with `sh -c` after a restore whose every check passed (e.g.
/// `["zstack-ctl start"]`); their exit codes and output are in the report.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestoreConfig {
    pub service_check: String,
    pub post_hooks: Vec<String>,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            service_check: "zstack-ctl status".into(),
            post_hooks: Vec::new(),
        }
    }
}

/// `[repository]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepositoryConfig {
    /// The repository directory on the pool (overridden by `-r` / `MNBACKUP_REPO`).
    pub path: Option<PathBuf>,
    /// Local cache of rsync signatures on this node (the pool is the fallback).
    pub cache_dir: Option<PathBuf>,
    /// A lock whose heartbeat is older than this is stale.
    pub lock_stale_minutes: u64,
    /// How long to wait for a conflicting lock before giving up.
    pub lock_wait_seconds: u64,
    /// The host name recorded in this node's snapshots: their series (`latest`, the delta
    /// parent, `forget`, `list --host`). Default: the system host name. Set it when a node is
    /// replaced by one with another name that continues the same series.
    pub host: Option<String>,
    /// `[repository.s3]`: endpoint and credentials of an object-store repository
    /// (`s3://`, `oss://`, `cos://`, `obs://`, `webdav://`, `sftp://`), also used by `copy`.
    pub s3: ObjectStoreConfig,
    /// A file holding the passphrase of an encrypted repository (first line; 0600, root's).
    /// `MNBACKUP_PASSWORD_FILE` overrides it.
    pub password_file: Option<PathBuf>,
    /// A command printing the passphrase (run with `sh -c`; its output, trimmed, is the
    /// passphrase), e.g. a secret store's client.
    pub password_command: Option<String>,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            path: None,
            cache_dir: None,
            lock_stale_minutes: 30,
            lock_wait_seconds: 0,
            host: None,
            s3: ObjectStoreConfig::default(),
            password_file: None,
            password_command: None,
        }
    }
}

/// `[compression]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// zstd level, 1 (fast) to 19 (small).
    pub level: i32,
    /// zstd worker threads for large pieces; 0 = one per core.
    pub threads: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            level: 3,
            threads: 0,
        }
    }
}

/// `[delta]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeltaConfig {
    pub enabled: bool,
    /// A full copy at least every N snapshots of a piece (the delta chain length limit).
    pub max_chain: u32,
    /// Store a full copy when the delta exceeds this percentage of the piece.
    pub max_delta_percent: u32,
}

impl Default for DeltaConfig {
    fn default() -> Self {
        DeltaConfig {
            enabled: true,
            max_chain: 8,
            max_delta_percent: 50,
        }
    }
}

/// `[retention]`: which snapshots `forget` (and the daemon after each snapshot) keeps, as in
/// restic's `forget`. All unset keeps everything.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Run `prune` after `forget` when the daemon applies retention.
    #[serde(default = "yes")]
    pub prune: bool,
}

fn yes() -> bool {
    true
}

/// `[[schedule]]`: one job of the daemon.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// Crontab syntax (5 fields), 6 fields with seconds, or `@daily`-style names.
    pub cron: String,
    /// `snapshot` or `verify`.
    #[serde(default = "default_job")]
    pub job: String,
    /// Extra arguments (e.g. `["--read-data", "--subset", "10%"]` for verify).
    #[serde(default)]
    pub args: Vec<String>,
    /// Run a slot missed while the node was down once at start.
    #[serde(default = "yes")]
    pub catch_up: bool,
    /// Retries for transient failures (pool not mounted yet, MariaDB restarting).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_job() -> String {
    "snapshot".into()
}
fn default_retries() -> u32 {
    3
}

/// `[daemon]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// `local` (the system's zone) or an IANA name such as `Asia/Shanghai`.
    pub timezone: String,
    /// Local state directory: one `<job>.json` state file per scheduled job, the daemon's
    /// single-instance lock, crontab backups and the restore journal.
    pub state_dir: PathBuf,
    /// Write Prometheus metrics here (textfile collector), when set.
    pub prometheus_textfile: Option<PathBuf>,
    /// A shell command run when a job fails (mail, pager); gets MNBACKUP_JOB and MNBACKUP_ERROR.
    pub on_failure: Option<String>,
    /// A shell command run when a job succeeds (a heartbeat such as a dead man's switch URL);
    /// gets the same MNBACKUP_* variables as `on_failure`.
    pub on_success: Option<String>,
    /// Seconds an in-flight job may take to finish after SIGTERM.
    pub grace_seconds: u64,
    /// `status` is healthy while the last success is younger than this (default: the
    /// schedule's longest interval plus a quarter of it, 1 min to 1 h: one missed slot).
    pub max_age_hours: Option<f64>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            timezone: "local".into(),
            state_dir: PathBuf::from("/var/lib/mnbackup"),
            prometheus_textfile: None,
            on_failure: None,
            on_success: None,
            grace_seconds: 300,
            max_age_hours: None,
        }
    }
}

impl Config {
    /// Parse a config text. `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        // The error names the line and column but never echoes the line: it may hold a password.
        let mut cfg: Config = toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|sp| {
                    let before = &text[..sp.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                    format!(" at line {line}, column {col}")
                })
                .unwrap_or_default();
            anyhow::Error::from(MnError::Usage(format!(
                "the configuration {origin} is not valid{at}: {}",
                e.message().trim_end()
            )))
        })?;
        if let Some(c) = cfg.cluster.as_mut() {
            c.discover_nodes(origin)?;
        }
        cfg.check_ranges(origin)?;
        Ok(cfg)
    }

    /// Refuse values outside what the program can use (a huge wait would overflow a deadline).
    fn check_ranges(&self, origin: &str) -> Result<()> {
        let r = &self.repository;
        let bad = |key: &str, v: u64, max: u64| -> Result<()> {
            Err(MnError::Usage(format!(
                "the configuration {origin}: [repository] {key} = {v} is out of range (0 to \
                 {max}); choose a smaller value"
            ))
            .into())
        };
        if r.lock_wait_seconds > MAX_LOCK_WAIT_SECONDS {
            bad(
                "lock_wait_seconds",
                r.lock_wait_seconds,
                MAX_LOCK_WAIT_SECONDS,
            )?;
        }
        if r.lock_stale_minutes > 7 * 24 * 60 {
            bad("lock_stale_minutes", r.lock_stale_minutes, 7 * 24 * 60)?;
        }
        if let Some(h) = &r.host {
            check_host(h)
                .map_err(|e| MnError::Usage(format!("the configuration {origin}: {e}")))?;
        }
        if let Some(c) = &self.cluster {
            let me = c.node_name();
            if c.lease_seconds == 0 || c.lease_seconds > 24 * 3600 {
                bad_cluster(origin, "lease_seconds must be 1 to 86400")?;
            }
            if !c.nodes.contains(&me) {
                bad_cluster(
                    origin,
                    &format!(
                        "this node ({me:?}) is not in nodes {:?}; set [cluster] node or add it",
                        c.nodes
                    ),
                )?;
            }
        }
        self.limits
            .memory_bytes()
            .map_err(|e| MnError::Usage(format!("the configuration {origin}: {e}")))?;
        if let Some(p) = &self.prometheus {
            p.validate()
                .map_err(|e| MnError::Usage(format!("the configuration {origin}: {e}")))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &self.copy {
            c.validate()
                .map_err(|e| MnError::Usage(format!("the configuration {origin}: {e}")))?;
            if !names.insert(c.name.as_str()) {
                return Err(MnError::Usage(format!(
                    "the configuration {origin}: two [[copy]] targets are named {:?}; give \
                     each its own name",
                    c.name
                ))
                .into());
            }
        }
        if let Some(list) = self.mariadb.as_ref().and_then(|m| m.databases.as_ref()) {
            let mut seen = std::collections::BTreeSet::new();
            for db in list {
                if !seen.insert(db.as_str()) {
                    return Err(MnError::Usage(format!(
                        "the configuration {origin}: [mariadb] databases names {db:?} more than \
                         once; list each database once"
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Load the config from `path`, refusing a world-readable file that holds a secret.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            MnError::Usage(format!(
                "cannot read the configuration {}: {e}",
                path.display()
            ))
        })?;
        let cfg = Config::parse(&text, &path.display().to_string())?;
        if cfg.has_inline_secret() {
            let mode = std::fs::metadata(path)
                .with_context(|| format!("checking permissions of {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(MnError::Usage(format!(
                    "the configuration {} holds a password and is accessible to group or others (mode \
                     {:o}); run `chmod 600 {}` (or move the password to an environment variable \
                     or a MariaDB option file)",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ))
                .into());
            }
        }
        Ok(cfg)
    }

    /// Whether a secret is written in the file itself.
    pub fn has_inline_secret(&self) -> bool {
        self.mariadb.as_ref().is_some_and(|m| m.has_inline_secret())
    }

    /// The `[[copy]]` target called `name`.
    pub fn copy_target(&self, name: &str) -> Option<&CopyTargetConfig> {
        self.copy.iter().find(|c| c.name == name)
    }

    /// The codec policy from `[compression]` and `[delta]`.
    pub fn codec_policy(&self) -> CodecPolicy {
        let threads = if self.compression.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        } else {
            self.compression.threads
        };
        CodecPolicy {
            level: self.compression.level,
            threads,
            delta: self.delta.enabled,
            max_chain: self.delta.max_chain.max(1),
            max_delta_percent: self.delta.max_delta_percent,
        }
    }

    /// The effective config as TOML with every secret replaced by `********`.
    pub fn masked_toml(&self) -> Result<String> {
        let mut v = toml::Value::try_from(self).context("rendering the configuration")?;
        mask_secrets(&mut v);
        toml::to_string_pretty(&v).context("rendering the configuration")
    }
}

fn bad_cluster(origin: &str, msg: &str) -> Result<()> {
    Err(MnError::Usage(format!("the configuration {origin}: [cluster] {msg}")).into())
}

fn mask_secrets(v: &mut toml::Value) {
    match v {
        toml::Value::Table(t) => {
            for (k, val) in t.iter_mut() {
                let secret = k == "password" || k.ends_with("_password") || k == "secret";
                if secret && val.is_str() {
                    *val = toml::Value::String("********".into());
                } else {
                    mask_secrets(val);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

/// Check a series host name (`[repository] host`, `--host`): 1 to 253 characters, no control
/// characters, no `/`, not blank.
pub fn check_host(h: &str) -> std::result::Result<(), String> {
    let bad = h.trim().is_empty() || h.len() > 253 || h.chars().any(|c| c.is_control() || c == '/');
    if bad {
        return Err(format!(
            "host `{}` is not a usable host name (1 to 253 characters, no `/` or control \
             characters)",
            h.escape_debug()
        ));
    }
    Ok(())
}
