//! `mnbackup schedule ...` (PLACEHOLDER: being implemented).
use super::Ctx;
use std::path::Path;
pub fn next(_ctx: &Ctx, _n: usize, _expr: Option<&str>) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
pub fn install(_ctx: &Ctx, _dry_run: bool) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
pub fn import_crontab(_ctx: &Ctx, _file: Option<&Path>, _apply: bool) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
