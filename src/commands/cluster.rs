//! The daemon's cluster hook (`[cluster]`): before a scheduled snapshot, take the slot's claim
//! in the repository, or leave the slot to the node that holds it (see `ops::cluster`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mnbackup_scheduler::JobError;
use tracing::info;

use super::Ctx;
use crate::ops::cluster::{acquire, record_seen, Acquire, ClaimHandle, NodeSeen, Renewer};

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
    /// Another node took it: the job's summary.
    Other(String),
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
                return Ok(Slot::Other(format!(
                    "slot taken by node {} (snapshot {})",
                    c.node,
                    c.snapshot.as_deref().unwrap_or("?")
                )));
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

impl Held {
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
