//! Cluster mode: two (or more) management nodes run the same schedules against one repository;
//! for each slot of a job exactly one node takes it.
//!
//! A node claims the slot by creating the object `cluster/claims/<job>/<slot>/<generation>`
//! with [`Backend::put_if_absent`] (O_EXCL on a file system, a conditional put on object
//! storage): whoever creates generation 0 takes the slot. The holder renews its lease (rewrites
//! its own claim object with a later `lease_until`) while it works and marks the claim `done`
//! (with the snapshot id) or `failed` at the end. Another node that finds a claim whose lease
//! expired (the holder died), or that failed, creates the next generation and takes the slot:
//! the RPO grows by at most the lease. Each node also writes `cluster/nodes/<node>.json` (what
//! it last saw per job) for `status`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::Backend;

/// Where claims live in the repository.
pub const CLAIMS: &str = "cluster/claims";
/// Where each node's view lives.
pub const NODES: &str = "cluster/nodes";

/// The state of one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Working,
    Done,
    Failed,
}

/// One claim object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub node: String,
    pub job: String,
    pub slot: DateTime<Utc>,
    pub generation: u32,
    pub state: ClaimState,
    pub lease_until: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// The slot was taken over by another node while this one still worked on it (this node's
/// lease expired: it was stopped, or too slow to renew): this node must not commit a snapshot
/// for the slot. Checked by [`ClaimHandle::check_current`] right before the commit.
#[derive(Debug, thiserror::Error)]
#[error(
    "node {by} took over slot {slot} (claim generation {generation}) after this node's lease \
     expired; this node's snapshot of the slot is not committed"
)]
pub struct Fenced {
    pub by: String,
    pub slot: DateTime<Utc>,
    pub generation: u32,
}

/// What [`acquire`] found.
#[derive(Debug)]
pub enum Acquire {
    /// This node took the slot: work, renew, then finish.
    Won(ClaimHandle),
    /// Another node is working on the slot and its lease runs.
    Held(Claim),
    /// The slot was taken and finished.
    Done(Claim),
}

/// The key prefix of one slot's claims.
pub fn slot_prefix(job: &str, slot: DateTime<Utc>) -> String {
    format!("{CLAIMS}/{job}/{}/", slot.format("%Y%m%dT%H%M%SZ"))
}

fn read_claim(store: &dyn Backend, key: &str) -> Result<Claim> {
    let b = store
        .get(key, 1 << 16)
        .map_err(|e| e.into_anyhow())
        .with_context(|| format!("reading the claim {key}"))?;
    serde_json::from_slice(&b).with_context(|| format!("the claim {key} is not valid"))
}

/// The claims of one slot, by generation.
pub fn slot_claims(store: &dyn Backend, job: &str, slot: DateTime<Utc>) -> Result<Vec<Claim>> {
    let prefix = slot_prefix(job, slot);
    let mut v = Vec::new();
    for (key, _) in store.list(&prefix).map_err(|e| e.into_anyhow())? {
        // Only generations: a node's temporary file while it creates one is not a claim.
        let generation = key.rsplit('/').next().unwrap_or("");
        if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        v.push(read_claim(store, &key)?);
    }
    v.sort_by_key(|c| c.generation);
    Ok(v)
}

/// Try to take `job`'s `slot` for `node` with a lease of `lease`.
pub fn acquire(
    store: &Arc<dyn Backend>,
    node: &str,
    job: &str,
    slot: DateTime<Utc>,
    lease: Duration,
) -> Result<Acquire> {
    let prefix = slot_prefix(job, slot);
    store.ensure_dir(&prefix).map_err(|e| e.into_anyhow())?;
    loop {
        let last = slot_claims(store.as_ref(), job, slot)?.pop();
        let generation = match &last {
            None => 0,
            Some(c) if c.state == ClaimState::Done => return Ok(Acquire::Done(c.clone())),
            Some(c) if c.state == ClaimState::Working && c.lease_until > Utc::now() => {
                return Ok(Acquire::Held(c.clone()))
            }
            Some(c) => c.generation + 1,
        };
        let claim = Claim {
            node: node.to_string(),
            job: job.to_string(),
            slot,
            generation,
            state: ClaimState::Working,
            lease_until: until(lease),
            snapshot: None,
        };
        let key = format!("{prefix}{generation:06}");
        if store
            .put_if_absent(&key, &serde_json::to_vec(&claim)?)
            .map_err(|e| e.into_anyhow())?
        {
            return Ok(Acquire::Won(ClaimHandle {
                store: store.clone(),
                key,
                claim,
                lease,
            }));
        }
        // Another node created this generation first: look again.
    }
}

