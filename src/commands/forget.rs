//! `mnbackup forget`: remove snapshots, by id or by the retention policy (as restic's forget).
//! Objects stay until `prune` (or `forget --prune`).

use anyhow::Result;
use mnbackup_scheduler::KeepPolicy;
use serde_json::json;

use super::Ctx;
use crate::repo::lock::Kind;

/// Options of `forget`.
#[derive(Debug, Default, Clone)]
pub struct ForgetArgs {
    pub snapshots: Vec<String>,
    pub keep: KeepPolicy,
    pub dry_run: bool,
    pub prune: bool,
    /// Only this host's snapshots (None: every host, grouped by `group_by`).
    pub host: Option<String>,
    pub group_by: crate::model::GroupBy,
}

/// The policy from the config, with command-line values taking precedence.
pub fn policy(ctx: &Ctx, overrides: &KeepPolicy) -> KeepPolicy {
    let r = &ctx.config.retention;
    KeepPolicy {
        last: overrides.last.or(r.keep_last),
        hourly: overrides.hourly.or(r.keep_hourly),
        daily: overrides.daily.or(r.keep_daily),
        weekly: overrides.weekly.or(r.keep_weekly),
        monthly: overrides.monthly.or(r.keep_monthly),
        yearly: overrides.yearly.or(r.keep_yearly),
    }
}

pub use crate::ops::forget::ForgetOutcome;

/// Decide and (unless dry run) remove (see [`crate::ops::forget::forget_locked`]). The caller
/// holds the forget lock (`lock::Kind::Forget`) or the exclusive one.
pub fn forget_locked(
    ctx: &Ctx,
    repo: &crate::repo::Repo,
    args: &ForgetArgs,
) -> Result<ForgetOutcome> {
    crate::ops::forget::forget_locked(
        repo,
        &crate::ops::forget::ForgetPlan {
            snapshots: &args.snapshots,
            policy: policy(ctx, &args.keep),
            timezone: &ctx.config.daemon.timezone,
            dry_run: args.dry_run,
            host: args.host.as_deref(),
            group_by: args.group_by,
        },
    )
}

pub fn run(ctx: &Ctx, args: &ForgetArgs) -> Result<i32> {
    let repo = ctx.open_repo()?;
    // On a full pool the lock file may not fit: the first snapshot to forget is removed first
    // (only when no other process holds the repository), then the lock is taken.
    let mut early: Vec<String> = Vec::new();
    // Explicit snapshots are resolved once (`latest` must not move when one is removed early).
    let mut args = args.clone();
    args.snapshots = args
        .snapshots
        .iter()
        .map(|s| repo.resolve(s))
        .collect::<Result<Vec<_>>>()?;
    let args = &mut args;
    // Forget only deletes manifests: it shares the repository with snapshots (see
    // `lock::Kind::Forget` for why that is safe); with --prune it needs the exclusive lock.
    let kind = if args.prune {
        Kind::Exclusive
    } else {
        Kind::Forget
    };
    let _lock = if args.dry_run {
        repo.lock_kind(kind, "forget", ctx.lock_wait())?
    } else {
        repo.lock_freeing_space(kind, "forget", ctx.lock_wait(), || {
            let plan = ForgetArgs {
                dry_run: true,
                ..args.clone()
            };
            let (_, remove) = forget_locked(ctx, &repo, &plan)?;
            match remove.into_iter().next() {
                Some(id) => {
                    repo.remove_manifest(&id)?;
                    early.push(id);
                    Ok(true)
                }
                None => Ok(false),
            }
        })?
    };
    let explicit = !args.snapshots.is_empty();
    args.snapshots.retain(|s| !early.contains(s));
    let (keep, mut remove) = if !explicit || !args.snapshots.is_empty() {
        forget_locked(ctx, &repo, args)?
    } else {
        (Vec::new(), Vec::new())
    };
    early.append(&mut remove);
    let remove = early;
    let pruned = if args.prune {
        Some(super::prune::prune_locked(&repo, args.dry_run)?)
    } else {
        None
    };
    if ctx.json {
        let keep: Vec<_> = keep
            .iter()
            .map(|(id, why)| json!({"id": id, "reasons": why}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"keep": keep, "remove": remove, "dry_run": args.dry_run, "prune": pruned})
            )?
        );
    } else {
        for (id, why) in &keep {
            ctx.say(format!("keep   {id}  ({why})"));
        }
        for id in &remove {
            ctx.say(format!(
                "{} {id}",
                if args.dry_run {
                    "would remove"
                } else {
                    "remove"
                }
            ));
        }
        ctx.say(format!(
            "{} snapshots kept, {} {}",
            keep.len(),
            remove.len(),
            if args.dry_run {
                "would be removed (dry run)"
            } else {
                "removed; run `mnbackup prune` to free their space"
            }
        ));
        if let Some(p) = &pruned {
            super::prune::print_report(ctx, p)?;
        }
    }
    Ok(0)
}
