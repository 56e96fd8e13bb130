//! `mnbackup cat SNAPSHOT ITEM`: an item's plain content on standard output.

use std::io::Write;

use anyhow::Result;

use super::Ctx;
use crate::repo::reader::{find_item, read_item, write_item};

/// Items up to this size are checked whole in memory before `cat` writes them.
const CAT_IN_MEMORY: u64 = 64 << 20;

pub fn run(ctx: &Ctx, spec: &str, item: &str) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let _lock = repo.lock(false, "cat", ctx.lock_wait())?;
    let id = repo.resolve(spec)?;
    let m = repo.load_manifest(&id)?;
    let item = find_item(&m, item)?;
    // Nothing is written before the whole item checked out: small items are reassembled in
    // memory; larger ones are read twice (a checking pass, then the writing pass, which checks
    // every piece again).
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if item.size <= CAT_IN_MEMORY {
        let bytes = read_item(&repo, item)?;
        out.write_all(&bytes)?;
    } else {
        write_item(&repo, item, &mut std::io::sink())?;
        write_item(&repo, item, &mut out)?;
    }
    out.flush()?;
    Ok(0)
}