fn until(lease: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

/// A claim this node holds.
#[derive(Debug)]
pub struct ClaimHandle {
    store: Arc<dyn Backend>,
    key: String,
    claim: Claim,
    lease: Duration,
}

impl ClaimHandle {
    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// The backend the claim lives in.
    pub fn store(&self) -> Arc<dyn Backend> {
        self.store.clone()
    }

    fn write(&self, c: &Claim) -> Result<()> {
        self.store
            .put_replace(&self.key, &serde_json::to_vec(c)?)
            .map_err(|e| e.into_anyhow())
            .with_context(|| format!("writing the claim {}", self.key))
    }

    /// Push the lease end to now + lease.
    pub fn renew(&self) -> Result<()> {
        let mut c = self.claim.clone();
        c.lease_until = until(self.lease);
        self.write(&c)
    }

    /// Fencing, right before the snapshot is committed: fail with [`Fenced`] when a later
    /// generation of the slot's claim exists (another node took the slot over). Otherwise the
    /// lease is renewed (it may have expired while nobody took over) and checked once more, so
    /// a node that resumes after a stop longer than the lease never commits a slot another node
    /// took.
    pub fn check_current(&self) -> Result<()> {
        for renewed in [false, true] {
            let last = slot_claims(self.store.as_ref(), &self.claim.job, self.claim.slot)?.pop();
            if let Some(l) = last.filter(|l| l.generation != self.claim.generation) {
                return Err(Fenced {
                    by: l.node,
                    slot: l.slot,
                    generation: l.generation,
                }
                .into());
            }
            if !renewed {
                self.renew()?;
            }
        }
        Ok(())
    }

    /// Renew the lease every third of it on a thread until the returned guard is dropped.
    pub fn keep_renewed(&self) -> Renewer {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, key, claim, lease) = (
            self.store.clone(),
            self.key.clone(),
            self.claim.clone(),
            self.lease,
        );
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let h = ClaimHandle {
                store,
                key,
                claim,
                lease,
            };
            let step = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(step);
                waited += step;
                if waited >= lease / 3 {
                    waited = Duration::ZERO;
                    if let Err(e) = h.renew() {
                        tracing::warn!("cannot renew the cluster lease: {e:#}");
                    }
                }
            }
        });
        Renewer {
            stop,
            thread: Some(thread),
        }
    }

    /// The slot is done: snapshot `id` holds it.
    pub fn finish(self, id: &str) -> Result<()> {
        let mut c = self.claim.clone();
        c.state = ClaimState::Done;
        c.snapshot = Some(id.to_string());
        self.write(&c)
    }

    /// This node failed the slot: another node may take it at once.
    pub fn fail(self) -> Result<()> {
        let mut c = self.claim.clone();
        c.state = ClaimState::Failed;
        c.lease_until = Utc::now();
        self.write(&c)
    }
}

