//! Backup: the admin API's TSDB snapshot (or, without it, the complete blocks) into items
//! `prometheus/<ulid>/<file>`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::api::{AdminApi, SnapshotError};
use super::{
    is_ulid, BlockFile, BlockInfo, BlockMeta, CopyMethod, PrometheusConfig, PrometheusSourceInfo,
    SOURCE,
};
use crate::model::{EntryKind, Gap};
use crate::model::{ItemSink, ItemSpec};

/// What a backup did, for the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusSummary {
    pub method: CopyMethod,
    /// Blocks stored (unchanged ones included).
    pub blocks: usize,
    /// Of those, blocks the previous snapshot already held (stored at no cost).
    pub blocks_unchanged: usize,
    /// Blocks left out by `max_age_days`.
    pub blocks_too_old: usize,
    pub files: u64,
    pub bytes: u64,
    /// Things that went wrong without costing data (the snapshot directory could not be
    /// removed).
    pub warnings: Vec<String>,
}

/// The snapshot directory, removed when dropped (an error, a panic) unless [`Self::remove`]
/// already did.
struct SnapshotDir {
    path: PathBuf,
    done: bool,
}

impl SnapshotDir {
    /// The directory is not ours to remove (it is not where the snapshot is).
    fn done_without_removing(mut self) {
        self.done = true;
    }

