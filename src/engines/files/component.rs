//! The files component: `[[files]]` paths and `--files` backed up under `files/`, restored under
//! `--files-root` (an existing different file is kept as `NAME.pre-restore`, or replaced with
//! `--force`; identical ones are left alone).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engines::files::{place, Content, Entry, EntryMeta, Existing, Kind, PlaceOptions};
use anyhow::Result;
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{estimate_secs, human_bytes, Check, CheckStatus, PlanStep, FILE_RATE};
use mnbackup_restore::report::{RestoreReport, StepReport, StepStatus};

use crate::engines::Sections;
use crate::engines::{
    BackupCtx, CheckKind, Component, PartOutcome, Preflight, RestoreEnv, RestorePart,
};
use crate::model::ItemSink;
use crate::model::{EntryKind, Item};
use crate::repo::reader::write_item;
use crate::repo::Repo;

/// The files component.
pub struct Files;

pub const NAME: &str = "files";

impl Component for Files {
    fn name(&self) -> &str {
        NAME
    }
    fn title(&self) -> &str {
        "the files"
    }
    fn restore_rank(&self) -> u32 {
        20
    }
    fn enabled(&self, ctx: &BackupCtx) -> bool {
        !ctx.config.files().is_empty() || !ctx.extra_files.is_empty()
    }
    fn backup(&self, ctx: &BackupCtx, sink: Arc<dyn ItemSink>) -> Result<String> {
        let sum = crate::engines::files::backup(
            ctx.config.files(),
            ctx.extra_files,
            sink.as_ref(),
            ctx.cancel,
            ctx.force_read,
        )?;
        sink.set_source_info(NAME, serde_json::to_value(&sum)?);
        Ok(String::new())
    }
    fn has_data(&self, m: &crate::model::Manifest) -> bool {
        m.items.iter().any(|i| i.name.starts_with("files/"))
    }
    fn restore(&self, env: &RestoreEnv) -> Result<Option<Box<dyn RestorePart>>> {
        let items: Vec<Item> = env
            .manifest
            .items
            .iter()
            .filter(|i| i.name.starts_with("files/"))
            .cloned()
            .collect();
        if items.is_empty() {
            return Ok(None);
        }
        Ok(Some(Box::new(FilesPart {
            entries: file_entries(&items),
            items,
            root: env.req.files_root.clone(),
            existing: Vec::new(),
        })))
    }
}

/// The restore of the files of one snapshot.
struct FilesPart {
    items: Vec<Item>,
    entries: Vec<(Entry, String)>,
    root: PathBuf,
    /// Files that exist and differ (kept as .pre-restore, or replaced with --force).
    existing: Vec<PathBuf>,
}

impl RestorePart for FilesPart {
    fn items(&self) -> Vec<&Item> {
        self.items.iter().collect()
    }

    fn preflight(&mut self, env: &RestoreEnv, _journal: &Journal) -> Result<Vec<Preflight>> {
        let root = &self.root;
        let mut checks = Vec::new();
        let mut need = 0u64;
        self.existing.clear();
        for (e, _) in &self.entries {
            if already_there(root, e) {
                continue;
            }
            if exists_nondir(root, e) {
                self.existing
                    .push(root.join(crate::engines::files::rel_path(&e.path)));
            }
            need += e.size;
        }
        checks.push(match free_space(root) {
            Some((p, free)) if free < need + (64 << 20) => Preflight::new(Check::new(
                "disk space",
                CheckStatus::Fail,
                format!(
                    "{} needs {} for files but only {} is free on {}; free space or choose \
                     another --files-root",
                    root.display(),
                    human_bytes(need),
                    human_bytes(free),
                    p.display()
                ),
            ))
            .kind(CheckKind::NoSpace),
            Some((p, free)) => Preflight::new(Check::new(
                "disk space",
                CheckStatus::Ok,
                format!(
                    "files need {}, {} free on {}",
                    human_bytes(need),
                    human_bytes(free),
                    p.display()
                ),
            )),
            None => Preflight::new(Check::new(
                "disk space",
                CheckStatus::Warn,
                format!("cannot check the free space under {}", root.display()),
            )),
        });
        if !self.existing.is_empty() {
            checks.push(Preflight::new(Check::new(
                "existing files",
                CheckStatus::Warn,
                format!(
                    "{} files exist under {} and differ from the snapshot: {}",
                    self.existing.len(),
                    root.display(),
                    if env.req.force {
                        "--force replaces them (after the safety snapshot)"
                    } else {
                        "each is kept as NAME.pre-restore"
                    }
                ),
            )));
        }
        Ok(checks)
    }

