//! `mnbackup snapshot`: take a snapshot of the configured sources now.
//!
//! Order: lock the repository (exclusive), clean leftovers of interrupted runs, pick the parent
//! (the latest snapshot that loads), run the sources (MariaDB first, at its consistent point;
//! then Cassandra; then files), commit the manifest. Each source succeeds or fails on its own:
//! a failed source is left out and recorded as a gap (the run exits 10, incomplete). A
//! cancellation or an error of the repository itself aborts: the objects this run added are
//! removed and no snapshot is committed.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;

use super::Ctx;
use crate::cli::SnapshotArgs;
use crate::codec::SigCache;
use crate::model::Manifest;
use crate::repo::Repo;
use crate::sources;
use crate::ui::{bytes, SnapshotProgress};
use crate::writer::SnapshotWriter;

/// The local signature cache directory for a repository.
pub fn sig_cache(ctx: &Ctx, repo: &Repo) -> SigCache {
    let base = ctx.config.repository.cache_dir.clone().or_else(|| {
        if nix::unistd::geteuid().is_root() {
            Some("/var/cache/mnbackup".into())
        } else {
            std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache"))
                })
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

/// Options of one snapshot run (the CLI's and the daemon's).
pub struct SnapshotRequest<'a> {
    pub tags: Vec<String>,
    pub files: Vec<std::path::PathBuf>,
    pub only_files: bool,
    pub trigger: String,
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Take a snapshot; returns the committed manifest.
pub fn take(ctx: &Ctx, req: &SnapshotRequest) -> Result<Manifest> {
    if req.only_files && req.files.is_empty() {
        return Err(crate::error::usage(
            "--only-files without --files would commit an empty snapshot; give the paths with \
             --files PATH...",
        ));
    }
    let repo = ctx.open_repo()?;
    let _lock = repo.lock(true, "snapshot", ctx.lock_wait())?;
    let (n, b) = repo.clean_leftovers()?;
    if n > 0 {
        tracing::info!(
            "removed {n} leftover files ({}) of an interrupted run",
            bytes(b)
        );
    }
    let parent = latest_good(&repo)?;
    let progress = SnapshotProgress::new(ctx.quiet || ctx.json);
    let progress = Arc::new(progress);
    struct P(Arc<SnapshotProgress>);
    impl crate::writer::Progress for P {
        fn item(&self, n: &str) {
            self.0.item(n)
        }
        fn bytes(&self, n: u64) {
            self.0.bytes(n)
        }
    }
    let writer = SnapshotWriter::new(
        repo.clone(),
        ctx.config.codec_policy(),
        sig_cache(ctx, &repo),
        parent,
        Some(Box::new(P(progress.clone()))),
    )?;
    let writer = Arc::new(writer);
    let result = run_sources(ctx, req, writer.clone());
    progress.finish();
    let writer = Arc::try_unwrap(writer)
        .map_err(|_| anyhow::anyhow!("internal error: a source kept the snapshot writer"))?;
    match result {
        Ok(()) => {
            let m = writer.commit(
                crate::repo::lock::hostname(),
                req.trigger.clone(),
                req.tags.clone(),
            )?;
            Ok(m)
        }
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

/// An [`ItemSink`](crate::source::ItemSink) that refuses every item once `stop` is set, so a
/// source that stores item by item (the MariaDB dump: tables and pieces) stops at the next one.
struct CancellableSink {
    inner: Arc<SnapshotWriter>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CancellableSink {
    fn check(&self) -> Result<()> {
        if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
            anyhow::bail!("cancelled by a shutdown request (SIGTERM) during the MariaDB dump");
        }
        Ok(())
    }
}

impl crate::source::ItemSink for CancellableSink {
    fn put_reader(
        &self,
        spec: crate::source::ItemSpec,
        reader: &mut dyn std::io::Read,
    ) -> Result<()> {
        self.check()?;
        self.inner.put_reader(spec, reader)
    }
    fn put_bytes(&self, spec: crate::source::ItemSpec, data: &[u8]) -> Result<()> {
        self.check()?;
        self.inner.put_bytes(spec, data)
    }
    fn put_entry(&self, spec: crate::source::ItemSpec) -> Result<()> {
        self.check()?;
        self.inner.put_entry(spec)
    }
    fn set_source_info(&self, source: &str, info: serde_json::Value) {
        self.inner.set_source_info(source, info)
    }
    fn gap(&self, gap: crate::model::Gap) {
        self.inner.gap(gap)
    }
    fn retract(&self, name: &str) -> bool {
        self.inner.retract(name)
    }
    fn parent_source_info(&self, source: &str) -> Option<serde_json::Value> {
        self.inner.parent_source_info(source)
    }
    fn put_unchanged(&self, spec: crate::source::ItemSpec, size: u64) -> Result<bool> {
        self.check()?;
        self.inner.put_unchanged(spec, size)
    }
}

/// True for an error of the repository itself (out of space, lock lost, no repository): such an
/// error aborts the whole snapshot, whatever source was running.
fn is_pool_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::error::MnError>(),
            Some(
                crate::error::MnError::NoSpace(_)
                    | crate::error::MnError::Locked(_)
                    | crate::error::MnError::NoRepo(_)
            )
        ) || c
            .downcast_ref::<std::io::Error>()
            .is_some_and(crate::error::is_no_space)
    })
}

