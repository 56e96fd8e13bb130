//! Take a snapshot of the components now.
//!
//! Order: lock the repository (shared: snapshots of several hosts may run at once; only prune
//! excludes them), pick the parent (the latest snapshot of this host's series that loads), run
//! the components in the registry's order (MariaDB first, at its consistent point; then
//! Cassandra; then files), commit the manifest. Each component succeeds or fails on its own: a
//! failed one is left out and recorded as a gap (the run exits 10, incomplete). A cancellation
//! or an error of the repository itself aborts: no snapshot is committed, and the objects this
//! run added stay for `prune` (another writer may already reference them).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use super::progress::Progress;
use super::Env;
use crate::config::Config;
use crate::engines::{BackupCtx, Component, Registry};
use crate::error::MnError;
use crate::model::ItemSink;
use crate::model::{Gap, Manifest};
use crate::repo::codec::SigCache;
use crate::repo::writer::SnapshotWriter;
use crate::repo::Repo;

/// Options of one snapshot run.
#[derive(Default)]
pub struct SnapshotRequest<'a> {
    pub tags: Vec<String>,
    /// Extra paths (`--files`) for the files component.
    pub files: Vec<PathBuf>,
    /// Run only these components (`None`: every enabled one).
    pub only: Option<BTreeSet<String>>,
    pub trigger: String,
    pub cancel: Option<&'a AtomicBool>,
    /// Read every file (`--force-read`): no reuse of unchanged files.
    pub force_read: bool,
    /// Extra source infos recorded in the manifest (e.g. `cluster`: who took the shared data).
    pub source_infos: Vec<(String, serde_json::Value)>,
    /// Checked after the components ran, right before the manifest is committed: an error
    /// abandons the snapshot (cluster mode: the slot's claim is no longer this node's).
    pub before_commit: Option<&'a (dyn Fn() -> Result<()> + Sync)>,
}

/// The local signature cache directory for a repository.
pub fn sig_cache(config: &Config, repo: &Repo) -> SigCache {
    let base = config.repository.cache_dir.clone().or_else(|| {
        if nix::unistd::geteuid().is_root() {
            Some("/var/cache/mnbackup".into())
        } else {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|p| p.join("mnbackup"))
        }
    });
    SigCache {
        dir: base.map(|b| b.join(&repo.config.id).join("signatures")),
    }
}

/// The delta parent: the newest snapshot of `host` whose manifest loads, of the same
/// components when there is one (a damaged one is skipped with a warning). Never another
/// host's snapshot.
pub fn latest_good(
    repo: &Repo,
    host: &str,
    components: &BTreeSet<String>,
) -> Result<Option<Manifest>> {
    let mut same_host = None;
    for id in repo.snapshot_ids()?.iter().rev() {
        match repo.load_manifest(id) {
            // A binlog batch is not a snapshot (see `ops::binlog`).
            Ok(m) if m.trigger == "binlog" => continue,
            Ok(m) if m.same_series(host, components) => return Ok(Some(m)),
            Ok(m) if m.host() == host && same_host.is_none() => same_host = Some(m),
            Ok(_) => {}
            Err(e) => tracing::warn!("skipping snapshot {id} as delta parent: {e:#}"),
        }
    }
    Ok(same_host)
}

/// The components this request takes (selected and enabled): with the host, its series.
fn components(config: &Config, registry: &Registry, req: &SnapshotRequest) -> BTreeSet<String> {
    let ctx = BackupCtx {
        config,
        snapshot_id: "",
        extra_files: &req.files,
        cancel: None,
        force_read: req.force_read,
    };
    registry
        .iter()
        .filter(|c| selected(req, c.as_ref()) && c.enabled(&ctx))
        .map(|c| c.name().to_string())
        .collect()
}

/// Whether the request would back up nothing (no component enabled).
pub fn nothing_to_back_up(config: &Config, registry: &Registry, req: &SnapshotRequest) -> bool {
    components(config, registry, req).is_empty()
}

fn selected(req: &SnapshotRequest, c: &dyn Component) -> bool {
    req.only.as_ref().is_none_or(|o| o.contains(c.name()))
}

/// Forwards the writer's progress to the use case's.
struct WriterProgress(Arc<dyn Progress>);

impl crate::repo::writer::Progress for WriterProgress {
    fn item(&self, n: &str) {
        self.0.note(n)
    }
    fn bytes(&self, n: u64) {
        self.0.advance(n)
    }
}

