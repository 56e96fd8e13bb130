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
//! Both repositories must share the object encoding: format v1 objects are not encrypted, so
//! any two v1 repositories can exchange them. (Re-encryption for repositories with different
//! keys is future work of format v2.)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::model::{check_snapshot_id, MAX_MANIFEST};
use crate::ops::progress::Progress;
use crate::repo::{Repo, SNAPSHOTS};
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
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots written to the destination by this run.
    pub copied: Vec<String>,
    /// Selected snapshots the destination already had.
    pub already_there: Vec<String>,
    pub objects_sent: u64,
    pub bytes_sent: u64,
    /// Objects the selected snapshots need that the destination already had.
    pub objects_present: u64,
    /// Wall time of sending the objects, in seconds.
    pub send_seconds: f64,
}

/// A token bucket on a virtual clock: after sending `n` bytes the caller waits until the
/// bucket's clock, advanced by `n / rate`, is reached. The average rate over a copy is the
/// limit, whatever the object sizes (a large object waits proportionally after it is sent).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    clock: Option<Instant>,
}

impl TokenBucket {
    pub fn new(bytes_per_sec: u64) -> TokenBucket {
        TokenBucket {
            rate: bytes_per_sec.max(1) as f64,
            clock: None,
        }
    }

    /// Account for `n` bytes sent since `start`; sleep as long as needed.
    pub fn spend(&mut self, start: Instant, n: u64) {
        // Up to one second of unused budget is kept (time lost to a slow request is caught up
        // on), never more: no burst after an idle period.
        let floor = start.checked_sub(Duration::from_secs(1)).unwrap_or(start);
        let from = self.clock.map_or(start, |c| c.max(floor));
        let until = from + Duration::from_secs_f64(n as f64 / self.rate);
        self.clock = Some(until);
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }
}

fn manifest_key(id: &str) -> Result<String> {
    check_snapshot_id(id)?;
    Ok(format!("{SNAPSHOTS}/{id}.json"))
}

/// The snapshot ids `req` selects in `src`, oldest first.
fn select(src: &Repo, req: &CopyRequest) -> Result<Vec<String>> {
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
    Ok(out)
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
    let mut report = CopyReport::default();
    let mut todo = Vec::new();
    for id in select(src, req)? {
        if dst.has_manifest(&id) {
            report.already_there.push(id);
        } else {
            todo.push(src.load_manifest(&id)?);
        }
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
    let mut bucket = req.limit_upload.map(TokenBucket::new);
    let sending = Instant::now();
    for id in missing {
        let start = Instant::now();
        let n = copy_object(src, dst, id)?;
        if n > 0 {
            report.objects_sent += 1;
            report.bytes_sent += n;
            if let Some(b) = &mut bucket {
                b.spend(start, n);
            }
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

/// Copy one object's stored bytes after checking them against the id (from a file or a pack
/// of the source, into a file or the next pack of the destination); returns the bytes sent (0
/// when the destination had it after all).
fn copy_object(src: &Repo, dst: &Repo, id: &str) -> Result<u64> {
    let bytes = src.read_object_bytes(id, None).map_err(|e| {
        if crate::error::exit_code(&e) == crate::error::EXIT_INTEGRITY {
            crate::error::integrity(format!(
                "object {id} in {} is damaged or missing ({e:#}); nothing of it was copied.                  Run `mnbackup verify` on the source",
                src.location()
            ))
        } else {
            e.context(format!("reading object {id} from {}", src.location()))
        }
    })?;
    let ty =
        crate::repo::objects::check_object(id, &bytes)?.unwrap_or(crate::repo::ObjectType::Full);
    let sent = dst
        .put_object_bytes(id, ty, &bytes)
        .with_context(|| format!("writing object {id} to {}", dst.location()))?;
    Ok(if sent { bytes.len() as u64 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_holds_the_average_rate() {
        let mut b = TokenBucket::new(100_000);
        let t0 = Instant::now();
        for _ in 0..10 {
            let s = Instant::now();
            b.spend(s, 5_000);
        }
        let took = t0.elapsed().as_secs_f64();
        assert!((0.45..0.7).contains(&took), "{took}");
    }
}
