//! `mnbackup init`: create a repository.

use anyhow::Result;

use super::Ctx;
use crate::repo::Repo;

pub fn run(ctx: &Ctx, packs: bool) -> Result<i32> {
    let path = ctx.repo_path()?;
    let store = crate::store::open_with(&path.to_string_lossy(), &ctx.config.repository.s3)?;
    let (repo, warning) = Repo::init_with(store, packs)?;
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"repository": repo.location(), "id": repo.config.id, "warning": warning})
        );
    } else {
        ctx.say(format!(
            "created mnbackup repository {} at {}",
            &repo.config.id[..8],
            repo.location()
        ));
    }
    Ok(0)
}
