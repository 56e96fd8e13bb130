//! `mnbackup snapshot`: take a snapshot of the configured sources now (see
//! [`crate::ops::snapshot`]); this module maps the options and prints the result.

use std::sync::Arc;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::SnapshotArgs;
use crate::model::Manifest;
use crate::ops::snapshot as ops;
use crate::ui::{bytes, SnapshotProgress};

pub use crate::ops::snapshot::latest_good;

/// Options of one snapshot run (the CLI's and the daemon's).
pub struct SnapshotRequest<'a> {
    pub tags: Vec<String>,
    pub files: Vec<std::path::PathBuf>,
    pub only_files: bool,
    /// `--force-read`: read every file.
    pub force_read: bool,
    pub trigger: String,
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// Only the node-local component (files, with the configured paths): cluster mode's
    /// snapshot of a node that did not take the shared data.
    pub node_local: bool,
    /// Extra source infos for the manifest (see [`ops::SnapshotRequest::source_infos`]).
    pub source_infos: Vec<(String, serde_json::Value)>,
    /// See [`ops::SnapshotRequest::before_commit`].
    pub before_commit: Option<&'a (dyn Fn() -> Result<()> + Sync)>,
}

/// The use case's request and configuration for these options (`--only-files`: the files
/// component alone, with only the `--files` paths).
fn request<'a>(
    ctx: &Ctx,
    req: &SnapshotRequest<'a>,
) -> (crate::config::Config, ops::SnapshotRequest<'a>) {
    let mut config = ctx.config.clone();
    let mut only = None;
    if req.only_files {
        config.files = vec![];
    }
    if req.only_files || req.node_local {
        only = Some([crate::engines::files::component::NAME.to_string()].into());
    }
    let r = ops::SnapshotRequest {
        tags: req.tags.clone(),
        files: req.files.clone(),
        only,
        trigger: req.trigger.clone(),
        cancel: req.cancel,
        force_read: req.force_read,
        source_infos: req.source_infos.clone(),
        before_commit: req.before_commit,
    };
    (config, r)
}

/// Take a snapshot; returns the committed manifest.
pub fn take(ctx: &Ctx, req: &SnapshotRequest) -> Result<Manifest> {
    if req.only_files && req.files.is_empty() {
        return Err(crate::error::usage(
            "--only-files without --files would commit an empty snapshot; give the paths with \
             --files PATH...",
        ));
    }
    let (config, r) = request(ctx, req);
    let registry = crate::engines::default_registry();
    let env = crate::ops::Env {
        config: &config,
        repo: ctx.open_repo()?,
        lock_wait: ctx.lock_wait(),
        registry: &registry,
    };
    let progress = Arc::new(SnapshotProgress::new(ctx.quiet || ctx.json));
    let result = ops::take(&env, &r, progress.clone());
    progress.finish();
    result
}

pub fn run(ctx: &Ctx, args: &SnapshotArgs) -> Result<i32> {
    let registry = crate::engines::default_registry();
    let req = SnapshotRequest {
        tags: args.tags.clone(),
        files: args.files.clone(),
        only_files: args.only_files,
        force_read: args.force_read,
        trigger: args.trigger.clone(),
        cancel: None,
        node_local: false,
        source_infos: Vec::new(),
        before_commit: None,
    };
    let (config, r) = request(ctx, &req);
    if !args.only_files && ops::nothing_to_back_up(&config, &registry, &r) {
        return Err(crate::error::usage(
            "nothing to back up: the configuration has no [mariadb], [cassandra] or [[files]] \
             source and no --files was given (see the README's example configuration)",
        ));
    }
    let m = take(ctx, &req)?;
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
