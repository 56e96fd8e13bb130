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
}

/// `[cluster]`: the daemons of `nodes` run the same schedules; each slot is taken by one node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The management nodes' names.
    pub nodes: Vec<String>,
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

impl ClusterConfig {
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
        let cfg: Config = toml::from_str(text).map_err(|e: toml::de::Error| {
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
        if let Some(p) = &self.prometheus {
            p.validate()
                .map_err(|e| MnError::Usage(format!("the configuration {origin}: {e}")))?;
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