    fn plan(&self, env: &RestoreEnv, journal: &Journal) -> Result<Vec<PlanStep>> {
        let entries = &self.entries;
        let bytes: u64 = entries.iter().map(|e| e.0.size).sum();
        let same = entries
            .iter()
            .filter(|e| already_there(&self.root, &e.0))
            .count();
        Ok(vec![PlanStep {
            step: NAME.into(),
            what: format!(
                "{} entries ({} already identical there){}",
                entries.len(),
                same,
                if env.req.force {
                    ", replacing different ones"
                } else {
                    ", different ones kept as .pre-restore"
                }
            ),
            destination: self.root.display().to_string(),
            items: entries.len(),
            bytes,
            rows: None,
            estimate_secs: estimate_secs(bytes, FILE_RATE),
            skipped: (journal.resumed && journal.step_done(NAME))
                .then(|| "done by the interrupted run".into()),
        }])
    }

    fn safety_scope(&self, cfg: &mut dyn Sections, paths: &mut Vec<PathBuf>) -> Option<String> {
        if self.existing.is_empty() {
            return None;
        }
        cfg.set_files(vec![]);
        paths.extend(self.existing.iter().cloned());
        Some(format!("files: {}", self.existing.len()))
    }

    fn run(
        &mut self,
        env: &RestoreEnv,
        journal: &Arc<Mutex<Journal>>,
        finished: &str,
        report: &mut RestoreReport,
    ) -> Result<PartOutcome> {
        let step = self.place(env, journal, finished)?;
        report.steps.push(step);
        Ok(PartOutcome::default())
    }
}

impl FilesPart {
    fn place(
        &self,
        env: &RestoreEnv,
        journal: &Arc<Mutex<Journal>>,
        finished: &str,
    ) -> Result<StepReport> {
        let t0 = Instant::now();
        let root = &self.root;
        if journal.lock().expect("journal").step_done(NAME) {
            return Ok(StepReport::new(NAME, StepStatus::AlreadyDone));
        }
        let by_name: HashMap<&str, &Item> =
            self.items.iter().map(|i| (i.name.as_str(), i)).collect();
        let todo: Vec<Entry> = self
            .entries
            .iter()
            .filter(|(e, _)| e.kind == Kind::Dir || !already_there(root, e))
            .map(|(e, _)| e.clone())
            .collect();
        let same = self.entries.len() - todo.len();
        let content = RepoContent {
            repo: env.repo,
            items: self
                .entries
                .iter()
                .filter_map(|(e, n)| by_name.get(n.as_str()).map(|i| (e.path.clone(), *i)))
                .collect(),
        };
        let is_slash = root
            .canonicalize()
            .map(|p| p == Path::new("/"))
            .unwrap_or(false);
        let opts = PlaceOptions {
            existing: if env.req.force {
                Existing::Overwrite
            } else {
                Existing::KeepAsPreRestore
            },
            allow_outside_symlinks: is_slash,
            absolute_symlinks_as_data: true,
            no_special_bits: false,
            chown: true,
        };
        let r = place(&todo, root, &content, &opts).map_err(|e| {
            if e.downcast_ref::<crate::engines::files::Unsafe>().is_some() {
                crate::error::unsafe_content(format!(
                    "restoring files under {}: {e:#}",
                    root.display()
                ))
            } else {
                e.context(format!(
                    "restoring files under {} {finished}",
                    root.display()
                ))
            }
        })?;
        journal.lock().expect("journal").mark_step(NAME)?;
        let mut s = StepReport::new(NAME, StepStatus::Done);
        s.items = (r.files + r.dirs + r.symlinks) as usize;
        s.bytes = r.bytes;
        s.duration_ms = t0.elapsed().as_millis() as u64;
        let mut note = format!(
            "{} files, {} directories, {} symlinks under {}",
            r.files,
            r.dirs,
            r.symlinks,
            root.display()
        );
        if same > 0 {
            note.push_str(&format!("; {same} already identical, left alone"));
        }
        if !r.kept.is_empty() {
            note.push_str(&format!(
                "; {} existing files kept as .pre-restore (e.g. {})",
                r.kept.len(),
                r.kept[0]
            ));
        }
        Ok(s.note(note))
    }
}

