//! Prometheus: the metrics a ZStack node keeps in a Prometheus TSDB
//! (`/var/lib/zstack/prometheus/data`).
//!
//! * Backup ([`backup`]): `POST /api/v1/admin/tsdb/snapshot` (Prometheus must run with
//!   `--web.enable-admin-api`) makes a consistent, hard-linked copy of every block, the open
//!   head included, under `<data_dir>/snapshots/<name>/`; each block directory's files become
//!   items `prometheus/<block ulid>/<file>` and the snapshot directory is deleted afterwards,
//!   whatever happened. Blocks are immutable: a block the parent snapshot already holds is
//!   recorded with `put_unchanged` and costs nothing. Without the admin API only the complete
//!   block directories of the data directory are copied (never `wal/`, `chunks_head/` or
//!   `*.tmp*`) and the head is recorded as a [`Gap`](crate::model::Gap).
//! * Restore ([`plan`], [`restore`]): the blocks go into an empty data directory (a non-empty
//!   one only with `force`), each through `<ulid>.tmp-for-creation` (which Prometheus removes
//!   at start if a restore was interrupted), file by file as temp + rename, owned by the
//!   Prometheus user.

mod api;
mod backup;
pub mod component;
mod restore;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use api::{AdminApi, SnapshotError};
pub use backup::{backup, PrometheusSummary};
pub use restore::{
    lookup_user, plan, restore, OpenFn, PlannedBlock, PrometheusPlan, PrometheusRestoreReport,
    RestoreFile,
};

/// The source name: item prefix `prometheus/`, manifest `sources.prometheus`, gaps' source.
pub const SOURCE: &str = "prometheus";

/// `[prometheus]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL of the Prometheus HTTP API (admin API for the snapshot).
    #[serde(default = "default_url")]
    pub url: String,
    /// Prometheus' `--storage.tsdb.path`: where the snapshot appears (`snapshots/<name>`) and
    /// what the fallback copies blocks from.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Blocks whose newest sample is older than this many days are not backed up (None: all).
    #[serde(default)]
    pub max_age_days: Option<f64>,
    /// Timeout of one HTTP request (the snapshot request flushes the head: it can take a while
    /// on a large TSDB).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The user restored files are given to (when mnbackup runs as root and the user exists).
    #[serde(default = "default_owner")]
    pub owner: String,
}

fn default_url() -> String {
    "http://127.0.0.1:9090".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/zstack/prometheus/data")
}
fn default_timeout() -> u64 {
    300
}
fn default_owner() -> String {
    "prometheus".into()
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: default_url(),
            data_dir: default_data_dir(),
            max_age_days: None,
            timeout_seconds: default_timeout(),
            owner: default_owner(),
        }
    }
}

impl PrometheusConfig {
    /// Check values a run would otherwise trip over late.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            anyhow::bail!(
                "[prometheus] url = {:?}: must start with http:// or https://",
                self.url
            );
        }
        if !self.data_dir.is_absolute() {
            anyhow::bail!(
                "[prometheus] data_dir = {:?}: must be an absolute path",
                self.data_dir
            );
        }
        if let Some(d) = self.max_age_days {
            if !(d.is_finite() && d > 0.0) {
                anyhow::bail!("[prometheus] max_age_days = {d}: must be a positive number");
            }
        }
        if self.timeout_seconds == 0 {
            anyhow::bail!("[prometheus] timeout_seconds must be at least 1");
        }
        Ok(())
    }
}

/// How the blocks were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMethod {
    /// Through the admin API's TSDB snapshot: consistent, head included.
    Snapshot,
    /// Without the admin API: the complete block directories only, no head (a gap).
    Blocks,
}

/// One stored file of a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockFile {
    /// Path inside the block directory: `meta.json`, `index`, `chunks/000001`, `tombstones`.
    pub name: String,
    pub size: u64,
}

/// One stored block, as its `meta.json` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub ulid: String,
    /// First sample time, milliseconds since the epoch (inclusive).
    pub min_time: i64,
    /// End of the block's range, milliseconds since the epoch (exclusive).
    pub max_time: i64,
    pub num_samples: u64,
    pub num_series: u64,
    /// Whether the previous snapshot already held this block (stored at no cost).
    #[serde(default)]
    pub unchanged: bool,
    pub files: Vec<BlockFile>,
}

impl BlockInfo {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// `sources.prometheus` in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrometheusSourceInfo {
    pub url: String,
    pub data_dir: String,
    pub method: CopyMethod,
    /// The server's version (`/api/v1/status/buildinfo`), when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<f64>,
    /// Blocks left out because they are older than `max_age_days`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_old: Vec<String>,
    /// Stored blocks, by ulid (which sorts by creation time).
    pub blocks: Vec<BlockInfo>,
}

/// A block's `meta.json`, the fields read here (Prometheus' own names).
#[derive(Debug, Clone, Deserialize)]
pub struct BlockMeta {
    pub ulid: String,
    #[serde(rename = "minTime")]
    pub min_time: i64,
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    #[serde(default)]
    pub stats: BlockStats,
    #[serde(default)]
    pub version: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct BlockStats {
    #[serde(default, rename = "numSamples")]
    pub num_samples: u64,
    #[serde(default, rename = "numSeries")]
    pub num_series: u64,
    #[serde(default, rename = "numChunks")]
    pub num_chunks: u64,
}

/// Whether `name` is a block ULID: 26 characters of Crockford base32.
pub fn is_ulid(name: &str) -> bool {
    name.len() == 26
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

/// A time in milliseconds since the epoch, as an operator reads it (UTC).
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids() {
        assert!(is_ulid("01BKGV7JBM69T2G1BGBGM6KB12"));
        assert!(!is_ulid("01BKGV7JBM69T2G1BGBGM6KB12.tmp-for-creation"));
        assert!(!is_ulid("wal"));
        assert!(!is_ulid("chunks_head"));
        assert!(!is_ulid("01bkgv7jbm69t2g1bgbgm6kb12"));
        assert!(!is_ulid("01BKGV7JBM69T2G1BGBGM6KB1U"));
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: PrometheusConfig = toml::from_str("").unwrap();
        assert_eq!(c, PrometheusConfig::default());
        c.validate().unwrap();
        let c: PrometheusConfig =
            toml::from_str("url = \"localhost:9090\"\nmax_age_days = 30").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("http://"));
        let c: PrometheusConfig = toml::from_str("max_age_days = -1").unwrap();
        assert!(c.validate().is_err());
        assert!(toml::from_str::<PrometheusConfig>("max_age = 3").is_err());
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00 UTC");
    }
}
