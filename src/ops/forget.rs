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
        let mut groups: BTreeMap<String, (String, Vec<SnapshotRef>)> = BTreeMap::new();
        for r in repo.load_all()? {
            match r {
                Ok(m) if plan.host.is_some_and(|h| h != m.host()) => {}
                Ok(m) => {
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
    }
    if !plan.dry_run {
        for id in &remove {
            repo.remove_manifest(id)?;
        }
    }
    Ok((keep, remove))
}
