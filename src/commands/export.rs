//! `mnbackup export SNAPSHOT DIR`: the snapshot's items as plain files under DIR, with mode,
//! owner, group, mtime and symlinks. Everything is checked before anything is written; every
//! file's content is verified before it gets its final name.

use std::path::Path;

use crate::engines::files::{place, Entry, Existing, PlaceOptions};
use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::engines::files::component::{entry_of, RepoContent};
use crate::model::{Item, Manifest};
use crate::repo::Repo;
use crate::ui::bytes;

/// Export the items of `m` selected by `include` prefixes into `dir`.
pub fn export(
    repo: &Repo,
    m: &Manifest,
    dir: &Path,
    include: &[String],
    no_special_bits: bool,
) -> Result<crate::engines::files::PlaceReport> {
    let selected: Vec<&Item> = m
        .items
        .iter()
        .filter(|i| include.is_empty() || include.iter().any(|p| i.name.starts_with(p.as_str())))
        .collect();
    let entries: Vec<Entry> = selected.iter().map(|i| entry_of(i)).collect();
    let content = RepoContent {
        repo,
        items: selected.iter().map(|i| (i.name.clone(), *i)).collect(),
    };
    let r = place(
        &entries,
        dir,
        &content,
        &PlaceOptions {
            existing: Existing::Overwrite,
            allow_outside_symlinks: false,
            absolute_symlinks_as_data: true,
            no_special_bits,
            chown: true,
        },
    )
    .map_err(|e| {
        if e.downcast_ref::<crate::engines::files::Unsafe>().is_some() {
            crate::error::unsafe_content(format!("{e:#}"))
        } else {
            e
        }
    })?;
    Ok(r)
}

pub fn run(
    ctx: &Ctx,
    spec: &str,
    dir: &Path,
    include: &[String],
    no_special_bits: bool,
) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let _lock = repo.lock(false, "export", ctx.lock_wait())?;
    let id = repo.resolve(spec)?;
    let m = repo.load_manifest(&id)?;
    let r = export(&repo, &m, dir, include, no_special_bits)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"snapshot": m.id, "dir": dir, "report": r}))?
        );
    } else {
        ctx.say(format!(
            "exported snapshot {} to {}: {} files ({}), {} directories, {} symlinks",
            m.id,
            dir.display(),
            r.files,
            bytes(r.bytes),
            r.dirs,
            r.symlinks
        ));
    }
    Ok(0)
}
