//! The daemon's cluster hook (`[cluster]`): before a scheduled snapshot, take the slot's claim
//! in the repository, or leave the slot to the node that holds it (see `ops::cluster`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mnbackup_scheduler::JobError;
use tracing::info;

use super::Ctx;
use crate::ops::cluster::{
    acquire, record_seen, Acquire, Claim, ClaimHandle, Fenced, NodeSeen, Renewer,
};

/// A claim this node holds while it works, renewed until finished.
pub struct Held {
    handle: ClaimHandle,
    renewer: Renewer,
    node: String,
}

/// What the daemon does with a slot.
pub enum Slot {
    /// Not in cluster mode: run as usual.
    Solo,
    /// This node took the slot: run, then [`Held::finish`] or [`Held::fail`].
    Mine(Held),
    /// Another node took it (and finished it): its claim. This node takes only its node-local
    /// files (see [`node_local_info`]).
    Other(Claim),
}

/// The tag a claimed snapshot carries: `slot:<job>@<time>`.
pub fn slot_tag(job: &str, slot: DateTime<Utc>) -> String {
    format!("slot:{job}@{}", slot.format("%Y-%m-%dT%H:%M:%SZ"))
}

fn transient(e: anyhow::Error) -> JobError {
    JobError::transient(format!("cluster claim: {e:#}"))
}

