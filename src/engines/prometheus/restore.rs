//! Restore: blocks from a snapshot's `prometheus/<ulid>/<file>` items into a data directory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{format_ms, is_ulid, BlockFile, PrometheusSourceInfo, SOURCE};

/// Opens one item's bytes (called at most once, only by [`restore`]).
pub type OpenFn<'a> = Box<dyn FnOnce() -> Result<Box<dyn Read + 'a>> + 'a>;

/// One backed-up item of the Prometheus source.
pub struct RestoreFile<'a> {
    /// The item name, `prometheus/<ulid>/<file>`.
    pub item: String,
    pub size: u64,
    pub open: OpenFn<'a>,
}

impl fmt::Debug for RestoreFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreFile")
            .field("item", &self.item)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// One block to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBlock {
    pub ulid: String,
    /// The block's time range (milliseconds since the epoch; end exclusive), from the
    /// snapshot's source info; None when the snapshot did not record it.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    pub num_samples: Option<u64>,
    pub files: Vec<BlockFile>,
}

impl PlannedBlock {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What a restore will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusPlan {
    pub data_dir: PathBuf,
    /// uid and gid the restored files get (applied when running as root).
    pub owner: Option<(u32, u32)>,
    /// Entries already in the data directory (only with `force`).
    pub existing: Vec<String>,
    pub blocks: Vec<PlannedBlock>,
}

impl PrometheusPlan {
    pub fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.bytes()).sum()
    }

    /// The time range the blocks cover (earliest start, latest end), when known.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min = self.blocks.iter().filter_map(|b| b.min_time).min()?;
        let max = self.blocks.iter().filter_map(|b| b.max_time).max()?;
        Some((min, max))
    }

    /// One line per step, for the operator (the plan `restore` prints before acting).
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!(
            "Prometheus: {} block(s), {} bytes, into {}{}",
            self.blocks.len(),
            self.bytes(),
            self.data_dir.display(),
            match self.owner {
                Some((u, g)) => format!(" (owner {u}:{g})"),
                None => String::new(),
            }
        )];
        if let Some((a, b)) = self.time_range() {
            out.push(format!(
                "  samples from {} to {}",
                format_ms(a),
                format_ms(b)
            ));
        }
        if !self.existing.is_empty() {
            out.push(format!(
                "  the directory is not empty (--force): {} stay, blocks of the same id are \
                 replaced",
                self.existing.join(", ")
            ));
        }
        for b in &self.blocks {
            let range = match (b.min_time, b.max_time) {
                (Some(a), Some(z)) => format!("{} .. {}", format_ms(a), format_ms(z)),
                _ => "time range not recorded".into(),
            };
            let samples = b
                .num_samples
                .map(|n| format!(", {n} samples"))
                .unwrap_or_default();
            out.push(format!(
                "  block {}: {range}{samples}, {} file(s), {} bytes",
                b.ulid,
                b.files.len(),
                b.bytes()
            ));
        }
        out
    }
}

/// Split `prometheus/<ulid>/<file>`; None for other names.
fn split_item(item: &str) -> Option<(&str, &str)> {
    let rest = item.strip_prefix(SOURCE)?.strip_prefix('/')?;
    let (ulid, file) = rest.split_once('/')?;
    let safe = !file.is_empty()
        && file
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    (is_ulid(ulid) && safe).then_some((ulid, file))
}

