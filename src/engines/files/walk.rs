//! The files source: the files that make the node what it is (zstack.properties, the ansible
//! key, inventory, UI properties, license, HA config, MariaDB config), with mode, owner, group,
//! mtime and symlinks.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::MnError;
use crate::model::files_info::{FileStat, FilesSummary};
use crate::model::{EntryKind, Gap};
use crate::model::{ItemSink, ItemSpec};

/// `[[files]]`: paths (files, directories or globs) to back up.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Absolute paths or glob patterns; directories are taken recursively.
    pub paths: Vec<String>,
    /// Glob patterns of paths to leave out (matched against the absolute path).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// When true, a path that matches nothing is an error; otherwise it is reported and skipped
    /// (a node without HA has no ha.yaml).
    #[serde(default)]
    pub required: bool,
}

/// The item name of an absolute path: `files/<path without the leading />`.
/// Names are bytes on Linux: they are stored exactly (see
/// [`super::place::encode_name`]: a backslash is `\\`, a byte outside UTF-8 `\xHH`).
pub fn item_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let b = path.as_os_str().as_bytes();
    let start = b.iter().position(|&c| c != b'/').unwrap_or(b.len());
    format!("files/{}", super::place::encode_name(&b[start..]))
}

pub use crate::model::files_info::file_meta;

fn expand(pattern: &str) -> Result<Vec<PathBuf>> {
    if !pattern.starts_with('/') {
        return Err(MnError::Usage(format!(
            "[[files]] path `{pattern}` is not absolute; give the full path (e.g. /etc/my.cnf)"
        ))
        .into());
    }
    let has_glob = pattern.contains(['*', '?', '[']);
    if !has_glob {
        let p = PathBuf::from(pattern);
        return Ok(if fs::symlink_metadata(&p).is_ok() {
            vec![p]
        } else {
            vec![]
        });
    }
    let mut out = Vec::new();
    for entry in glob::glob(pattern).map_err(|e| {
        MnError::Usage(format!(
            "[[files]] pattern `{pattern}` is not a valid glob: {e}"
        ))
    })? {
        out.push(entry.with_context(|| format!("expanding `{pattern}`"))?);
    }
    Ok(out)
}

/// Back up the configured paths plus `extra` (from `snapshot --files`; those must exist).
/// `cancel` (set on SIGTERM) stops the walk between two files.
///
/// A regular file whose size, mtime, ctime and inode match the parent snapshot's record
/// ([`FilesSummary::stat`]) is recorded as unchanged without reading it, unless `force_read`.
pub fn backup(
    configs: &[FilesConfig],
    extra: &[PathBuf],
    sink: &dyn ItemSink,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    force_read: bool,
) -> Result<FilesSummary> {
    let mut sum = FilesSummary::default();
    let parent = if force_read {
        Default::default()
    } else {
        sink.parent_source_info("files")
            .and_then(|v| serde_json::from_value::<FilesSummary>(v).ok())
            .map(|s| s.stat)
            .unwrap_or_default()
    };
    let mut roots: Vec<(PathBuf, Vec<glob::Pattern>)> = Vec::new();
    for c in configs {
        let excludes = c
            .exclude
            .iter()
            .map(|e| {
                glob::Pattern::new(e).map_err(|err| {
                    MnError::Usage(format!(
                        "[[files]] exclude `{e}` is not a valid glob: {err}"
                    ))
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for p in &c.paths {
            let found = expand(p)?;
            if found.is_empty() {
                if c.required {
                    return Err(MnError::Usage(format!(
                        "[[files]] path `{p}` matches nothing and is marked required; check the \
                         path or set required = false"
                    ))
                    .into());
                }
                tracing::warn!("files: `{p}` matches nothing; skipped");
                sum.missing.push(p.clone());
            }
            for f in found {
                roots.push((f, excludes.clone()));
            }
        }
    }
    for e in extra {
        let abs = if e.is_absolute() {
            e.clone()
        } else {
            std::env::current_dir()?.join(e)
        };
        if fs::symlink_metadata(&abs).is_err() {
            return Err(MnError::Usage(format!(
                "--files {}: no such file or directory",
                e.display()
            ))
            .into());
        }
        roots.push((abs, Vec::new()));
    }
    // Several roots may overlap (a directory and a file inside it): each path is taken once.
    let mut seen = std::collections::HashSet::new();
    for (root, excludes) in roots {
        let walker = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let msg = format!("{e}");
                    let subject = e
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| root.display().to_string());
                    let vanished = e
                        .io_error()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
                    if vanished {
                        sink.gap(vanished_gap(&subject));
                    } else {
                        sink.gap(unreadable_gap(&subject, &msg));
                    }
                    sum.skipped.push(msg);
                    continue;
                }
            };
            let path = entry.path().to_path_buf();
            if excludes.iter().any(|x| x.matches_path(&path)) {
                continue;
            }
            if !seen.insert(path.clone()) {
                continue;
            }
            if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst)) {
                anyhow::bail!("cancelled while backing up files (shutdown requested)");
            }
            put_path(&path, sink, &mut sum, &parent)?;
        }
    }
    Ok(sum)
}