/// Renews a lease until dropped.
pub struct Renewer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one node last saw of a job (`cluster/nodes/<node>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSeen {
    pub job: String,
    pub slot: DateTime<Utc>,
    /// The node that took the slot (this one or another), when one did.
    pub taken_by: Option<String>,
    pub snapshot: Option<String>,
}

/// One node's view: when it last wrote, and per job the last slot it saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub updated: Option<DateTime<Utc>>,
    pub jobs: Vec<NodeSeen>,
}

/// Record what `node` saw of a slot in its view.
pub fn record_seen(store: &dyn Backend, node: &str, seen: NodeSeen) -> Result<()> {
    let key = format!("{NODES}/{node}.json");
    store.ensure_dir(NODES).map_err(|e| e.into_anyhow())?;
    let mut v: NodeView = match store.get(&key, 1 << 20) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => NodeView::default(),
    };
    v.node = node.to_string();
    v.updated = Some(Utc::now());
    v.jobs.retain(|s| s.job != seen.job);
    v.jobs.push(seen);
    store
        .put_replace(&key, &serde_json::to_vec_pretty(&v)?)
        .map_err(|e| e.into_anyhow())
}

/// The components each node keeps in its own series (`zstack.properties`, keys, the HA
/// configuration); every other component holds the data the nodes share.
pub const NODE_LOCAL: &[&str] = &["files"];

/// One snapshot to restore to rebuild a node, and which of its components.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildPick {
    pub snapshot: String,
    pub host: String,
    pub components: std::collections::BTreeSet<String>,
}

/// What rebuilds node `host` (`restore --host`): the newest snapshot of `host`'s own series
/// with its node-local components, and the newest snapshot of the shared components taken by
/// any of `nodes` (any host when empty). One pick when both are the same snapshot. Binlog
/// batches and safety snapshots are not considered. An error when `host` has no snapshot with
/// node-local data.
pub fn rebuild_picks(
    repo: &crate::repo::Repo,
    host: &str,
    nodes: &[String],
) -> Result<Vec<RebuildPick>> {
    let mut local: Option<RebuildPick> = None;
    let mut shared: Option<RebuildPick> = None;
    for id in repo.snapshot_ids()?.iter().rev() {
        if local.is_some() && shared.is_some() {
            break;
        }
        let m = match repo.load_manifest(id) {
            Ok(m) if m.trigger == "binlog" || m.trigger == "safety" => continue,
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("skipping snapshot {id}: {e:#}");
                continue;
            }
        };
        let (node_local, rest): (std::collections::BTreeSet<String>, _) = m
            .components()
            .into_iter()
            .partition(|c| NODE_LOCAL.contains(&c.as_str()));
        let pick = |components| RebuildPick {
            snapshot: m.id.clone(),
            host: m.host().to_string(),
            components,
        };
        if local.is_none() && m.host() == host && !node_local.is_empty() {
            local = Some(pick(node_local));
        }
        let by_node = nodes.is_empty() || m.host() == host || nodes.iter().any(|n| n == m.host());
        if shared.is_none() && by_node && !rest.is_empty() {
            shared = Some(pick(rest));
        }
    }
    let Some(local) = local else {
        return Err(crate::error::usage(format!(
            "host {host} has no snapshot of its node-local data ({}); check the name with              `mnbackup list`, or restore the shared data alone with `mnbackup restore latest              --no-files`",
            NODE_LOCAL.join(", ")
        )));
    };
    Ok(match shared {
        Some(mut s) if s.snapshot == local.snapshot => {
            s.components.extend(local.components);
            vec![s]
        }
        Some(s) => vec![s, local],
        None => vec![local],
    })
}

/// Every node's view.
pub fn node_views(store: &dyn Backend) -> Result<Vec<NodeView>> {
    let mut out = Vec::new();
    let Ok(list) = store.list(&format!("{NODES}/")) else {
        return Ok(out);
    };
    for (key, _) in list {
        let key = if key.starts_with(NODES) {
            key
        } else {
            format!("{NODES}/{key}")
        };
        let b = store.get(&key, 1 << 20).map_err(|e| e.into_anyhow())?;
        out.push(serde_json::from_slice(&b).with_context(|| format!("reading {key}"))?);
    }
    out.sort_by(|a: &NodeView, b| a.node.cmp(&b.node));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemBackend;

    fn slot() -> DateTime<Utc> {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn one_node_takes_a_slot_the_other_sees_it_held_then_done() {
        let store: Arc<dyn Backend> = MemBackend::new();
        let lease = Duration::from_secs(60);
        let Acquire::Won(h) = acquire(&store, "mn1", "twice-daily", slot(), lease).unwrap() else {
            panic!("the first node must win");
        };
        match acquire(&store, "mn2", "twice-daily", slot(), lease).unwrap() {
            Acquire::Held(c) => assert_eq!(c.node, "mn1"),
            other => panic!("{other:?}"),
        }
        h.renew().unwrap();
        h.finish("snap1").unwrap();
        match acquire(&store, "mn2", "twice-daily", slot(), lease).unwrap() {
            Acquire::Done(c) => assert_eq!(
                (c.node.as_str(), c.snapshot.as_deref()),
                ("mn1", Some("snap1"))
            ),
            other => panic!("{other:?}"),
        }
        // Another slot is free again.
        let next = slot() + chrono::Duration::hours(12);
        assert!(matches!(
            acquire(&store, "mn2", "twice-daily", next, lease).unwrap(),
            Acquire::Won(_)
        ));
    }

    #[test]
    fn an_expired_or_failed_claim_is_taken_over_once() {
        let store: Arc<dyn Backend> = MemBackend::new();
        let short = Duration::from_millis(200);
        let Acquire::Won(_dead) = acquire(&store, "mn1", "j", slot(), short).unwrap() else {
            panic!()
        };
        assert!(matches!(
            acquire(&store, "mn2", "j", slot(), short).unwrap(),
            Acquire::Held(_)
        ));
        std::thread::sleep(Duration::from_millis(300));
        let Acquire::Won(h) = acquire(&store, "mn2", "j", slot(), Duration::from_secs(60)).unwrap()
        else {
            panic!("the lease expired: mn2 takes over")
        };
        assert_eq!(h.claim().generation, 1);
        // The renewer keeps it held past a short lease.
        assert!(matches!(
            acquire(&store, "mn1", "j", slot(), short).unwrap(),
            Acquire::Held(_)
        ));
        h.fail().unwrap();
        let Acquire::Won(h) = acquire(&store, "mn1", "j", slot(), short).unwrap() else {
            panic!("a failed claim is free")
        };
        assert_eq!(h.claim().generation, 2);
        let r = h.keep_renewed();
        std::thread::sleep(Duration::from_millis(500));
        assert!(matches!(
            acquire(&store, "mn2", "j", slot(), short).unwrap(),
            Acquire::Held(_)
        ));
        drop(r);
        h.finish("s").unwrap();
        assert_eq!(slot_claims(store.as_ref(), "j", slot()).unwrap().len(), 3);
    }

    #[test]
    fn a_holder_whose_slot_was_taken_over_is_fenced() {
        let store: Arc<dyn Backend> = MemBackend::new();
        let short = Duration::from_millis(100);
        let Acquire::Won(stale) = acquire(&store, "mn1", "j", slot(), short).unwrap() else {
            panic!()
        };
        stale.check_current().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // The lease expired but nobody took over: still this node's, and renewed.
        stale.check_current().unwrap();
        assert!(matches!(
            acquire(&store, "mn2", "j", slot(), short).unwrap(),
            Acquire::Held(_)
        ));
        std::thread::sleep(Duration::from_millis(200));
        let Acquire::Won(h) = acquire(&store, "mn2", "j", slot(), short).unwrap() else {
            panic!("the lease expired: mn2 takes over")
        };
        let e = stale.check_current().unwrap_err();
        let f = e.downcast_ref::<Fenced>().expect("fenced");
        assert_eq!((f.by.as_str(), f.generation), ("mn2", 1));
        h.check_current().unwrap();
    }

    #[test]
    fn node_views_record_the_last_slot_per_job() {
        let store: Arc<dyn Backend> = MemBackend::new();
        for (n, by) in [("mn1", Some("mn1")), ("mn2", None)] {
            record_seen(
                store.as_ref(),
                n,
                NodeSeen {
                    job: "j".into(),
                    slot: slot(),
                    taken_by: by.map(String::from),
                    snapshot: None,
                },
            )
            .unwrap();
        }
        let v = node_views(store.as_ref()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].jobs[0].taken_by, None);
    }
}
