//! One attempt of a job, run on a blocking thread.

#[allow(unused_imports)]
use super::*;

/// Runs one attempt of a job on the current (blocking) thread.
pub(super) fn run_blocking(
    ctx: &Ctx,
    name: &str,
    slot: chrono::DateTime<Utc>,
    work: &Work,
    cancel: &AtomicBool,
    metrics: &MetricsCache,
) -> Result<String, JobError> {
    match work {
        Work::Binlog { once: false } => {
            metrics.refresh(ctx);
            super::follower::health(ctx, metrics)
        }
        Work::Binlog { once: true } => binlog_once(ctx),
        Work::Snapshot { tags } => scheduled_snapshot(ctx, name, slot, tags, cancel),
        Work::Copy { target } => copy(ctx, name, target),
        Work::Verify { read_data, subset } => verify_job(ctx, *read_data, *subset, metrics),
    }
}

/// `[binlog]` with `once`: one shipping pass.
fn binlog_once(ctx: &Ctx) -> Result<String, JobError> {
    let registry = crate::engines::default_registry();
    let env = ctx.ops_env(&registry).map_err(job_error)?;
    let o = crate::ops::binlog::ship(&env, None).map_err(job_error)?;
    if let Some(g) = o.gap {
        return Err(JobError::permanent(format!(
            "{g}; the gap is recorded, the next snapshot starts a new chain"
        )));
    }
    Ok(match (o.manifest, o.segments.last()) {
        (Some(id), Some(l)) => format!(
            "binlog {id}: {} segments to {}:{}",
            o.segments.len(),
            l.server_file,
            l.end_pos
        ),
        _ => "binlog: nothing new".to_string(),
    })
}

/// A scheduled snapshot: the cluster slot claimed (or this node's files when another node took
/// it), the snapshot taken and committed, then the retention policy applied.
fn scheduled_snapshot(
    ctx: &Ctx,
    name: &str,
    slot: chrono::DateTime<Utc>,
    tags: &[String],
    cancel: &AtomicBool,
) -> Result<String, JobError> {
    use crate::commands::cluster as cl;
    let mut tags = tags.to_vec();
    let held = match cl::claim_slot(ctx, name, slot, cancel)? {
        cl::Slot::Solo => None,
        cl::Slot::Other(c) => {
            let by = (c.node.as_str(), c.snapshot.as_deref());
            return node_files(ctx, name, slot, &tags, by, cancel);
        }
        cl::Slot::Mine(h) => {
            tags.push(cl::slot_tag(name, slot));
            Some(h)
        }
    };
    // Fencing: a slot another node took over meanwhile is not committed by this one.
    let check = || held.as_ref().map_or(Ok(()), |h| h.check_current());
    let taken = snapshot::take(
        ctx,
        &snapshot::SnapshotRequest {
            tags: tags.clone(),
            files: Vec::new(),
            only_files: false,
            force_read: false,
            trigger: format!("schedule:{name}"),
            cancel: Some(cancel),
            node_local: false,
            source_infos: held
                .iter()
                .map(|h| ("cluster".to_string(), h.info()))
                .collect(),
            before_commit: Some(&check),
        },
    );
    let m = match (taken, held) {
        (Ok(m), Some(h)) => {
            if let Err(e) = h.finish(name, &m.id) {
                warn!(job = %name, "snapshot {} saved, but the cluster claim was not marked done: {e:#}", m.id);
            }
            Ok(m)
        }
        (Err(e), Some(h)) => match cl::fenced_by(&e) {
            Some(by) => {
                warn!(job = %name, "{e:#}; taking only this node's files for the slot");
                h.fail();
                let tags: Vec<String> = tags
                    .into_iter()
                    .filter(|t| !t.starts_with("slot:"))
                    .collect();
                return node_files(ctx, name, slot, &tags, (&by, None), cancel);
            }
            None => {
                h.fail();
                Err(e)
            }
        },
        (r, None) => r,
    }
    .map_err(|e| {
        if cancel.load(Ordering::SeqCst) {
            JobError::permanent(format!(
                "cancelled by daemon shutdown: {e:#}; nothing was committed, the run is \
                 caught up at the next start"
            ))
        } else {
            job_error(e)
        }
    })?;
    let s = &m.stats;
    let summary = format!(
        "snapshot {}: {} items, {} logical, {} added, {:.1}s",
        m.id,
        s.items,
        bytes(s.logical_bytes),
        bytes(s.bytes_added),
        s.duration_ms as f64 / 1000.0
    );
    info!(job = %name, "snapshot {} committed", m.id);
    let summary = retention_after(ctx, name, &m, summary)?;
    complete_or_fail(&m, summary)
}

/// The retention policy after a committed snapshot, its outcome appended to `summary`. A locked
/// repository skips it (the next snapshot applies it); another failure fails the job.
fn retention_after(
    ctx: &Ctx,
    name: &str,
    m: &crate::model::Manifest,
    mut summary: String,
) -> Result<String, JobError> {
    match apply_retention(ctx) {
        Ok(Some(r)) => {
            summary.push_str("; ");
            summary.push_str(&r);
        }
        Ok(None) => {}
        Err(e)
            if e.chain()
                .any(|c| matches!(c.downcast_ref::<MnError>(), Some(MnError::Locked(_)))) =>
        {
            warn!(
                job = %name,
                "snapshot {} was saved, but the retention policy was not applied because \
                 the repository is locked by another process ({e:#}); it is applied after \
                 the next snapshot, or run `mnbackup forget --prune` by hand",
                m.id
            );
            summary.push_str("; retention skipped (repository locked)");
        }
        Err(e) => {
            return Err(JobError::permanent(format!(
                "snapshot {} was saved, but applying the retention policy failed: {e:#}. \
                 Old snapshots are not being removed; fix the cause, then run `mnbackup \
                 forget --prune`",
                m.id
            )))
        }
    }
    Ok(summary)
}

