//! `mnbackup init`: create a repository (format v2, encrypted unless `--no-encryption`).

use anyhow::Result;

use super::Ctx;
use crate::repo::{Repo, FORMAT_V1, FORMAT_VERSION};

pub fn run(ctx: &Ctx, no_encryption: bool, format_v1: bool, packs: bool) -> Result<i32> {
    let path = ctx.repo_path()?;
    let location = path.to_string_lossy().into_owned();
    let store = crate::store::open_with(&location, &ctx.config.repository.s3)?;
    let pass = if no_encryption || format_v1 {
        None
    } else {
        Some(super::password::for_init(ctx, &location)?)
    };
    let version = if format_v1 { FORMAT_V1 } else { FORMAT_VERSION };
    let (repo, warning) = Repo::init_with(
        store,
        version,
        pass.as_ref().map(|p| p.as_bytes()),
        packs && !format_v1,
    )?;
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({
                "repository": repo.location(),
                "id": repo.config.id,
                "version": repo.config.version,
                "encrypted": repo.encrypted(),
                "key": repo.key_id,
                "warning": warning,
            })
        );
    } else {
        ctx.say(format!(
            "created mnbackup repository {} at {} ({})",
            &repo.config.id[..8],
            repo.location(),
            repo.encryption_summary()
        ));
        if repo.encrypted() {
            ctx.say(
                "losing every passphrase (and the paper key) loses every backup: keep a copy \
                 off this node now with `mnbackup key export` (docs/security.md)",
            );
        } else {
            ctx.say("WARNING: the repository is not encrypted (docs/security.md)");
        }
    }
    Ok(0)
}
