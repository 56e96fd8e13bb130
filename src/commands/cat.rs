//! `mnbackup cat SNAPSHOT ITEM`: an item's plain content on standard output.

use std::io::Write;

use anyhow::Result;

use super::Ctx;
use crate::reader::{find_item, write_item};

pub fn run(ctx: &Ctx, spec: &str, item: &str) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let _lock = repo.lock(false, "cat", ctx.lock_wait())?;
    let id = repo.resolve(spec)?;
    let m = repo.load_manifest(&id)?;
    let item = find_item(&m, item)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_item(&repo, item, &mut out)?;
    out.flush()?;
    Ok(0)
}