/// `[[copy]]`: the snapshots not yet in the target copied to it.
fn copy(ctx: &Ctx, name: &str, target: &str) -> Result<String, JobError> {
    let args = crate::cli::CopyArgs {
        snapshots: Vec::new(),
        to: target.to_owned(),
        host: None,
        limit_upload: None,
        keep: crate::cli::KeepArgs::default(),
    };
    let (dst, report) =
        crate::commands::copy::copy_to(ctx, &args, &crate::ops::progress::NoProgress)
            .map_err(|e| job_error(e.context(format!("copy to [[copy]] {target:?}"))))?;
    info!(job = %name, "copy to {target}: {} snapshot(s) copied", report.copied.len());
    Ok(crate::commands::copy::summary(&dst, &report))
}

/// A scheduled verify; problems fail the job with what was found.
fn verify_job(
    ctx: &Ctx,
    read_data: bool,
    subset: verify::Subset,
    metrics: &MetricsCache,
) -> Result<String, JobError> {
    let repo = ctx.open_repo().map_err(job_error)?;
    let _lock = repo
        .lock(false, "verify", ctx.lock_wait())
        .map_err(job_error)?;
    let r = verify::verify(
        &repo,
        read_data,
        subset,
        ctx.config.delta.max_chain,
        &crate::ops::progress::NoProgress,
    )
    .map_err(|e| job_error(e.context("verify could not run")))?;
    metrics.set_verify(Utc::now(), r.ok);
    let what = format!(
        "{} snapshots, {} objects checked{}",
        r.snapshots,
        r.objects,
        if read_data {
            format!(
                ", {} objects read ({})",
                r.objects_read,
                bytes(r.bytes_read)
            )
        } else {
            String::new()
        }
    );
    if r.ok {
        return Ok(format!("verify ok: {what}"));
    }
    let mut problems = Vec::new();
    if !r.damaged_manifests.is_empty() {
        problems.push(format!("{} damaged manifest(s)", r.damaged_manifests.len()));
    }
    if !r.damaged.is_empty() {
        problems.push(format!("{} damaged object(s)", r.damaged.len()));
    }
    if !r.missing.is_empty() {
        problems.push(format!("{} missing object(s)", r.missing.len()));
    }
    if !r.policy.is_empty() {
        problems.push(format!("{} delta chain(s) over policy", r.policy.len()));
    }
    Err(JobError::permanent(format!(
        "verify found problems (exit code {}): {} ({what}); run `mnbackup verify \
         --read-data` for the affected snapshots and items, take a new snapshot, then \
         forget the affected snapshots and prune",
        r.exit_code,
        problems.join(", ")
    )))
}

/// A committed snapshot with gaps is not a success: the job fails, `status` reports it and
/// `on_failure` runs (retrying would not help).
fn complete_or_fail(m: &crate::model::Manifest, summary: String) -> Result<String, JobError> {
    if m.complete {
        return Ok(summary);
    }
    let gaps: Vec<String> = m.gaps.iter().map(|g| g.describe()).collect();
    Err(JobError::permanent(format!(
        "{summary}; but the snapshot is INCOMPLETE ({} gaps): {}",
        gaps.len(),
        gaps.join("; ")
    )))
}

/// Cluster mode, a slot another node took (`by`: its node and snapshot): this node still takes
/// its node-local files (`zstack.properties`, keys, HA configuration) into its own series, tagged
/// `node-files:<job>@<slot>`, with the `cluster` source info naming the node that took the
/// shared data. Not a gap: the shared components are in that node's snapshot.
fn node_files(
    ctx: &Ctx,
    name: &str,
    slot: chrono::DateTime<Utc>,
    tags: &[String],
    by: (&str, Option<&str>),
    cancel: &AtomicBool,
) -> Result<String, JobError> {
    let taken_by = format!(
        "slot taken by node {} (snapshot {})",
        by.0,
        by.1.unwrap_or("not yet recorded")
    );
    if ctx.config.files.is_empty() {
        return Ok(format!("{taken_by}; no node-local [[files]] configured"));
    }
    let node = ctx.config.host_name();
    let mut tags = tags.to_vec();
    tags.push(crate::commands::cluster::node_files_tag(name, slot));
    let info = crate::commands::cluster::node_local_info(&node, name, slot, by.0, by.1);
    let m = snapshot::take(
        ctx,
        &snapshot::SnapshotRequest {
            tags,
            files: Vec::new(),
            only_files: false,
            force_read: false,
            trigger: format!("schedule:{name}"),
            cancel: Some(cancel),
            node_local: true,
            source_infos: vec![("cluster".to_string(), info)],
            before_commit: None,
        },
    )
    .map_err(job_error)?;
    info!(job = %name, "node-local snapshot {} committed", m.id);
    let mut summary = format!(
        "{taken_by}; this node's files: snapshot {} ({} items, {} added)",
        m.id,
        m.stats.items,
        bytes(m.stats.bytes_added)
    );
    match apply_retention(ctx) {
        Ok(Some(r)) => {
            summary.push_str("; ");
            summary.push_str(&r);
        }
        Ok(None) => {}
        Err(e) => {
            warn!(job = %name, "the retention policy was not applied after snapshot {}: {e:#}", m.id);
            summary.push_str("; retention not applied (see the log)");
        }
    }
    complete_or_fail(&m, summary)
}
