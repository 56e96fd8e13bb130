//! `mnbackup copy`: copy snapshots to a second repository (see [`crate::ops::copy`]), given as a
//! path or URL or as the name of a `[[copy]]` target of the configuration. The daemon's `copy`
//! job runs [`copy_to`] with a target's name.

use anyhow::Result;
use mnbackup_scheduler::KeepPolicy;

use super::Ctx;
use crate::cli::CopyArgs;
use crate::config::CopyTargetConfig;
use crate::ops::copy::{copy, CopyReport, CopyRequest};
use crate::ops::progress::Progress;
use crate::repo::Repo;
use crate::ui::{bytes, StepProgress};

/// Where to copy to: a `[[copy]]` target, or a location given on the command line.
pub struct Destination {
    pub repo: Repo,
    /// The target's settings when `--to` named one.
    pub target: Option<CopyTargetConfig>,
}

/// Resolve `--to`: the name of a `[[copy]]` target first, else a path or URL. A bare word that
/// names no target is refused (it would be a directory relative to the working directory).
pub fn destination(ctx: &Ctx, to: &str) -> Result<Destination> {
    if let Some(t) = ctx.config.copy_target(to) {
        let s3 = t.s3.as_ref().unwrap_or(&ctx.config.repository.s3);
        let mut repo = Repo::open_on(crate::store::open_with(&t.to, s3)?)?;
        if repo.encrypted() {
            let pass = super::password::current(ctx, &repo.location(), true)?;
            repo.unlock(pass.as_bytes())?;
        }
        return Ok(Destination {
            repo,
            target: Some(t.clone()),
        });
    }
    if !to.contains('/') {
        let names: Vec<&str> = ctx.config.copy.iter().map(|c| c.name.as_str()).collect();
        return Err(crate::error::usage(format!(
            "--to {to:?} names no [[copy]] target of the configuration ({}) and is not a path \
             or URL; give a configured name, an absolute path or a URL (s3://bucket/prefix)",
            if names.is_empty() {
                "it has none".to_string()
            } else {
                format!("configured: {}", names.join(", "))
            }
        )));
    }
    Ok(Destination {
        repo: ctx.open_dest(to)?,
        target: None,
    })
}

/// The request from a target's settings, the command-line values taking precedence: ids
/// replace the target's `snapshots`, --keep-* replace its keep_* (as one policy), --host and
/// --limit-upload replace its values.
fn request(ctx: &Ctx, target: Option<&CopyTargetConfig>, args: &CopyArgs) -> Result<CopyRequest> {
    let mut snapshots = args.snapshots.clone();
    let latest = target.is_some_and(|t| t.snapshots == "latest");
    if args.keep.given() && latest && snapshots.is_empty() {
        return Err(crate::error::usage(format!(
            "[[copy]] {:?} selects snapshots = \"latest\", which excludes --keep-* (latest is one \
             snapshot, --keep-* a policy); give snapshot ids with --keep-*, or a target without \
             `latest`",
            args.to
        )));
    }
    if snapshots.is_empty() && latest {
        snapshots.push("latest".into());
    }
    let keep = if args.keep.given() {
        Some(args.keep.policy())
    } else {
        target.and_then(target_policy)
    };
    Ok(CopyRequest {
        snapshots,
        host: args
            .host
            .clone()
            .or_else(|| target.and_then(|t| t.host.clone())),
        limit_upload: args
            .limit_upload
            .or_else(|| target.and_then(|t| t.limit_upload))
            .map(|k| k.max(1) * 1024),
        keep,
        timezone: ctx.config.daemon.timezone.clone(),
    })
}

/// A target's keep_* as a policy (None: it sets none).
fn target_policy(t: &CopyTargetConfig) -> Option<KeepPolicy> {
    let p = KeepPolicy {
        last: t.keep_last,
        hourly: t.keep_hourly,
        daily: t.keep_daily,
        weekly: t.keep_weekly,
        monthly: t.keep_monthly,
        yearly: t.keep_yearly,
    };
    let set = [p.last, p.hourly, p.daily, p.weekly, p.monthly, p.yearly];
    set.iter().any(Option::is_some).then_some(p)
}

/// Copy from the configured repository to `args.to` under the locks (a reader of the source, a
/// writer of the destination).
pub fn copy_to(ctx: &Ctx, args: &CopyArgs, progress: &dyn Progress) -> Result<(Repo, CopyReport)> {
    let src = ctx.open_repo()?;
    let dst = destination(ctx, &args.to)?;
    let dst_repo = dst.repo;
    if src.config.id == dst_repo.config.id {
        return Err(crate::error::usage(format!(
            "{} and {} are the same repository (id {}); copy needs a second one",
            src.location(),
            dst_repo.location(),
            &src.config.id[..8]
        )));
    }
    let req = request(ctx, dst.target.as_ref(), args)?;
    let _src_lock = src.lock(false, "copy", ctx.lock_wait())?;
    let _dst_lock = dst_repo.lock_writer("copy", ctx.lock_wait())?;
    let report = copy(&src, &dst_repo, &req, progress)?;
    Ok((dst_repo, report))
}

/// One line saying what a copy did.
pub fn summary(dst: &Repo, report: &CopyReport) -> String {
    let policy = if report.not_kept.is_empty() {
        String::new()
    } else {
        format!(", {} left out by the keep policy", report.not_kept.len())
    };
    format!(
        "copied {} snapshot(s) to {} ({} already there{policy}): {} objects, {} sent; {} \
         objects were there already",
        report.copied.len(),
        dst.location(),
        report.already_there.len(),
        report.objects_sent,
        bytes(report.bytes_sent),
        report.objects_present
    )
}

pub fn run(ctx: &Ctx, args: &CopyArgs) -> Result<i32> {
    let progress = StepProgress::new(ctx.quiet || ctx.json, ctx.json);
    let done = copy_to(ctx, args, &progress);
    progress.finish();
    let (dst, report) = done?;
    if ctx.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        ctx.say(summary(&dst, &report));
    }
    Ok(0)
}
