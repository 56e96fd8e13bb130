//! Take a snapshot of the components now.
//!
//! Order: lock the repository (exclusive), clean leftovers of interrupted runs, pick the parent
//! (the latest snapshot that loads), run the components in the registry's order (MariaDB first,
//! at its consistent point; then Cassandra; then files), commit the manifest. Each component
//! succeeds or fails on its own: a failed one is left out and recorded as a gap (the run exits
//! 10, incomplete). A cancellation or an error of the repository itself aborts: the objects
//! this run added are removed and no snapshot is committed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use super::progress::Progress;
use super::Env;
use crate::codec::SigCache;
use crate::config::Config;
use crate::engines::{BackupCtx, Component, Registry};
use crate::error::MnError;
use crate::model::{Gap, Manifest};
use crate::repo::Repo;
use crate::source::ItemSink;
use crate::writer::SnapshotWriter;

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

/// The newest snapshot whose manifest loads (a damaged newest one is skipped with a warning).
pub fn latest_good(repo: &Repo) -> Result<Option<Manifest>> {
    for id in repo.snapshot_ids()?.iter().rev() {
        match repo.load_manifest(id) {
            Ok(m) => return Ok(Some(m)),
            Err(e) => tracing::warn!("skipping snapshot {id} as delta parent: {e:#}"),
        }
    }
    Ok(None)
}

/// Whether the request would back up nothing (no component enabled).
pub fn nothing_to_back_up(config: &Config, registry: &Registry, req: &SnapshotRequest) -> bool {
    let ctx = BackupCtx {
        config,
        snapshot_id: "",
        extra_files: &req.files,
        cancel: None,
    };
    !registry
        .iter()
        .any(|c| selected(req, c.as_ref()) && c.enabled(&ctx))
}

fn selected(req: &SnapshotRequest, c: &dyn Component) -> bool {
    req.only.as_ref().is_none_or(|o| o.contains(c.name()))
}

/// Forwards the writer's progress to the use case's.
struct WriterProgress(Arc<dyn Progress>);

impl crate::writer::Progress for WriterProgress {
    fn item(&self, n: &str) {
        self.0.note(n)
    }
    fn bytes(&self, n: u64) {
        self.0.advance(n)
    }
}

/// Take a snapshot; returns the committed manifest.
pub fn take(env: &Env, req: &SnapshotRequest, progress: Arc<dyn Progress>) -> Result<Manifest> {
    let repo = &env.repo;
    let _lock = repo.lock(true, "snapshot", env.lock_wait)?;
    let (n, b) = repo.clean_leftovers()?;
    if n > 0 {
        tracing::info!(
            "removed {n} leftover files ({}) of an interrupted run",
            indicatif::HumanBytes(b)
        );
    }
    let parent = latest_good(repo)?;
    progress.phase("snapshot", None);
    let writer = SnapshotWriter::new(
        repo.clone(),
        env.config.codec_policy(),
        sig_cache(env.config, repo),
        parent,
        Some(Box::new(WriterProgress(progress))),
    )?;
    let writer = Arc::new(writer);
    let result = run_components(env, req, &writer);
    let writer = Arc::try_unwrap(writer)
        .map_err(|_| anyhow::anyhow!("internal error: a source kept the snapshot writer"))?;
    match result {
        Ok(()) => writer.commit(
            env.config.host_name(),
            req.trigger.clone(),
            req.tags.clone(),
        ),
        Err(e) => {
            let id = writer.id.clone();
            match writer.abort() {
                Ok(n) => tracing::info!("snapshot {id} abandoned; removed the {n} objects it had written"),
                Err(e2) => tracing::warn!("snapshot {id} abandoned; cleaning its objects failed: {e2:#} (the next snapshot removes them)"),
            }
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
    };
    let all: Vec<_> = env.registry.iter().collect();
    for (i, c) in all.iter().enumerate() {
        if !selected(req, c.as_ref()) {
            continue;
        }
        if c.enabled(&ctx) {
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