/// What an operator does when a whole source failed.
fn source_fix(source: &str) -> &'static str {
    match source {
        "mariadb" => {
            "make MariaDB reachable with the [mariadb] settings (`mnbackup check` says what is \
             wrong), then take a new snapshot"
        }
        "cassandra" => {
            "check Cassandra (`nodetool status`, its system.log) and the [cassandra] settings \
             against the error, then take a new snapshot"
        }
        _ => "fix the error (a path, permissions), then take a new snapshot",
    }
}

/// Run the sources, each on its own: a source that fails (its server down, a command failing,
/// a damaged input) is left out of the snapshot and recorded as a gap (kind `source`), and the
/// others are committed. A cancellation or an error of the repository itself (out of space,
/// lock lost, storing failed) aborts the whole snapshot.
fn run_sources(ctx: &Ctx, req: &SnapshotRequest, writer: Arc<SnapshotWriter>) -> Result<()> {
    let cfg = &ctx.config;
    let cancelled = || {
        req.cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    };
    let isolate = |source: &str, prefix: &str, r: Result<()>| -> Result<()> {
        let Err(e) = r else {
            return Ok(());
        };
        if cancelled() || writer.pool_failed() || is_pool_error(&e) {
            return Err(e);
        }
        let dropped = writer.forget_source(source, prefix);
        tracing::error!(
            "{source}: {e:#}; the {source} part is left out of this snapshot ({dropped} items \
             it had stored are dropped), the other sources go on"
        );
        crate::source::ItemSink::gap(
            writer.as_ref(),
            crate::model::Gap::new(source, "source", format!("{e:#}")).fix(source_fix(source)),
        );
        Ok(())
    };
    if !req.only_files {
        if let Some(m) = &cfg.mariadb {
            let r = (|| -> Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                // Cancellable between tables and pieces: once `req.cancel` is set, the sink
                // refuses the next item, and the dump stops with that error.
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let sink: Arc<dyn crate::source::ItemSink> = Arc::new(CancellableSink {
                    inner: writer.clone(),
                    stop: stop.clone(),
                });
                let summary = rt.block_on(async {
                    let watch = async {
                        while !cancelled() {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        std::future::pending::<()>().await
                    };
                    tokio::select! {
                        r = crate::engines::mariadb::backup(m, sink) => r,
                        () = watch => unreachable!("the watch never ends"),
                    }
                })?;
                tracing::info!(
                    "mariadb: {} databases, {} tables, {} rows in {} items ({}); commits were \
                     blocked {} ms; {:.1}s",
                    summary.databases,
                    summary.tables,
                    summary.rows,
                    summary.items,
                    bytes(summary.bytes),
                    summary.block_ms,
                    summary.duration_ms as f64 / 1000.0
                );
                Ok(())
            })();
            isolate("mariadb", "mariadb/", r)?;
        }
        if cancelled() {
            anyhow::bail!("cancelled by a shutdown request (SIGTERM) between two sources");
        }
        if let Some(c) = &cfg.cassandra {
            // A shutdown request kills a running nodetool/cqlsh (its whole process group).
            let stop = crate::engines::cassandra::cancel_commands_flag();
            stop.store(false, std::sync::atomic::Ordering::SeqCst);
            let done = std::sync::atomic::AtomicBool::new(false);
            let r = std::thread::scope(|sc| {
                if let Some(flag) = req.cancel {
                    let done = &done;
                    sc.spawn(move || {
                        while !done.load(std::sync::atomic::Ordering::SeqCst) {
                            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    });
                }
                let r = crate::engines::cassandra::backup(c, &writer.id, writer.as_ref());
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                r
            });
            let r = r.map(|summary| {
                tracing::info!(
                    "cassandra: {} keyspaces, {} tables, {} SSTables ({} files, {}; {} files \
                     unchanged, {} read); {} digests checked; snapshot {} {}",
                    summary.keyspaces.len(),
                    summary.tables,
                    summary.sstables,
                    summary.files,
                    bytes(summary.bytes),
                    summary.files_unchanged,
                    bytes(summary.bytes_read),
                    summary.digests_checked,
                    summary.tag,
                    if summary.snapshot_cleared {
                        "cleared"
                    } else {
                        "NOT cleared (run `nodetool clearsnapshot`)"
                    }
                );
            });
            isolate("cassandra", "cassandra/", r)?;
        }
        if cancelled() {
            anyhow::bail!("cancelled by a shutdown request (SIGTERM) between two sources");
        }
    }
    let file_cfgs: &[crate::engines::files::FilesConfig] =
        if req.only_files { &[] } else { &cfg.files };
    if !file_cfgs.is_empty() || !req.files.is_empty() {
        let r = crate::engines::files::backup(file_cfgs, &req.files, writer.as_ref(), req.cancel)
            .and_then(|sum| {
                crate::source::ItemSink::set_source_info(
                    writer.as_ref(),
                    "files",
                    serde_json::to_value(&sum)?,
                );
                Ok(())
            });
        isolate("files", "files/", r)?;
    }
    Ok(())
}

pub fn run(ctx: &Ctx, args: &SnapshotArgs) -> Result<i32> {
    let nothing = ctx.config.mariadb.is_none()
        && ctx.config.cassandra.is_none()
        && ctx.config.files.is_empty()
        && args.files.is_empty();
    if nothing {
        return Err(crate::error::usage(
            "nothing to back up: the configuration has no [mariadb], [cassandra] or [[files]] \
             source and no --files was given (see the README's example configuration)",
        ));
    }
    let m = take(
        ctx,
        &SnapshotRequest {
            tags: args.tags.clone(),
            files: args.files.clone(),
            only_files: args.only_files,
            trigger: args.trigger.clone(),
            cancel: None,
        },
    )?;
    let s = &m.stats;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"id": m.id, "time": m.time, "stats": s, "parent": m.parent,
                        "complete": m.complete, "gaps": m.gaps})
            )?
        );
    } else {
        ctx.say(format!(
            "snapshot {} saved: {} items, {} logical, {} added to the pool ({} of it signatures), \
             {} unchanged / {} delta / {} full pieces, {:.1}s",
            m.id,
            s.items,
            bytes(s.logical_bytes),
            bytes(s.bytes_added),
            bytes(s.signature_bytes_added),
            s.pieces_unchanged,
            s.pieces_delta,
            s.pieces_full,
            s.duration_ms as f64 / 1000.0
        ));
    }
    if !m.complete {
        report_gaps(&m);
        return Ok(crate::error::EXIT_INCOMPLETE);
    }
    Ok(0)
}

/// Tell the operator, on stderr, what an incomplete snapshot lacks and how to close each gap.
pub fn report_gaps(m: &Manifest) {
    eprintln!(
        "snapshot {} was committed but is INCOMPLETE ({} gap{}); a restore from it will lack:",
        m.id,
        m.gaps.len(),
        if m.gaps.len() == 1 { "" } else { "s" }
    );
    for g in &m.gaps {
        eprintln!("  - {}", g.describe());
    }
    eprintln!(
        "fix each gap as it says (`mnbackup check` lists what the credentials lack), then take a \
         new snapshot; until then this node has no complete backup"
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
        // A source's own failures (its server, a damaged SSTable) become gaps instead.
        assert!(!is_pool_error(&anyhow::anyhow!("Connection refused")));
        assert!(!is_pool_error(&anyhow::Error::new(MnError::Integrity(
            "SSTable is corrupt".into()
        ))));
        let read = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EIO));
        assert!(!is_pool_error(&read));
    }
}
