//! `mnbackup export SNAPSHOT DIR`: the snapshot's items as plain files under DIR, with mode,
//! owner, group, mtime and symlinks. Everything is checked before anything is written; every
//! file's content is verified before it gets its final name.

use std::io::Write;
use std::path::Path;

use crate::engines::files::place::Content;
use crate::engines::files::{place, Entry, Existing, PlaceOptions};
use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::engines::files::component::{entry_of, RepoContent};
use crate::model::{Item, Manifest};
use crate::ops::progress::{NoProgress, Progress};
use crate::repo::Repo;
use crate::ui::bytes;

/// The files' content, each written byte reported to a [`Progress`].
struct Reporting<'a> {
    inner: RepoContent<'a>,
    progress: &'a dyn Progress,
}

/// A writer that reports the bytes it passes on.
struct Counted<'a> {
    out: &'a mut dyn Write,
    progress: &'a dyn Progress,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Content for Reporting<'_> {
    fn write_content(&self, entry: &Entry, out: &mut dyn Write) -> Result<u64> {
        let mut c = Counted {
            out,
            progress: self.progress,
        };
        self.inner.write_content(entry, &mut c)
    }
}

/// Export the items of `m` selected by `include` prefixes into `dir`.
pub fn export(
    repo: &Repo,
    m: &Manifest,
    dir: &Path,
    include: &[String],
    no_special_bits: bool,
) -> Result<crate::engines::files::PlaceReport> {
    export_with_progress(repo, m, dir, include, no_special_bits, &NoProgress)
}

/// [`export`], the bytes written reported to `progress` (one step: the selected items' size).
pub fn export_with_progress(
    repo: &Repo,
    m: &Manifest,
    dir: &Path,
    include: &[String],
    no_special_bits: bool,
    progress: &dyn Progress,
) -> Result<crate::engines::files::PlaceReport> {
    let selected: Vec<&Item> = m
        .items
        .iter()
        .filter(|i| include.is_empty() || include.iter().any(|p| i.name.starts_with(p.as_str())))
        .collect();
    let entries: Vec<Entry> = selected.iter().map(|i| entry_of(i)).collect();
    let total: u64 = selected
        .iter()
        .filter(|i| i.kind == crate::model::EntryKind::File)
        .map(|i| i.size)
        .sum();
    progress.phase(
        &format!("export: {} items of snapshot {}", selected.len(), m.id),
        Some(total),
    );
    let content = Reporting {
        inner: RepoContent {
            repo,
            items: selected.iter().map(|i| (i.name.clone(), *i)).collect(),
        },
        progress,
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
    let progress = crate::ui::StepProgress::new(ctx.quiet || ctx.json, ctx.json);
    let r = export_with_progress(&repo, &m, dir, include, no_special_bits, &progress);
    progress.finish();
    let r = r?;
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