/// Take a snapshot; returns the committed manifest.
pub fn take(env: &Env, req: &SnapshotRequest, progress: Arc<dyn Progress>) -> Result<Manifest> {
    let mut repo = env.repo.clone();
    if let Some(h) = &env.config.repository.host {
        repo.host = h.clone();
    }
    let repo = &repo;
    // Shared: other hosts' (or this host's other) snapshots may write at the same time. Leftovers
    // of interrupted runs are left to prune, which alone knows no writer runs.
    let lock = repo.lock_writer("snapshot", env.lock_wait)?;
    let series = components(env.config, env.registry, req);
    let parent = latest_good(repo, &repo.host, &series)?;
    // The total and ETA are estimated from the parent: a node's data changes little between
    // two snapshots.
    progress.phase(
        "snapshot",
        parent
            .as_ref()
            .map(|p| p.items.iter().map(|i| i.size).sum::<u64>())
            .filter(|n| *n > 0),
    );
    let writer = SnapshotWriter::new(
        repo.clone(),
        env.config.codec_policy(),
        sig_cache(env.config, repo),
        parent,
        Some(Box::new(WriterProgress(progress))),
    )?;
    writer.bind_lock(&lock)?;
    let writer = Arc::new(writer);
    let result = run_components(env, req, &writer).and_then(|()| {
        for (name, info) in &req.source_infos {
            ItemSink::set_source_info(writer.as_ref(), name, info.clone());
        }
        req.before_commit.map_or(Ok(()), |check| check())
    });
    let writer = Arc::try_unwrap(writer)
        .map_err(|_| anyhow::anyhow!("internal error: a source kept the snapshot writer"))?;
    match result {
        Ok(()) => writer.commit(
            // In cluster mode the series is the node's name; otherwise `[repository] host` /
            // `--host` / the system's (set on the repository when it was opened).
            match &env.config.cluster {
                Some(_) => env.config.host_name(),
                None => repo.host.clone(),
            },
            req.trigger.clone(),
            req.tags.clone(),
        ),
        Err(e) => {
            let id = writer.id.clone();
            let n = writer.abort().unwrap_or(0);
            tracing::info!(
                "snapshot {id} abandoned; the {n} objects it had written stay until `mnbackup \
                 prune` (another writer may use them)"
            );
            Err(e.context(
                "the snapshot failed; nothing was committed and earlier snapshots are unchanged",
            ))
        }
    }
}

/// True for an error of the repository itself (out of space, lock lost, no repository): such an
/// error aborts the whole snapshot, whatever component was running.
fn is_pool_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<MnError>(),
            Some(MnError::NoSpace(_) | MnError::Locked(_) | MnError::NoRepo(_))
        ) || c
            .downcast_ref::<std::io::Error>()
            .is_some_and(crate::error::is_no_space)
    })
}

/// Run the components, each on its own: one that fails (its server down, a command failing, a
/// damaged input) is left out of the snapshot and recorded as a gap (kind `source`), and the
/// others are committed. A cancellation or an error of the repository itself (out of space,
/// lock lost, storing failed) aborts the whole snapshot.
fn run_components(env: &Env, req: &SnapshotRequest, writer: &Arc<SnapshotWriter>) -> Result<()> {
    let cancelled = || req.cancel.is_some_and(|c| c.load(Ordering::SeqCst));
    let ctx = BackupCtx {
        config: env.config,
        snapshot_id: &writer.id,
        extra_files: &req.files,
        cancel: req.cancel,
        force_read: req.force_read,
    };
    let all: Vec<_> = env.registry.iter().collect();
    for (i, c) in all.iter().enumerate() {
        if !selected(req, c.as_ref()) {
            continue;
        }
        if c.enabled(&ctx) {
            writer.component(c.name());
            let sink: Arc<dyn ItemSink> = writer.clone();
            let r = c.backup(&ctx, sink).map(|line| {
                if !line.is_empty() {
                    tracing::info!("{line}");
                }
            });
            if let Err(e) = r {
                if cancelled() || writer.pool_failed() || is_pool_error(&e) {
                    return Err(e);
                }
                isolate(c.as_ref(), writer, e);
            }
        }
        if i + 1 < all.len() && cancelled() {
            anyhow::bail!("cancelled by a shutdown request (SIGTERM) between two sources");
        }
    }
    Ok(())
}

/// Leave a failed component out of the snapshot and record the gap.
fn isolate(c: &dyn Component, writer: &SnapshotWriter, e: anyhow::Error) {
    let source = c.name();
    let dropped = writer.forget_source(source, &c.prefix());
    tracing::error!(
        "{source}: {e:#}; the {source} part is left out of this snapshot ({dropped} items it had \
         stored are dropped), the other sources go on"
    );
    ItemSink::gap(
        writer,
        Gap::new(source, "source", format!("{e:#}")).fix(c.failure_fix()),
    );
}

#[cfg(test)]
mod tests {
    use super::is_pool_error;
    use crate::error::MnError;

    #[test]
    fn only_errors_of_the_repository_abort_the_whole_snapshot() {
        let enospc = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("storing cassandra/ks/t/md-1-big-Data.db");
        assert!(is_pool_error(&enospc));
        assert!(is_pool_error(&anyhow::Error::new(MnError::Locked(
            "lock lost".into()
        ))));
        assert!(is_pool_error(
            &anyhow::Error::new(MnError::NoSpace("pool full".into())).context("writing")
        ));
        // A component's own failures (its server, a damaged SSTable) become gaps instead.
        assert!(!is_pool_error(&anyhow::anyhow!("Connection refused")));
        assert!(!is_pool_error(&anyhow::Error::new(MnError::Integrity(
            "SSTable is corrupt".into()
        ))));
        let read = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EIO));
        assert!(!is_pool_error(&read));
    }
}