/// Content of manifest items, verified while written.
pub struct RepoContent<'a> {
    pub repo: &'a Repo,
    pub items: HashMap<String, &'a Item>,
}

impl Content for RepoContent<'_> {
    fn write_content(&self, entry: &Entry, out: &mut dyn Write) -> Result<u64> {
        let item = self
            .items
            .get(&entry.path)
            .ok_or_else(|| anyhow::anyhow!("internal error: no item {}", entry.path))?;
        write_item(self.repo, item, out)
    }
}

/// Convert a manifest item to a placement entry (same relative path).
pub fn entry_of(item: &Item) -> Entry {
    Entry {
        path: item.name.clone(),
        kind: match item.kind {
            EntryKind::File => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink => Kind::Symlink,
        },
        meta: item.meta.as_ref().map(|m| EntryMeta {
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            user: m.user.clone(),
            group: m.group.clone(),
            mtime_ns: m.mtime_ns,
        }),
        target: item.target.clone(),
        size: item.size,
        blake3: Some(item.blake3.clone()),
    }
}

/// Free bytes for unprivileged writes on the filesystem holding `path` (or its nearest existing
/// ancestor).
fn free_space(path: &Path) -> Option<(PathBuf, u64)> {
    let mut p = path.to_path_buf();
    loop {
        if p.exists() {
            let s = nix::sys::statvfs::statvfs(&p).ok()?;
            return Some((p, s.blocks_available() as u64 * s.fragment_size() as u64));
        }
        if !p.pop() {
            return None;
        }
    }
}

/// Whether the destination of a file entry already holds exactly it (same size, mode, mtime and
/// content hash for files, same target for symlinks): such entries are left alone.
fn already_there(root: &Path, e: &Entry) -> bool {
    let p = root.join(crate::engines::files::rel_path(&e.path));
    let Ok(md) = std::fs::symlink_metadata(&p) else {
        return false;
    };
    match e.kind {
        Kind::Dir => md.is_dir(),
        Kind::Symlink => {
            md.file_type().is_symlink()
                && std::fs::read_link(&p).ok().is_some_and(|t| {
                    use std::os::unix::ffi::OsStrExt;
                    Some(crate::engines::files::encode_name(t.as_os_str().as_bytes()).as_str())
                        == e.target.as_deref()
                })
        }
        Kind::File => {
            md.is_file()
                && md.len() == e.size
                && e.meta.as_ref().is_some_and(|m| {
                    (md.permissions().mode() & 0o7777) == (m.mode & 0o7777)
                        && md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128
                            == m.mtime_ns as i128
                })
                // Equal metadata does not prove equal content (a file rewritten with its old
                // mtime): compare the content hash the manifest records.
                && e.blake3.as_deref().is_some_and(|want| {
                    let mut h = blake3::Hasher::new();
                    std::fs::File::open(&p)
                        .and_then(|mut f| std::io::copy(&mut f, &mut h))
                        .is_ok_and(|n| n == e.size)
                        && h.finalize().to_hex().as_str() == want
                })
        }
    }
}

fn exists_nondir(root: &Path, e: &Entry) -> bool {
    e.kind != Kind::Dir
        && std::fs::symlink_metadata(root.join(crate::engines::files::rel_path(&e.path))).is_ok()
}

/// The file entries of a snapshot relative to the files root (`files/etc/x` → `etc/x`).
fn file_entries(items: &[Item]) -> Vec<(Entry, String)> {
    items
        .iter()
        .filter_map(|i| {
            let rel = i.name.strip_prefix("files/")?;
            let mut e = entry_of(i);
            e.path = rel.to_string();
            Some((e, i.name.clone()))
        })
        .collect()
}