/// Take `job`'s `slot`, wait while another node's lease runs, or find it done by another node.
pub fn claim_slot(
    ctx: &Ctx,
    job: &str,
    slot: DateTime<Utc>,
    cancel: &AtomicBool,
) -> Result<Slot, JobError> {
    let Some(cc) = &ctx.config.cluster else {
        return Ok(Slot::Solo);
    };
    let repo = ctx.open_repo().map_err(transient)?;
    let store = repo.store().clone();
    let node = cc.node_name();
    let lease = Duration::from_secs(cc.lease_seconds);
    loop {
        match acquire(&store, &node, job, slot, lease).map_err(transient)? {
            Acquire::Won(handle) => {
                info!(job, node = %node, "took slot {slot} (claim generation {})", handle.claim().generation);
                let renewer = handle.keep_renewed();
                return Ok(Slot::Mine(Held {
                    handle,
                    renewer,
                    node,
                }));
            }
            Acquire::Done(c) => {
                let seen = NodeSeen {
                    job: job.to_string(),
                    slot,
                    taken_by: Some(c.node.clone()),
                    snapshot: c.snapshot.clone(),
                };
                record_seen(store.as_ref(), &node, seen).map_err(transient)?;
                return Ok(Slot::Other(c));
            }
            Acquire::Held(c) => {
                // Wait: the holder finishes, or its lease expires and this node takes over.
                let left = (c.lease_until - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                let nap = left.min(lease / 4).max(Duration::from_millis(200));
                let until = std::time::Instant::now() + nap;
                while std::time::Instant::now() < until {
                    if cancel.load(Ordering::SeqCst) {
                        return Err(JobError::permanent(format!(
                            "cancelled by daemon shutdown while node {} held slot {slot}",
                            c.node
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The tag of a node's files-only snapshot of a slot another node took:
/// `node-files:<job>@<time>`.
pub fn node_files_tag(job: &str, slot: DateTime<Utc>) -> String {
    format!("node-files:{job}@{}", slot.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// The `cluster` source info of a files-only snapshot: the shared data of this slot was taken
/// by node `by` (snapshot `shared_snapshot`, unknown when this node was fenced). Not a gap:
/// the shared components are in that node's snapshot.
pub fn node_local_info(
    node: &str,
    job: &str,
    slot: DateTime<Utc>,
    by: &str,
    shared_snapshot: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "node": node,
        "job": job,
        "slot": slot,
        "shared_taken_by": by,
        "shared_snapshot": shared_snapshot,
    })
}

/// The node that took the slot over, when `e` is a fencing error.
pub fn fenced_by(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Fenced>())
        .map(|f| f.by.clone())
}

impl Held {
    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Fencing before the commit (see [`ClaimHandle::check_current`]).
    pub fn check_current(&self) -> anyhow::Result<()> {
        self.handle.check_current()
    }

    /// The `cluster` source info of the snapshot of a slot this node took.
    pub fn info(&self) -> serde_json::Value {
        let c = self.handle.claim();
        serde_json::json!({
            "node": self.node,
            "job": c.job,
            "slot": c.slot,
            "generation": c.generation,
            "shared_taken_by": self.node,
        })
    }

    /// The slot is done: snapshot `id` holds it.
    pub fn finish(self, job: &str, id: &str) -> anyhow::Result<()> {
        drop(self.renewer);
        let slot = self.handle.claim().slot;
        let store = self.handle.store();
        self.handle.finish(id)?;
        let seen = NodeSeen {
            job: job.to_string(),
            slot,
            taken_by: Some(self.node.clone()),
            snapshot: Some(id.to_string()),
        };
        record_seen(store.as_ref(), &self.node, seen)
    }

    /// This node failed the slot: another node may take it.
    pub fn fail(self) {
        drop(self.renewer);
        if let Err(e) = self.handle.fail() {
            tracing::warn!("cannot mark the cluster claim failed: {e:#}");
        }
    }
}

/// What `status` shows in cluster mode: every node's view, and the slots no node took.
pub struct ClusterStatus {
    /// Lines for the operator.
    pub lines: Vec<String>,
    /// Slots that passed without a finished claim: (job, slot).
    pub missed: Vec<(String, DateTime<Utc>)>,
    pub json: serde_json::Value,
}

/// The cluster part of `status` for the snapshot jobs `jobs` (name, schedule); `None` outside
/// cluster mode. A slot counts as missed when it lies between the first taken slot and now
/// minus a lease (and 5 s), and no node finished it or holds a live claim on it.
pub fn status(
    ctx: &Ctx,
    jobs: &[(String, &mnbackup_scheduler::Schedule)],
) -> anyhow::Result<Option<ClusterStatus>> {
    let Some(cc) = &ctx.config.cluster else {
        return Ok(None);
    };
    let repo = ctx.open_repo()?;
    let store = repo.store();
    let views = crate::ops::cluster::node_views(store.as_ref())?;
    let mut lines = vec![format!("cluster: nodes {}", cc.nodes.join(", "))];
    for n in &cc.nodes {
        match views.iter().find(|v| &v.node == n) {
            Some(v) => {
                let seen: Vec<String> = v
                    .jobs
                    .iter()
                    .map(|s| {
                        format!(
                            "{} slot {} taken by {}",
                            s.job,
                            s.slot.format("%Y-%m-%d %H:%M:%S UTC"),
                            s.taken_by.as_deref().unwrap_or("NOBODY")
                        )
                    })
                    .collect();
                lines.push(format!("  node {n}: {}", seen.join("; ")));
            }
            None => lines.push(format!("  node {n}: has not recorded any slot yet")),
        }
    }
    let cutoff = Utc::now() - chrono::Duration::seconds(cc.lease_seconds as i64 + 5);
    let mut missed = Vec::new();
    let mut holders = Vec::new();
    for (job, sched) in jobs {
        let (done, held) = done_slots(store.as_ref(), job)?;
        for c in &held {
            lines.push(format!(
                "  lease: node {} holds slot {} of job {job} until {} (claim generation {})",
                c.node,
                c.slot.format("%Y-%m-%d %H:%M:%S UTC"),
                c.lease_until.format("%H:%M:%S UTC"),
                c.generation
            ));
        }
        holders.extend(held);
        let Some(first) = done.first().copied() else {
            continue;
        };
        let mut t = first;
        let mut n = 0;
        while let Some(next) = sched.next_after(t) {
            if next > cutoff || n > 1000 {
                break;
            }
            if !done.contains(&next) {
                missed.push((job.clone(), next));
            }
            t = next;
            n += 1;
        }
    }
    for (job, slot) in &missed {
        lines.push(format!(
            "  ALARM: no node took slot {} of job {job}; check both daemons (`systemctl status \
             mnbackup` on each node)",
            slot.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    let json = serde_json::json!({
        "nodes": cc.nodes,
        "views": views,
        "lease_holders": holders,
        "missed_slots": missed.iter().map(|(j, s)| serde_json::json!({"job": j, "slot": s})).collect::<Vec<_>>(),
    });
    Ok(Some(ClusterStatus {
        lines,
        missed,
        json,
    }))
}

/// The slots of `job` some node finished or is working on, sorted; and the claims whose lease
/// runs (the nodes working on a slot now).
fn done_slots(
    store: &dyn crate::store::Backend,
    job: &str,
) -> anyhow::Result<(Vec<DateTime<Utc>>, Vec<Claim>)> {
    let mut held = Vec::new();
    let prefix = format!("{}/{job}/", crate::ops::cluster::CLAIMS);
    let mut slots = std::collections::BTreeSet::new();
    let keys = store.list(&prefix).map_err(|e| e.into_anyhow())?;
    for (key, _) in keys {
        let Some(slot_dir) = key.strip_prefix(&prefix).and_then(|r| r.split('/').next()) else {
            continue;
        };
        let Ok(slot) = chrono::NaiveDateTime::parse_from_str(slot_dir, "%Y%m%dT%H%M%SZ") else {
            continue;
        };
        let slot = slot.and_utc();
        if slots.contains(&slot) {
            continue;
        }
        let claims = crate::ops::cluster::slot_claims(store, job, slot)?;
        let now = Utc::now();
        let live =
            |c: &&Claim| c.state == crate::ops::cluster::ClaimState::Working && c.lease_until > now;
        held.extend(claims.last().filter(live).cloned());
        if claims
            .iter()
            .any(|c| c.state == crate::ops::cluster::ClaimState::Done || live(&c))
        {
            slots.insert(slot);
        }
    }
    Ok((slots.into_iter().collect(), held))
}
