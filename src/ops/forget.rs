//! Forget: remove snapshots, by id or by a retention policy (as restic's forget). Objects stay
//! until prune. The policy applies to each series on its own (grouped by host by default), so
//! two nodes sharing one pool never forget each other's snapshots.

use std::collections::BTreeMap;

use anyhow::Result;
use mnbackup_scheduler::{apply_policy, KeepPolicy, SnapshotRef, TzSpec};

use crate::error::usage;
use crate::model::GroupBy;
use crate::repo::Repo;

/// Kept snapshots with the reasons, and removed snapshot ids.
pub type ForgetOutcome = (Vec<(String, String)>, Vec<String>);

/// What to forget: the given snapshots, or (none given) what `policy` does not keep, with the
/// calendar of `timezone`.
#[derive(Debug, Clone)]
pub struct ForgetPlan<'a> {
    pub snapshots: &'a [String],
    pub policy: KeepPolicy,
    pub timezone: &'a str,
    pub dry_run: bool,
    /// Only the snapshots of this host (None: every host).
    pub host: Option<&'a str>,
    /// How the policy's groups are formed.
    pub group_by: GroupBy,
}

/// Decide and (unless dry run) remove. The caller holds the forget lock
/// ([`crate::repo::lock::Kind::Forget`], shared with snapshots) or the exclusive one. A manifest
/// already gone when its turn comes (removed meanwhile by hand or an older release) counts as
/// removed.
pub fn forget_locked(repo: &Repo, plan: &ForgetPlan) -> Result<ForgetOutcome> {
    let (keep, remove) = decide(repo, plan)?;
    if !plan.dry_run {
        for id in &remove {
            match repo.remove_manifest(id) {
                Ok(()) => {}
                Err(e) if !repo.has_manifest(id) => {
                    tracing::info!("snapshot {id} was removed meanwhile ({e:#})");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok((keep, remove))
}

/// What `plan` keeps and removes, removing nothing (`forget --dry-run`; `copy --keep-*`
/// selects what this keeps). Every manifest is in one of the two lists except the binlog
/// batches a kept snapshot needs (kept, not listed) and the manifests of other hosts than
/// `plan.host`. Incomplete snapshots (`complete = false`) are decided like any other; a
/// damaged manifest is kept.
pub fn decide(repo: &Repo, plan: &ForgetPlan) -> Result<ForgetOutcome> {
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    if !plan.snapshots.is_empty() {
        for s in plan.snapshots {
            remove.push(repo.resolve(s)?);
        }
    } else {
        let pol = &plan.policy;
        if pol.is_empty() {
            return Err(usage(
                "no retention policy: set [retention] keep_* in the configuration or give \
                 --keep-last/--keep-daily/...; forget never removes everything by default",
            ));
        }
        let tz = TzSpec::parse(plan.timezone).map_err(|e| usage(e.to_string()))?;
        let mut groups: BTreeMap<String, (String, Vec<SnapshotRef>)> = BTreeMap::new();
        let mut batches = Vec::new();
        let mut series_of: BTreeMap<String, (String, chrono::DateTime<chrono::Utc>)> =
            BTreeMap::new();
        for r in repo.load_all()? {
            match r {
                Ok(m) if plan.host.is_some_and(|h| h != m.host()) => {}
                // Binlog batches are not snapshots: kept by what the kept snapshots need.
                Ok(m) if m.trigger == "binlog" => batches.push(m),
                Ok(m) => {
                    series_of.insert(m.id.clone(), (m.host().to_string(), m.time));
                    let g = groups
                        .entry(plan.group_by.key(&m))
                        .or_insert_with(|| (plan.group_by.describe(&m), Vec::new()));
                    g.1.push(SnapshotRef {
                        id: m.id,
                        time: m.time,
                    });
                }
                // A damaged snapshot is never chosen for removal by policy: verify reports it.
                Err((id, _)) => keep.push((id, "damaged (kept for inspection)".to_string())),
            }
        }
        for (label, refs) in groups.values() {
            let decided = apply_policy(refs, pol, &tz);
            for d in decided.keep {
                let mut why: Vec<_> = d.reasons.iter().map(|r| r.label()).collect();
                if !label.is_empty() {
                    why.push(label.as_str());
                }
                keep.push((d.id, why.join(", ")));
            }
            remove.extend(decided.remove.into_iter().map(|d| d.id));
        }
        // Per host: a host's batches are needed back to that host's oldest kept snapshot.
        let mut oldest_kept: BTreeMap<&str, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        for (id, _) in &keep {
            if let Some((host, time)) = series_of.get(id) {
                let e = oldest_kept.entry(host.as_str()).or_insert(*time);
                *e = (*e).min(*time);
            }
        }
        let mut by_host: BTreeMap<String, Vec<crate::model::Manifest>> = BTreeMap::new();
        for b in batches {
            by_host.entry(b.host().to_string()).or_default().push(b);
        }
        for (host, bs) in &by_host {
            remove.extend(unneeded_batches(
                bs,
                oldest_kept.get(host.as_str()).copied(),
            ));
        }
    }
    Ok((keep, remove))
}

/// The binlog batches no kept snapshot needs: every event they hold is older than the oldest
/// kept snapshot (whose consistent point lies after its start time). With no snapshot kept,
/// every batch is kept (nothing says which are needed).
fn unneeded_batches(
    batches: &[crate::model::Manifest],
    oldest_kept: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<String> {
    let Some(oldest) = oldest_kept else {
        return Vec::new();
    };
    batches
        .iter()
        .filter(|m| {
            let info: crate::engines::binlog::series::BatchInfo = m
                .sources
                .get("binlog")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let newest = info
                .segments
                .iter()
                .map(|s| i64::from(s.info.last_time))
                .max();
            let gap_time = info.gaps.iter().map(|g| g.detected).max();
            match newest {
                Some(t) => t < oldest.timestamp() && gap_time.is_none_or(|g| g < oldest),
                None => m.finished < oldest,
            }
        })
        .map(|m| m.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::unneeded_batches;
    use crate::model::Manifest;

    fn batch(id: &str, last_event: u32) -> Manifest {
        let seg = serde_json::json!({
            "item": "binlog/x", "seq": 1, "source_server_id": 1, "server_file": "b.000001",
            "first_pos": 4, "end_pos": 100, "first_gtid": null, "last_gtid": null,
            "gtid_pos_end": [], "first_time": last_event - 5, "last_time": last_event,
            "transactions": 1, "events": 3, "bytes": 96,
        });
        serde_json::from_value(serde_json::json!({
            "format": 1, "id": id, "time": "2026-01-01T00:00:00Z",
            "finished": "2026-01-01T00:00:00Z", "hostname": "h", "trigger": "binlog",
            "items": [], "stats": crate::model::SnapshotStats::default(), "sources": {"binlog": {"format": 1, "segments": [seg]}},
        }))
        .unwrap()
    }

    #[test]
    fn only_batches_wholly_before_the_oldest_kept_snapshot_go() {
        let oldest = Utc.timestamp_opt(1000, 0).unwrap();
        let b = vec![batch("old", 990), batch("spans", 1000), batch("new", 2000)];
        assert_eq!(unneeded_batches(&b, Some(oldest)), vec!["old".to_string()]);
        // No snapshot kept: nothing says which are needed, all stay.
        assert!(unneeded_batches(&b, None).is_empty());
    }
}