/// Plan restoring `files` (the snapshot's `prometheus/` items, name and size) into `data_dir`.
/// Refuses a non-empty directory unless `force`, a directory a running Prometheus holds in all
/// cases, and a block without its `meta.json`.
pub fn plan(
    info: Option<&PrometheusSourceInfo>,
    files: &[(String, u64)],
    data_dir: &Path,
    owner: Option<(u32, u32)>,
    force: bool,
) -> Result<PrometheusPlan> {
    let mut blocks: BTreeMap<&str, Vec<BlockFile>> = BTreeMap::new();
    for (item, size) in files {
        let Some((ulid, file)) = split_item(item) else {
            bail!("{item} is not a Prometheus block file (prometheus/<ulid>/<file>)");
        };
        blocks.entry(ulid).or_default().push(BlockFile {
            name: file.to_string(),
            size: *size,
        });
    }
    let known: BTreeMap<&str, _> = info
        .map(|i| i.blocks.iter().map(|b| (b.ulid.as_str(), b)).collect())
        .unwrap_or_default();
    let mut planned = Vec::new();
    for (ulid, mut files) in blocks {
        if !files.iter().any(|f| f.name == "meta.json") {
            bail!("the snapshot holds block {ulid} without its meta.json: it cannot be restored");
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let b = known.get(ulid);
        planned.push(PlannedBlock {
            ulid: ulid.to_string(),
            min_time: b.map(|b| b.min_time),
            max_time: b.map(|b| b.max_time),
            num_samples: b.map(|b| b.num_samples),
            files,
        });
    }
    let existing = existing_entries(data_dir)?;
    check_not_running(data_dir)?;
    if !existing.is_empty() && !force {
        bail!(
            "{} is not empty ({}): Prometheus blocks are restored into an empty data directory; \
             stop Prometheus and move the directory aside, or use --force to add the blocks to it",
            data_dir.display(),
            existing.join(", ")
        );
    }
    Ok(PrometheusPlan {
        data_dir: data_dir.to_path_buf(),
        owner,
        existing,
        blocks: planned,
    })
}

fn existing_entries(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let name = e
            .with_context(|| format!("listing {}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != "lost+found" {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Prometheus holds an exclusive `flock` on `<data>/lock` while it runs.
fn check_not_running(dir: &Path) -> Result<()> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join("lock");
    let Ok(f) = File::open(&path) else {
        return Ok(());
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => Ok(()),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "a running Prometheus holds {} (its lock file {} is locked): stop it before restoring",
            dir.display(),
            path.display()
        ),
        Err((_, e)) => Err(e).with_context(|| format!("checking the lock of {}", path.display())),
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusRestoreReport {
    pub blocks: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    /// Whether the files were given the plan's owner (false when not running as root).
    pub chowned: bool,
}

/// Carry out `plan` with the snapshot's `files` (the same items the plan was made from).
/// Each block is written into `<ulid>.tmp-for-creation` (which Prometheus deletes at start, so
/// an interrupted restore leaves nothing it would load), each file as temp + fsync + rename,
/// and renamed to `<ulid>` once complete.
pub fn restore(
    plan: &PrometheusPlan,
    files: Vec<RestoreFile<'_>>,
) -> Result<PrometheusRestoreReport> {
    check_not_running(&plan.data_dir)?;
    let chown = plan.owner.filter(|_| nix::unistd::geteuid().is_root());
    let mut by_block: BTreeMap<String, Vec<RestoreFile<'_>>> = BTreeMap::new();
    for f in files {
        let (ulid, _) = split_item(&f.item)
            .with_context(|| format!("{} is not a Prometheus block file", f.item))?;
        if !plan.blocks.iter().any(|b| b.ulid == ulid) {
            bail!("block {ulid} was given to restore but is not in the plan");
        }
        by_block.entry(ulid.to_string()).or_default().push(f);
    }
    fs::create_dir_all(&plan.data_dir)
        .with_context(|| format!("creating {}", plan.data_dir.display()))?;
    // An empty (or new) directory becomes the Prometheus user's: it writes its head there.
    if plan.existing.is_empty() {
        set_owner(&plan.data_dir, chown)?;
    }
    let mut report = PrometheusRestoreReport {
        blocks: Vec::new(),
        files: 0,
        bytes: 0,
        chowned: chown.is_some(),
    };
    for block in &plan.blocks {
        let files = by_block.remove(&block.ulid).unwrap_or_default();
        let (n, bytes) = restore_block(plan, block, files, chown)
            .with_context(|| format!("restoring Prometheus block {}", block.ulid))?;
        report.blocks.push(block.ulid.clone());
        report.files += n;
        report.bytes += bytes;
    }
    fsync_dir(&plan.data_dir)?;
    Ok(report)
}

fn restore_block(
    plan: &PrometheusPlan,
    block: &PlannedBlock,
    mut files: Vec<RestoreFile<'_>>,
    chown: Option<(u32, u32)>,
) -> Result<(u64, u64)> {
    let staging = plan
        .data_dir
        .join(format!("{}.tmp-for-creation", block.ulid));
    let target = plan.data_dir.join(&block.ulid);
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    set_owner(&staging, chown)?;
    files.sort_by(|a, b| a.item.cmp(&b.item));
    let (mut n, mut bytes) = (0u64, 0u64);
    for f in files {
        let (_, rel) = split_item(&f.item).expect("checked by restore");
        let Some(planned) = block.files.iter().find(|p| p.name == rel) else {
            bail!("{} is not in the plan", f.item);
        };
        let dest = staging.join(rel);
        let parent = dest.parent().expect("inside the staging directory");
        if !parent.exists() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            set_owner(parent, chown)?;
        }
        let written = write_file(&dest, (f.open)()?, chown)?;
        if written != planned.size {
            bail!(
                "{}: {written} bytes read, the snapshot records {}",
                f.item,
                planned.size
            );
        }
        n += 1;
        bytes += written;
    }
    if n != block.files.len() as u64 {
        bail!(
            "{} of the block's {} files were given to restore",
            n,
            block.files.len()
        );
    }
    if target.exists() {
        // Only with --force (plan refuses a non-empty directory otherwise).
        fs::remove_dir_all(&target).with_context(|| format!("replacing {}", target.display()))?;
    }
    fs::rename(&staging, &target)
        .with_context(|| format!("renaming {} to {}", staging.display(), target.display()))?;
    Ok((n, bytes))
}

/// Write `dest` through `<dest>.tmp` (fsync, rename); returns the bytes written.
fn write_file(dest: &Path, mut src: Box<dyn Read + '_>, chown: Option<(u32, u32)>) -> Result<u64> {
    let tmp = dest.with_file_name(format!(
        "{}.tmp",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut out = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let n =
        std::io::copy(&mut src, &mut out).with_context(|| format!("writing {}", tmp.display()))?;
    out.flush()?;
    out.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(out);
    set_owner(&tmp, chown)?;
    fs::rename(&tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(n)
}

fn set_owner(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((u, g)) = owner {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
        )
        .with_context(|| format!("giving {} to {u}:{g}", path.display()))?;
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// uid and gid of a local user (the Prometheus user: `prometheus` on Debian, `zstack` on a
/// ZStack node), None when there is no such user.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "01BKGV7JBM69T2G1BGBGM6KB12";

    #[test]
    fn item_names() {
        assert_eq!(
            split_item(&format!("prometheus/{U}/chunks/000001")),
            Some((U, "chunks/000001"))
        );
        assert_eq!(split_item(&format!("prometheus/{U}/../x")), None);
        assert_eq!(split_item(&format!("prometheus/{U}/")), None);
        assert_eq!(split_item("prometheus/wal/00000001"), None);
        assert_eq!(split_item(&format!("files/{U}/meta.json")), None);
    }

    #[test]
    fn plan_refuses_non_empty_and_blocks_without_meta() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            (format!("prometheus/{U}/meta.json"), 10),
            (format!("prometheus/{U}/index"), 20),
        ];
        let p = plan(None, &files, dir.path(), None, false).unwrap();
        assert_eq!(p.blocks.len(), 1);
        assert_eq!(p.bytes(), 30);
        assert!(p.describe()[1].contains("time range not recorded"));
        fs::write(dir.path().join("queries.active"), b"").unwrap();
        let e = plan(None, &files, dir.path(), None, false).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        let p = plan(None, &files, dir.path(), None, true).unwrap();
        assert_eq!(p.existing, vec!["queries.active".to_string()]);
        let e = plan(None, &files[1..], dir.path(), None, true).unwrap_err();
        assert!(e.to_string().contains("without its meta.json"), "{e}");
    }

    #[test]
    fn a_locked_directory_is_refused_even_with_force() {
        use nix::fcntl::{Flock, FlockArg};
        let dir = tempfile::tempdir().unwrap();
        let lock = File::create(dir.path().join("lock")).unwrap();
        let _held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).unwrap();
        let files = vec![(format!("prometheus/{U}/meta.json"), 1)];
        let e = plan(None, &files, dir.path(), None, true).unwrap_err();
        assert!(e.to_string().contains("running Prometheus"), "{e}");
    }
}