    fn remove(mut self) -> std::io::Result<()> {
        self.done = true;
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

impl Drop for SnapshotDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Back up the Prometheus TSDB of `cfg` into `sink` (see the module documentation).
pub fn backup(cfg: &PrometheusConfig, sink: &dyn ItemSink) -> Result<PrometheusSummary> {
    cfg.validate()?;
    let api = AdminApi::new(&cfg.url, Duration::from_secs(cfg.timeout_seconds));
    let version = api.version();
    match api.snapshot() {
        Ok(name) => {
            let path = cfg.data_dir.join("snapshots").join(&name);
            tracing::info!("Prometheus snapshot {} taken", path.display());
            let guard = SnapshotDir {
                path: path.clone(),
                done: false,
            };
            if !path.is_dir() {
                guard.done_without_removing();
                anyhow::bail!(
                    "Prometheus took snapshot {name}, but {} is not a directory: [prometheus] \
                     data_dir must be the server's --storage.tsdb.path (remove the snapshot \
                     under that path's snapshots/ by hand)",
                    path.display()
                );
            }
            let copied = copy_blocks(cfg, &path, CopyMethod::Snapshot, version, sink);
            let removed = guard.remove();
            let mut summary = copied?;
            if let Err(e) = removed {
                let w = format!(
                    "could not remove the Prometheus snapshot directory {}: {e}; remove it by \
                     hand, it holds disk space",
                    path.display()
                );
                tracing::warn!("{w}");
                summary.warnings.push(w);
            }
            Ok(summary)
        }
        Err(SnapshotError::Unavailable { url, reason }) => {
            tracing::warn!(
                "the Prometheus admin API is not available ({reason}): copying only the \
                 complete blocks of {}, without the head (the newest samples)",
                cfg.data_dir.display()
            );
            sink.gap(
                Gap::new(
                    SOURCE,
                    "head",
                    format!(
                        "no TSDB snapshot ({reason}): only the complete blocks were copied, the \
                         open head and its WAL (the newest samples, up to a few hours) are missing"
                    ),
                )
                .subject(url)
                .fix("start Prometheus with --web.enable-admin-api"),
            );
            copy_blocks(cfg, &cfg.data_dir, CopyMethod::Blocks, version, sink)
        }
        Err(e @ SnapshotError::Failed { .. }) => Err(e.into()),
    }
}

/// A complete block directory: its name is a ULID and it holds `meta.json`. Sorted by ULID.
fn list_blocks(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_ulid(&name) && e.file_type()?.is_dir() && e.path().join("meta.json").is_file() {
            out.push((name, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The files of a block directory, relative '/'-separated names, sorted.
fn block_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(dir)?;
        let rel = rel
            .to_str()
            .with_context(|| format!("{} is not UTF-8", e.path().display()))?;
        out.push((rel.to_string(), e.path().to_path_buf()));
    }
    Ok(out)
}

fn item_name(ulid: &str, file: &str) -> String {
    format!("{SOURCE}/{ulid}/{file}")
}

fn copy_blocks(
    cfg: &PrometheusConfig,
    dir: &Path,
    method: CopyMethod,
    version: Option<String>,
    sink: &dyn ItemSink,
) -> Result<PrometheusSummary> {
    let previous: BTreeMap<String, BlockInfo> = sink
        .parent_source_info(SOURCE)
        .and_then(|v| serde_json::from_value::<PrometheusSourceInfo>(v).ok())
        .map(|p| p.blocks.into_iter().map(|b| (b.ulid.clone(), b)).collect())
        .unwrap_or_default();
    let cutoff = cfg
        .max_age_days
        .map(|d| chrono::Utc::now().timestamp_millis() - (d * 86_400_000.0) as i64);
    let mut info = PrometheusSourceInfo {
        url: cfg.url.clone(),
        data_dir: cfg.data_dir.display().to_string(),
        method,
        version,
        max_age_days: cfg.max_age_days,
        skipped_old: Vec::new(),
        blocks: Vec::new(),
    };
    let mut summary = PrometheusSummary {
        method,
        blocks: 0,
        blocks_unchanged: 0,
        blocks_too_old: 0,
        files: 0,
        bytes: 0,
        warnings: Vec::new(),
    };
    for (ulid, path) in list_blocks(dir)? {
        let meta = match read_meta(&path) {
            Ok(m) => m,
            // The fallback reads a live directory: compaction may delete a block under it.
            Err(e) if method == CopyMethod::Blocks && !path.exists() => {
                sink.gap(vanished(&ulid, &e));
                continue;
            }
            Err(e) => return Err(e),
        };
        if cutoff.is_some_and(|c| meta.max_time < c) {
            info.skipped_old.push(ulid);
            summary.blocks_too_old += 1;
            continue;
        }
        match copy_block(&ulid, &path, previous.get(&ulid), sink) {
            Ok((files, unchanged)) => {
                summary.blocks += 1;
                summary.blocks_unchanged += usize::from(unchanged);
                summary.files += files.len() as u64;
                let block = BlockInfo {
                    ulid,
                    min_time: meta.min_time,
                    max_time: meta.max_time,
                    num_samples: meta.stats.num_samples,
                    num_series: meta.stats.num_series,
                    unchanged,
                    files,
                };
                summary.bytes += block.bytes();
                info.blocks.push(block);
            }
            Err((stored, e)) if method == CopyMethod::Blocks && !path.exists() => {
                for name in stored {
                    sink.retract(&name);
                }
                sink.gap(vanished(&ulid, &e));
            }
            Err((_, e)) => return Err(e),
        }
    }
    sink.set_source_info(SOURCE, serde_json::to_value(&info)?);
    Ok(summary)
}

fn vanished(ulid: &str, e: &anyhow::Error) -> Gap {
    Gap::new(
        SOURCE,
        "block",
        format!(
            "the block was deleted (compacted or expired) while it was copied: {e:#}; its \
             samples are in a newer block only if compaction made one before the copy listed \
             the blocks"
        ),
    )
    .subject(ulid)
    .fix("enable the admin API (--web.enable-admin-api) for consistent snapshots")
}

fn read_meta(block: &Path) -> Result<BlockMeta> {
    let p = block.join("meta.json");
    let text = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Store one block's files; returns them and whether all were unchanged since the parent.
/// On error, also the items stored so far (to retract).
fn copy_block(
    ulid: &str,
    dir: &Path,
    previous: Option<&BlockInfo>,
    sink: &dyn ItemSink,
) -> std::result::Result<(Vec<BlockFile>, bool), (Vec<String>, anyhow::Error)> {
    let mut stored = Vec::new();
    let files = block_files(dir).map_err(|e| (Vec::new(), e))?;
    let mut out = Vec::new();
    let mut all_unchanged = true;
    for (rel, path) in files {
        let name = item_name(ulid, &rel);
        let r = (|| -> Result<u64> {
            let spec = ItemSpec {
                name: name.clone(),
                kind: EntryKind::File,
                meta: None,
                target: None,
                delta: false,
            };
            let mut file =
                File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let size = file
                .metadata()
                .with_context(|| format!("reading the metadata of {}", path.display()))?
                .len();
            let known =
                previous.is_some_and(|b| b.files.iter().any(|f| f.name == rel && f.size == size));
            if known && sink.put_unchanged(spec.clone(), size)? {
                return Ok(size);
            }
            all_unchanged = false;
            sink.put_reader(spec, &mut file)?;
            Ok(size)
        })();
        match r {
            Ok(size) => {
                stored.push(name);
                out.push(BlockFile { name: rel, size });
            }
            Err(e) => return Err((stored, e)),
        }
    }
    Ok((out, all_unchanged))
}
