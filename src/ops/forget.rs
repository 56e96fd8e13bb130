//! Forget: remove snapshots, by id or by a retention policy (as restic's forget). Objects stay
//! until prune.

use anyhow::Result;
use mnbackup_scheduler::{apply_policy, KeepPolicy, SnapshotRef, TzSpec};

use crate::error::usage;
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
}

/// Decide and (unless dry run) remove. The caller holds the exclusive lock.
pub fn forget_locked(repo: &Repo, plan: &ForgetPlan) -> Result<ForgetOutcome> {
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
        let mut refs = Vec::new();
        let mut batches = Vec::new();
        for r in repo.load_all()? {
            match r {
                // Binlog batches are not snapshots: kept by what the kept snapshots need.
                Ok(m) if m.trigger == "binlog" => batches.push(m),
                Ok(m) => refs.push(SnapshotRef {
                    id: m.id,
                    time: m.time,
                }),
                // A damaged snapshot is never chosen for removal by policy: verify reports it.
                Err((id, _)) => keep.push((id, "damaged (kept for inspection)".to_string())),
            }
        }
        let decided = apply_policy(&refs, pol, &tz);
        for d in decided.keep {
            let why: Vec<_> = d.reasons.iter().map(|r| r.label()).collect();
            keep.push((d.id, why.join(", ")));
        }
        let oldest_kept = refs
            .iter()
            .filter(|r| keep.iter().any(|(id, _)| *id == r.id))
            .map(|r| r.time)
            .min();
        remove.extend(decided.remove.into_iter().map(|d| d.id));
        remove.extend(unneeded_batches(&batches, oldest_kept));
    }
    if !plan.dry_run {
        for id in &remove {
            repo.remove_manifest(id)?;
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
