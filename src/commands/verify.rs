//! `mnbackup verify`: prints the report of [`crate::ops::verify::verify`] and maps it to the exit
//! code; a progress bar on a terminal.

use anyhow::{Context, Result};

use super::Ctx;
use crate::ui::bytes;

pub use crate::ops::verify::{verify, ObjectProblem, Subset, VerifyReport};

fn print_problems(kind: &str, list: &[ObjectProblem]) {
    for p in list {
        println!("{kind} object {}: {}", p.object, p.problem);
        let snaps: Vec<_> = p.snapshots.iter().cloned().collect();
        println!("  affects snapshots: {}", snaps.join(", "));
        for i in p.items.iter().take(20) {
            println!("  affects item {i}");
        }
        if p.items.len() > 20 {
            println!("  … and {} more items", p.items.len() - 20);
        }
    }
}

/// Options of `verify`.
pub struct VerifyArgs {
    pub read_data: bool,
    pub subset: Option<String>,
}

pub fn run(ctx: &Ctx, args: &VerifyArgs) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let _lock = repo.lock(false, "verify", ctx.lock_wait())?;
    let subset = match &args.subset {
        Some(s) => Subset::parse(s)?,
        None => Subset::All,
    };
    let read_data = args.read_data || args.subset.is_some();
    let start = std::time::Instant::now();
    let report = verify(
        &repo,
        read_data,
        subset,
        ctx.config.delta.max_chain,
        &crate::ui::StepProgress::new(ctx.quiet || ctx.json, ctx.json),
    )
    .context("verify could not run")?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (id, e) in &report.damaged_manifests {
            println!("damaged manifest {id}: {e}");
        }
        print_problems("missing", &report.missing);
        print_problems("damaged", &report.damaged);
        for p in &report.policy {
            println!("policy: {p}");
        }
        for i in &report.items_inconsistent {
            println!("inconsistent item {i}");
        }
        let secs = start.elapsed().as_secs_f64();
        ctx.say(format!(
            "{}: {} snapshots, {} objects checked{} in {:.1}s",
            if report.ok {
                "no problems found"
            } else {
                "PROBLEMS FOUND"
            },
            report.snapshots,
            report.objects,
            if read_data {
                format!(
                    ", {} objects read ({}, {}/s), {} pieces reconstructed",
                    report.objects_read,
                    bytes(report.bytes_read),
                    bytes((report.bytes_read as f64 / secs.max(0.001)) as u64),
                    report.pieces_reconstructed
                )
            } else {
                String::new()
            },
            secs
        ));
        let only_sigs = report.damaged_manifests.is_empty()
            && report.items_inconsistent.is_empty()
            && report.policy.is_empty()
            && report
                .missing
                .iter()
                .chain(report.damaged.iter())
                .all(|p| p.items.iter().all(|i| i.ends_with("(signature)")));
        if !report.ok && only_sigs {
            println!(
                "Only signatures are affected: every snapshot still restores; the next snapshot                  stores the affected pieces in full. `mnbackup prune` removes the damaged objects                  once no snapshot references them."
            );
        } else if !report.ok {
            println!(
                "Snapshots listed above cannot be fully restored. Take a new snapshot now \
                 (`mnbackup snapshot`) so a good copy exists; then `mnbackup forget` the affected \
                 snapshots and `mnbackup prune`."
            );
        }
    }
    Ok(report.exit_code)
}
