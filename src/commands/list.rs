//! `mnbackup list`: the snapshots (all hosts' series, or one host's with `--host`).

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::ui::bytes;

pub fn run(ctx: &Ctx, host: Option<&str>) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let mut all = repo.load_all()?;
    // A damaged manifest's host is unknown: it is listed whatever the filter.
    all.retain(|r| match (r, host) {
        (Ok(m), Some(h)) => m.host() == h,
        _ => true,
    });
    let mut damaged = 0;
    if ctx.json {
        let v: Vec<_> = all
            .iter()
            .map(|r| match r {
                Ok(m) => json!({
                    "id": m.id, "time": m.time, "finished": m.finished, "hostname": m.hostname,
                    "components": m.components(),
                    "trigger": m.trigger, "tags": m.tags, "parent": m.parent,
                    "items": m.stats.items, "stats": m.stats,
                    "complete": m.complete, "gaps": m.gaps.len(),
                }),
                Err((id, e)) => json!({"id": id, "error": format!("{e:#}")}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<28} {:<20} {:<16} {:<10} {:<10} {:>6} {:>11} {:>11} {:>8}  tags",
            "id", "time (UTC)", "host", "trigger", "complete", "items", "size", "added", "duration"
        );
        let mut incomplete = 0;
        for r in &all {
            match r {
                Ok(m) => println!(
                    "{:<28} {:<20} {:<16} {:<10} {:<10} {:>6} {:>11} {:>11} {:>7.1}s  {}",
                    m.id,
                    m.time.format("%Y-%m-%d %H:%M:%S"),
                    m.host(),
                    m.trigger,
                    if m.complete {
                        "yes".to_string()
                    } else {
                        incomplete += 1;
                        format!("NO ({} gaps)", m.gaps.len())
                    },
                    m.stats.items,
                    bytes(m.stats.logical_bytes),
                    bytes(m.stats.bytes_added),
                    m.stats.duration_ms as f64 / 1000.0,
                    m.tags.join(",")
                ),
                Err((id, e)) => {
                    damaged += 1;
                    println!("{id:<28} DAMAGED: {e:#}");
                }
            }
        }
        println!("{} snapshots", all.len());
        if incomplete > 0 {
            println!(
                "{incomplete} snapshot(s) are incomplete; `mnbackup show ID` lists what each lacks"
            );
        }
    }
    if damaged > 0 {
        tracing::warn!("{damaged} snapshot manifest(s) are damaged; run `mnbackup verify`");
    }
    Ok(0)
}
