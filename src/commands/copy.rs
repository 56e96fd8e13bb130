//! `mnbackup copy`: copy snapshots to a second repository (see [`crate::ops::copy`]).

use anyhow::Result;

use super::Ctx;
use crate::cli::CopyArgs;
use crate::ops::copy::{copy, CopyRequest};
use crate::ui::{bytes, SnapshotProgress};

pub fn run(ctx: &Ctx, args: &CopyArgs) -> Result<i32> {
    let src = ctx.open_repo()?;
    let dst = ctx.open_dest(&args.to)?;
    if src.config.id == dst.config.id {
        return Err(crate::error::usage(format!(
            "{} and {} are the same repository (id {}); copy needs a second one",
            src.location(),
            dst.location(),
            &src.config.id[..8]
        )));
    }
    let req = CopyRequest {
        snapshots: args.snapshots.clone(),
        host: args.host.clone(),
        limit_upload: args.limit_upload.map(|k| k.max(1) * 1024),
    };
    // Readers of the source; a writer (of new objects, like a snapshot) of the destination.
    let _src_lock = src.lock(false, "copy", ctx.lock_wait())?;
    let _dst_lock = dst.lock(false, "copy", ctx.lock_wait())?;
    let progress = SnapshotProgress::new(ctx.quiet || ctx.json);
    let report = copy(&src, &dst, &req, &progress);
    progress.finish();
    let report = report?;
    if ctx.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        ctx.say(format!(
            "copied {} snapshot(s) to {} ({} already there): {} objects, {} sent; {} objects \
             were there already",
            report.copied.len(),
            dst.location(),
            report.already_there.len(),
            report.objects_sent,
            bytes(report.bytes_sent),
            report.objects_present
        ));
    }
    Ok(0)
}
