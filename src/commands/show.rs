//! `mnbackup show SNAPSHOT`: a snapshot's items.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::model::{EntryKind, Item};
use crate::ui::bytes;

fn encoding(item: &Item) -> String {
    let mut d = 0;
    let mut f = 0;
    for p in &item.pieces {
        if p.piece.data.depth() > 0 {
            d += 1
        } else {
            f += 1
        }
    }
    match (f, d) {
        (0, 0) => "-".into(),
        (f, 0) => format!("{f} full"),
        (0, d) => format!("{d} delta"),
        (f, d) => format!("{f} full+{d} delta"),
    }
}

pub fn run(ctx: &Ctx, spec: &str) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let id = repo.resolve(spec)?;
    let m = repo.load_manifest(&id)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "id": m.id, "time": m.time, "trigger": m.trigger, "tags": m.tags,
                "parent": m.parent, "stats": m.stats, "sources": m.sources,
                "complete": m.complete, "gaps": m.gaps,
                "items": m.items.iter().map(|i| json!({
                    "name": i.name, "kind": i.kind, "size": i.size, "blake3": i.blake3,
                    "meta": i.meta, "target": i.target, "pieces": i.pieces.len(),
                })).collect::<Vec<_>>(),
            }))?
        );
        return Ok(0);
    }
    println!(
        "snapshot {} taken {} ({}) on {}",
        m.id, m.time, m.trigger, m.hostname
    );
    for i in &m.items {
        let kind = match i.kind {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "link",
        };
        let mode = i
            .meta
            .as_ref()
            .map(|m| format!("{:04o}", m.mode))
            .unwrap_or_else(|| "-".into());
        let extra = i
            .target
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        println!(
            "{kind:<4} {mode:>5} {:>11} {:<16} {}{extra}",
            bytes(i.size),
            encoding(i),
            i.name
        );
    }
    println!("{} items, {}", m.items.len(), bytes(m.stats.logical_bytes));
    if !m.complete {
        println!("INCOMPLETE: this snapshot lacks {} thing(s):", m.gaps.len());
        for g in &m.gaps {
            println!("  - {}", g.describe());
        }
    }
    Ok(0)
}
