//! `copy`: copy snapshots from one repository to another (an NFS pool to an object store, the
//! common case), sending only the objects the destination lacks.
//!
//! Objects are copied as stored bytes (content-addressed: the same id on both sides), each one
//! checked against its id before it is sent, so damage in the source is never propagated. A
//! snapshot's manifest is written last, with a conditional put, once every object it references
//! is in the destination: an interrupted copy leaves no half snapshot, and running it again
//! sends only what is still missing (the destination's listing says what it has; a listing that
//! lags only costs a conditional put that answers "exists").
//!
//! A retention policy (`keep`) selects what `forget` with it would keep, per host: the decision
//! is [`crate::ops::forget::decide`]'s, so incomplete snapshots count as `forget` counts them
//! (like any other) and the binlog batches a kept snapshot needs come along. The destination is
//! never thinned: snapshots the policy no longer keeps stay there until a `forget` on it.
//!
//! Both repositories must have one format. Two v1 repositories (or two v2 repositories with one
//! master key) exchange objects as stored bytes. Between v2 repositories with different keys
//! (every two unencrypted v2 repositories, and encrypted ones not sharing a master key) each
//! object is read and opened with the source's key, checked, then sealed and named anew with
//! the destination's key; the manifest is rewritten with the destination's object ids and sealed
//! with the destination's key. Nothing plain is ever written to an encrypted destination.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mnbackup_scheduler::KeepPolicy;
use serde::Serialize;

use crate::model::{check_snapshot_id, MAX_MANIFEST};
use crate::ops::progress::Progress;
use crate::repo::{Repo, SNAPSHOTS};
use crate::store::throttle::Throttled;
use crate::store::StoreError;

/// Which snapshots to copy and how fast.
#[derive(Debug, Clone, Default)]
pub struct CopyRequest {
    /// Snapshot ids, unique prefixes or `latest`; empty: all.
    pub snapshots: Vec<String>,
    /// Only snapshots of this host.
    pub host: Option<String>,
    /// Upload limit in bytes per second.
    pub limit_upload: Option<u64>,
    /// Only the snapshots this retention policy keeps in each series (host), as `forget` with
    /// it would: the same decision ([`crate::ops::forget::decide`]), intersected with
    /// `snapshots` and `host`.
    pub keep: Option<KeepPolicy>,
    /// The time zone of the policy's calendar (`[daemon] timezone`, as `forget`).
    pub timezone: String,
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots written to the destination by this run.
    pub copied: Vec<String>,
    /// Selected snapshots the destination already had.
    pub already_there: Vec<String>,
    /// Snapshots left out because the retention policy (`keep`) would not keep them.
    pub not_kept: Vec<String>,
    pub objects_sent: u64,
    pub bytes_sent: u64,
    /// Objects the selected snapshots need that the destination already had.
    pub objects_present: u64,
    /// Wall time of sending the objects, in seconds.
    pub send_seconds: f64,
}

fn manifest_key(id: &str) -> Result<String> {
    check_snapshot_id(id)?;
    Ok(format!("{SNAPSHOTS}/{id}.json"))
}

/// The snapshot ids `req` selects in `src`, oldest first, and those its policy left out.
fn select(src: &Repo, req: &CopyRequest) -> Result<(Vec<String>, Vec<String>)> {
    let ids: BTreeSet<String> = if req.snapshots.is_empty() {
        src.snapshot_ids()?.into_iter().collect()
    } else {
        req.snapshots
            .iter()
            .map(|s| src.resolve(s))
            .collect::<Result<_>>()?
    };
    let mut out = Vec::new();
    for id in ids {
        if let Some(h) = &req.host {
            let m = src.load_manifest(&id)?;
            if &m.hostname != h {
                continue;
            }
        }
        out.push(id);
    }
    let Some(policy) = &req.keep else {
        return Ok((out, Vec::new()));
    };
    if policy.is_empty() {
        return Err(crate::error::usage(
            "the retention policy of the copy keeps nothing (every --keep-*/keep_* is 0); give \
             a count above 0, or no policy to copy every snapshot",
        ));
    }
    // The decision of `forget --dry-run` with this policy (per host), never a second one.
    let (_, remove) = crate::ops::forget::decide(
        src,
        &crate::ops::forget::ForgetPlan {
            snapshots: &[],
            policy: *policy,
            timezone: &req.timezone,
            dry_run: true,
            host: req.host.as_deref(),
            group_by: crate::model::GroupBy::default(),
        },
    )?;
    let remove: HashSet<String> = remove.into_iter().collect();
    Ok(out.into_iter().partition(|id| !remove.contains(id)))
}