fn vanished_gap(path: &str) -> Gap {
    Gap::new(
        "files",
        "file",
        "it disappeared between listing and reading (e.g. log rotation)",
    )
    .subject(path)
    .fix("nothing to do if the removal was intended; otherwise restore it and take a snapshot")
}

fn unreadable_gap(path: &str, why: &str) -> Gap {
    Gap::new("files", "file", format!("it could not be read: {why}"))
        .subject(path)
        .fix("make it readable by the backup user (root), or exclude it in [[files]] exclude")
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

fn changed(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() != b.len()
        || a.mtime() != b.mtime()
        || a.mtime_nsec() != b.mtime_nsec()
        || a.ino() != b.ino()
        || a.dev() != b.dev()
}

/// What tells an unchanged file: size, mtime, ctime, inode.
pub fn file_stat(md: &fs::Metadata) -> FileStat {
    FileStat(
        md.len(),
        md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        md.ino(),
    )
}

/// Record a file whose stat matches the parent snapshot's as unchanged (not read). Returns
/// false when it must be read.
fn put_if_unchanged(
    name: &str,
    md: &fs::Metadata,
    sink: &dyn ItemSink,
    sum: &mut FilesSummary,
    parent: &std::collections::BTreeMap<String, FileStat>,
) -> Result<bool> {
    let stat = file_stat(md);
    if parent.get(name) != Some(&stat) {
        return Ok(false);
    }
    let spec = ItemSpec {
        name: name.to_string(),
        kind: EntryKind::File,
        meta: Some(file_meta(md)),
        target: None,
        delta: true,
    };
    if !sink.put_unchanged(spec, md.len())? {
        return Ok(false);
    }
    sum.files += 1;
    sum.unchanged += 1;
    sum.bytes += md.len();
    sum.stat.insert(name.to_string(), stat);
    Ok(true)
}

fn put_path(
    path: &Path,
    sink: &dyn ItemSink,
    sum: &mut FilesSummary,
    parent: &std::collections::BTreeMap<String, FileStat>,
) -> Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if is_not_found(&e) => {
            sink.gap(vanished_gap(&path.display().to_string()));
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let name = item_name(path);
    let meta = Some(file_meta(&md));
    let ft = md.file_type();
    if ft.is_dir() {
        sum.dirs += 1;
        sink.put_entry(ItemSpec {
            name,
            kind: EntryKind::Dir,
            meta,
            target: None,
            delta: false,
        })
    } else if ft.is_symlink() {
        let target = match fs::read_link(path) {
            Ok(t) => t,
            Err(e) if is_not_found(&e) => {
                sink.gap(vanished_gap(&path.display().to_string()));
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("reading link {}", path.display())),
        };
        sum.symlinks += 1;
        sink.put_entry(ItemSpec {
            name,
            kind: EntryKind::Symlink,
            meta,
            target: Some({
                use std::os::unix::ffi::OsStrExt;
                super::place::encode_name(target.as_os_str().as_bytes())
            }),
            delta: false,
        })
    } else if ft.is_file() {
        if put_if_unchanged(&name, &md, sink, sum, parent)? {
            return Ok(());
        }
        // A file that changes while it is read is read once more; if it changes again, the
        // second copy is kept and recorded as a gap (it may be inconsistent).
        for attempt in 0..2 {
            let mut f = match fs::File::open(path) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => {
                    sink.gap(vanished_gap(&path.display().to_string()));
                    return Ok(());
                }
                Err(e) => {
                    let msg = format!("{}: {e}", path.display());
                    sink.gap(unreadable_gap(&path.display().to_string(), &e.to_string()));
                    sum.skipped.push(msg);
                    return Ok(());
                }
            };
            let before = f
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            sink.put_reader(
                ItemSpec {
                    name: name.clone(),
                    kind: EntryKind::File,
                    meta: Some(file_meta(&before)),
                    target: None,
                    delta: true,
                },
                &mut f,
            )?;
            let after_open = f.metadata().ok();
            let after_path = fs::symlink_metadata(path);
            let moved = match &after_path {
                // Removed after it was read: what was read is a whole copy.
                Err(e) if is_not_found(e) => false,
                Ok(a) => changed(&before, a),
                Err(_) => false,
            };
            let is_changed = moved || after_open.as_ref().is_some_and(|a| changed(&before, a));
            if !is_changed {
                sum.files += 1;
                sum.bytes += before.len();
                sum.stat.insert(name.clone(), file_stat(&before));
                return Ok(());
            }
            if attempt == 0 && sink.retract(&name) {
                tracing::info!(
                    "files: {} changed while read; reading it again",
                    path.display()
                );
                continue;
            }
            sum.files += 1;
            sum.bytes += before.len();
            sum.changed_during_read.push(path.display().to_string());
            sink.gap(
                Gap::new(
                    "files",
                    "file",
                    "it changed while it was read, twice; the stored copy may be inconsistent",
                )
                .subject(path.display().to_string())
                .fix("exclude files that are always being written, or back them up another way"),
            );
            return Ok(());
        }
        Ok(())
    } else {
        let msg = format!(
            "{}: not a regular file, directory or symlink",
            path.display()
        );
        tracing::warn!("files: {msg}; skipped");
        sum.skipped.push(msg);
        Ok(())
    }
}
