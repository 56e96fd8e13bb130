//! `mnbackup status` (PLACEHOLDER: being implemented).
use super::Ctx;
pub fn run(_ctx: &Ctx) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