/// Copy the selected snapshots from `src` to `dst` (the caller holds their locks).
pub fn copy(
    src: &Repo,
    dst: &Repo,
    req: &CopyRequest,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    if src.config.version != dst.config.version {
        bail!(
            "{} has format version {} and {} version {}: copy needs repositories of one format",
            src.location(),
            src.config.version,
            dst.location(),
            dst.config.version
        );
    }
    // The upload limit holds back what is really sent to the destination (packs included).
    let dst = &match req.limit_upload {
        Some(rate) => dst.with_store_wrapped(|s| Arc::new(Throttled::new(s, rate))),
        None => dst.clone(),
    };
    let mut report = CopyReport::default();
    let mut todo = Vec::new();
    let (selected, not_kept) = select(src, req)?;
    report.not_kept = not_kept;
    for id in selected {
        if dst.has_manifest(&id) {
            report.already_there.push(id);
        } else {
            todo.push(src.load_manifest(&id)?);
        }
    }
    if !src.same_object_ids(dst) {
        return copy_resealed(src, dst, todo, report, progress);
    }
    let needed = Repo::referenced_objects(&todo);
    let have: HashSet<String> = dst.all_objects()?.into_iter().map(|(id, _)| id).collect();
    let sizes: HashMap<String, u64> = src.all_objects()?.into_iter().collect();
    let mut missing: Vec<&String> = needed.iter().filter(|id| !have.contains(*id)).collect();
    missing.sort();
    report.objects_present = (needed.len() - missing.len()) as u64;
    let total = missing
        .iter()
        .map(|id| sizes.get(*id).copied().unwrap_or(0))
        .sum();
    progress.phase(
        &format!("copy: sending {} objects", missing.len()),
        Some(total),
    );
    let sending = Instant::now();
    for id in missing {
        let n = copy_object(src, dst, id)?;
        if n > 0 {
            report.objects_sent += 1;
            report.bytes_sent += n;
        }
        progress.advance(sizes.get(id).copied().unwrap_or(n));
    }
    // The packed objects are stored before any manifest that needs them.
    dst.flush_packs()?;
    report.send_seconds = sending.elapsed().as_secs_f64();
    for m in &todo {
        let key = manifest_key(&m.id)?;
        let bytes = src
            .store()
            .get(&key, MAX_MANIFEST)
            .map_err(StoreError::into_anyhow)
            .with_context(|| format!("reading manifest {key} of {}", src.location()))?;
        dst.store()
            .put_if_absent(&key, &bytes)
            .map_err(StoreError::into_anyhow)
            .with_context(|| format!("committing snapshot {} in {}", m.id, dst.location()))?;
        progress.note(&format!("copied snapshot {}", m.id));
        report.copied.push(m.id.clone());
    }
    Ok(report)
}

/// Read an object's stored bytes from `src` and check them against the id (and open them);
/// returns the bytes, type and plain payload.
pub(crate) fn read_checked(
    src: &Repo,
    id: &str,
) -> Result<(Vec<u8>, crate::repo::ObjectType, Vec<u8>)> {
    let bytes = src.read_object_bytes(id, None).map_err(|e| {
        if crate::error::exit_code(&e) == crate::error::EXIT_INTEGRITY {
            crate::error::integrity(format!(
                "object {id} in {} is damaged or missing ({e:#}); nothing of it was copied. \
                 Run `mnbackup verify` on the source",
                src.location()
            ))
        } else {
            e.context(format!("reading object {id} from {}", src.location()))
        }
    })?;
    let damaged = |e: String| {
        crate::error::integrity(format!(
            "object {id} in {} is damaged ({e}); nothing of it was copied. Run `mnbackup \
             verify` on the source",
            src.location()
        ))
    };
    match src.decode_object(id, &bytes) {
        Ok((Some(ty), payload)) => Ok((bytes, ty, payload)),
        Ok((None, _)) => Err(damaged("unknown object type".into())),
        Err(e) if crate::error::exit_code(&e) == crate::error::EXIT_INTEGRITY => {
            Err(damaged(format!("{e:#}")))
        }
        Err(e) => Err(e),
    }
}

/// Copy between repositories whose object ids differ: every object is opened, sealed and named
/// anew for `dst`; the manifests are rewritten with the new ids.
fn copy_resealed(
    src: &Repo,
    dst: &Repo,
    mut todo: Vec<crate::model::Manifest>,
    mut report: CopyReport,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let needed: BTreeSet<String> = Repo::referenced_objects(&todo).into_iter().collect();
    let sizes: HashMap<String, u64> = src.all_objects()?.into_iter().collect();
    progress.phase(
        &format!("copy: sending {} objects (sealed anew)", needed.len()),
        Some(
            needed
                .iter()
                .map(|id| sizes.get(id).copied().unwrap_or(0))
                .sum(),
        ),
    );
    let have: HashSet<String> = dst.all_objects()?.into_iter().map(|(id, _)| id).collect();
    let mut map: HashMap<String, (String, u64)> = HashMap::new();
    let sending = Instant::now();
    for id in &needed {
        let (_, ty, payload) = read_checked(src, id)?;
        let nid = dst.object_id(ty, &payload)?;
        let size = dst.object_stored_size(payload.len());
        let sent = if have.contains(&nid) {
            false
        } else {
            let (_, bytes) = dst.encode_object(ty, &payload)?;
            dst.put_absent_object_bytes(&nid, ty, &bytes)
                .with_context(|| format!("writing object {nid} to {}", dst.location()))?
        };
        if sent {
            report.objects_sent += 1;
            report.bytes_sent += size;
        } else {
            report.objects_present += 1;
        }
        progress.advance(sizes.get(id).copied().unwrap_or(0));
        map.insert(id.clone(), (nid, size));
    }
    dst.flush_packs()
        .with_context(|| format!("writing a pack to {}", dst.location()))?;
    report.send_seconds = sending.elapsed().as_secs_f64();
    for m in &mut todo {
        remap(m, &map)?;
        let bytes = dst.encode_manifest_file(m)?;
        dst.store()
            .put_if_absent(&manifest_key(&m.id)?, &bytes)
            .map_err(StoreError::into_anyhow)
            .with_context(|| format!("committing snapshot {} in {}", m.id, dst.location()))?;
        progress.note(&format!("copied snapshot {}", m.id));
        report.copied.push(m.id.clone());
    }
    Ok(report)
}

/// Rewrite a manifest's object references (pieces, delta bases, signatures) through `map`.
pub(crate) fn remap(
    m: &mut crate::model::Manifest,
    map: &HashMap<String, (String, u64)>,
) -> Result<()> {
    fn piece(p: &mut crate::model::PieceData, map: &HashMap<String, (String, u64)>) -> Result<()> {
        let (object, stored, base) = match &mut p.data {
            crate::model::Encoding::Full { object, stored } => (object, stored, None),
            crate::model::Encoding::Delta {
                object,
                stored,
                base,
                ..
            } => (object, stored, Some(base)),
        };
        let (n, s) = map
            .get(object.as_str())
            .context("an object was not copied")?;
        *object = n.clone();
        *stored = *s;
        if let Some(b) = base {
            piece(b, map)?;
        }
        Ok(())
    }
    for item in &mut m.items {
        for p in &mut item.pieces {
            piece(&mut p.piece, map)?;
            if let Some(sig) = &mut p.sig {
                let (n, s) = map
                    .get(sig.as_str())
                    .context("a signature was not copied")?;
                *sig = n.clone();
                if p.sig_size.is_some() {
                    p.sig_size = Some(*s);
                }
            }
        }
    }
    Ok(())
}

/// Copy one object's stored bytes after checking them against the id; returns the bytes sent
/// (0 when the destination had it after all).
fn copy_object(src: &Repo, dst: &Repo, id: &str) -> Result<u64> {
    let (bytes, ty, _) = read_checked(src, id)?;
    let sent = dst
        .put_object_bytes(id, ty, &bytes)
        .with_context(|| format!("writing object {id} to {}", dst.location()))?;
    Ok(if sent { bytes.len() as u64 } else { 0 })
}
