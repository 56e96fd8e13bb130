//! Placing files back: regular files, directories and symlinks with mode, owner, group and
//! mtime, safely under a target root.
//!
//! Everything is checked before anything is written: every name must be a safe relative path,
//! and (unless allowed) no symlink may point outside the target root. While writing, no path
//! component below the root may be a symlink, so a symlink placed earlier can never redirect a
//! later file outside the root. Files are written to a temporary name, checked, then renamed.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use crate::model::files_info::{decode_name, encode_name, Unsafe};

macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(Unsafe(format!($($arg)*)).into())
    };
}

/// Metadata to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    pub mtime_ns: i64,
}

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One entry to place, named relative to the target root.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative '/'-separated path under the root.
    pub path: String,
    pub kind: Kind,
    pub meta: Option<EntryMeta>,
    pub target: Option<String>,
    pub size: u64,
    /// BLAKE3 of the whole content (files), lowercase hex, when known.
    pub blake3: Option<String>,
}

/// Writes an entry's verified content. Implementations must fail (not write wrong bytes) when
/// the stored content is damaged.
pub trait Content {
    fn write_content(&self, entry: &Entry, out: &mut dyn Write) -> Result<u64>;
}

/// What to do when a file already exists at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Keep it as `NAME.pre-restore` and place the restored file.
    KeepAsPreRestore,
    /// Replace it.
    Overwrite,
}

/// Options for [`place`].
#[derive(Debug, Clone)]
pub struct PlaceOptions {
    pub existing: Existing,
    /// Allow symlinks whose target is absolute or leaves the root (restoring to `/`).
    pub allow_outside_symlinks: bool,
    /// Place symlinks with an absolute target as they are (their text is data, never followed
    /// while placing), e.g. `/etc/localtime -> /usr/share/zoneinfo/...` in an export. Relative
    /// targets that resolve outside the root are still refused.
    pub absolute_symlinks_as_data: bool,
    /// Drop setuid, setgid and sticky bits from modes.
    pub no_special_bits: bool,
    /// Set owner and group (needs root; otherwise skipped).
    pub chown: bool,
}

/// What [`place`] did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PlaceReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Existing files kept as `.pre-restore`.
    pub kept: Vec<String>,
}

/// The filesystem path of an encoded relative path (see [`encode_name`]); a malformed escape
/// gives the text as it is (callers check names with [`check_relative`] first).
pub fn rel_path(rel: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    match decode_name(rel) {
        Ok(b) => PathBuf::from(std::ffi::OsString::from_vec(b)),
        Err(_) => PathBuf::from(rel),
    }
}

fn os_name(name: &str) -> std::ffi::OsString {
    rel_path(name).into_os_string()
}

/// Check a relative entry path: no absolute, empty, `.` or `..` components.
pub fn check_relative(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        refuse!(
            "refusing entry `{}`: not a safe relative path (absolute, empty or `..` component); \
             the snapshot's manifest is malformed or hostile, nothing was written",
            path.escape_debug()
        );
    }
    if decode_name(path)?.contains(&0) {
        refuse!(
            "refusing entry `{}`: NUL byte in a name",
            path.escape_debug()
        );
    }
    Ok(())
}

/// Whether a symlink at `link` (relative to the root) with `target` stays inside the root.
pub fn symlink_stays_inside(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = link.split('/').count() as i64 - 1;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
    }
    true
}

/// Whether the symlink `link` (relative to the root) with `target` resolves to a path outside
/// the root, following the symlinks of the plan (`links`, relative path -> target) and those
/// already on disk under `root`, as the kernel would: a chain of links that each look inside
/// (`a/b/c/d -> ../../..`, `a/b/c/e -> d/../../../../x`) is caught. A chain longer than 40
/// links counts as escaping. Absolute targets anywhere in the chain escape.
pub fn symlink_escapes(
    root: &Path,
    links: &HashMap<String, String>,
    link: &str,
    target: &str,
) -> bool {
    let mut cur: Vec<String> = link.split('/').map(str::to_string).collect();
    cur.pop();
    let mut pending: std::collections::VecDeque<String> =
        target.split('/').map(str::to_string).collect();
    if target.starts_with('/') {
        return true;
    }
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                if cur.pop().is_none() {
                    return true;
                }
            }
            name => {
                cur.push(name.to_string());
                let p = cur.join("/");
                let next = match links.get(&p) {
                    Some(t) => Some(t.clone()),
                    None => match fs::symlink_metadata(root.join(rel_path(&p))) {
                        Ok(md) if md.file_type().is_symlink() => Some(
                            fs::read_link(root.join(rel_path(&p)))
                                .map(|t| {
                                    use std::os::unix::ffi::OsStrExt;
                                    encode_name(t.as_os_str().as_bytes())
                                })
                                .unwrap_or_else(|_| "/".into()),
                        ),
                        _ => None,
                    },
                };
                if let Some(t) = next {
                    hops += 1;
                    if hops > 40 || t.starts_with('/') {
                        return true;
                    }
                    cur.pop();
                    for (i, part) in t.split('/').enumerate() {
                        pending.insert(i, part.to_string());
                    }
                }
            }
        }
    }
    false
}

/// Remove temporaries `.NAME.mnbackup-PID.tmp` that a killed run (its pid is gone) left in `dir`.
fn clean_dead_temps(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_suffix(".tmp") else {
            continue;
        };
        if !name.starts_with('.') {
            continue;
        }
        let Some((_, pid)) = rest.rsplit_once(".mnbackup-") else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if pid <= 0 || pid as u32 == std::process::id() {
            continue;
        }
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone && e.file_type().map(|t| !t.is_dir()).unwrap_or(false) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Create the parents of `rel` under `root`, refusing any component that is a symlink.
fn safe_parent(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        cur.push(os_name(part));
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_dir() => {}
            Ok(_) => refuse!(
                "refusing to write `{rel}`: {} is not a directory (a symlink or file is in the \
                 way; a path may not pass through a symlink)",
                cur.display()
            ),
            Err(_) => {
                fs::create_dir(&cur).with_context(|| format!("creating {}", cur.display()))?
            }
        }
    }
    Ok(cur)
}

fn apply_meta(path: &Path, meta: &EntryMeta, is_link: bool, chown: bool) -> Result<()> {
    if chown && nix::unistd::geteuid().is_root() {
        let uid = meta
            .user
            .as_deref()
            .and_then(|u| nix::unistd::User::from_name(u).ok().flatten())
            .map(|u| u.uid)
            .unwrap_or_else(|| nix::unistd::Uid::from_raw(meta.uid));
        let gid = meta
            .group
            .as_deref()
            .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
            .map(|g| g.gid)
            .unwrap_or_else(|| nix::unistd::Gid::from_raw(meta.gid));
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(uid),
            Some(gid),
            if is_link {
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW
            } else {
                nix::fcntl::AtFlags::empty()
            },
        )
        .with_context(|| format!("setting the owner of {}", path.display()))?;
    }
    if !is_link {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode & 0o7777))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    let t = filetime::FileTime::from_unix_time(
        meta.mtime_ns.div_euclid(1_000_000_000),
        meta.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    if is_link {
        filetime::set_symlink_file_times(path, t, t)
    } else {
        filetime::set_file_times(path, t, t)
    }
    .with_context(|| format!("setting the mtime of {}", path.display()))?;
    Ok(())
}

/// Check every entry (names, symlink targets, paths through links or files) without writing
/// anything.
pub fn preflight(entries: &[Entry], root: &Path, opts: &PlaceOptions) -> Result<()> {
    let mut links: HashMap<String, String> = HashMap::new();
    let mut kinds: HashMap<&str, Kind> = HashMap::new();
    for e in entries {
        check_relative(&e.path)?;
        kinds.insert(e.path.as_str(), e.kind);
        if e.kind == Kind::Symlink {
            links.insert(e.path.clone(), e.target.clone().unwrap_or_default());
        }
    }
    for e in entries {
        // No entry may lie below a symlink or a file of the plan, or below anything on disk
        // under the root that is not a directory.
        let parts: Vec<&str> = e.path.split('/').collect();
        for i in 1..parts.len() {
            let prefix = parts[..i].join("/");
            let in_plan = kinds.get(prefix.as_str()).copied();
            let blocked = match in_plan {
                Some(Kind::Dir) => false,
                Some(_) => true,
                None => fs::symlink_metadata(root.join(rel_path(&prefix)))
                    .map(|md| !md.file_type().is_dir())
                    .unwrap_or(false),
            };
            if blocked {
                refuse!(
                    "refusing entry `{}`: its parent `{prefix}` is a symlink or a file, and a \
                     path may not pass through one; nothing was written",
                    e.path
                );
            }
        }
        if e.kind == Kind::Symlink {
            let t = e.target.as_deref().unwrap_or("");
            if t.is_empty() {
                refuse!(
                    "refusing symlink `{}`: it has no target; the manifest is malformed",
                    e.path
                );
            }
            if decode_name(t)?.contains(&0) {
                refuse!("refusing symlink `{}`: NUL byte in its target", e.path);
            }
            let absolute_ok = t.starts_with('/') && opts.absolute_symlinks_as_data;
            if !opts.allow_outside_symlinks
                && !absolute_ok
                && (!symlink_stays_inside(&e.path, t) || symlink_escapes(root, &links, &e.path, t))
            {
                refuse!(
                    "refusing symlink `{}` -> `{t}`: it points outside the target directory {}; \
                     nothing was written",
                    e.path,
                    root.display()
                );
            }
        }
    }
    Ok(())
}

/// Place entries under `root` (created when missing). Checks everything first.
pub fn place(
    entries: &[Entry],
    root: &Path,
    content: &dyn Content,
    opts: &PlaceOptions,
) -> Result<PlaceReport> {
    preflight(entries, root, opts)?;
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let mut report = PlaceReport::default();
    let mut dirs = Vec::new();
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut cleaned = std::collections::HashSet::new();
    for e in sorted {
        let parent = safe_parent(root, &e.path)?;
        if cleaned.insert(parent.clone()) {
            clean_dead_temps(&parent);
        }
        let name = os_name(e.path.rsplit('/').next().unwrap());
        let dest = parent.join(&name);
        let with = |pre: &str, post: &str| {
            let mut n = std::ffi::OsString::from(pre);
            n.push(&name);
            n.push(post);
            parent.join(n)
        };
        let existing = fs::symlink_metadata(&dest).ok();
        match e.kind {
            Kind::Dir => {
                match &existing {
                    Some(md) if md.file_type().is_dir() => {}
                    Some(_) => bail!("{} exists and is not a directory", dest.display()),
                    None => fs::create_dir(&dest)
                        .with_context(|| format!("creating {}", dest.display()))?,
                }
                report.dirs += 1;
                dirs.push((dest, e));
                continue;
            }
            Kind::File | Kind::Symlink => {}
        }
        if let Some(md) = &existing {
            if md.file_type().is_dir() {
                bail!(
                    "{} is a directory where the snapshot has a file; move it away and rerun",
                    dest.display()
                );
            }
        }
        let tmp = with(".", &format!(".mnbackup-{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        if e.kind == Kind::Symlink {
            symlink(rel_path(e.target.as_deref().unwrap_or("")), &tmp)
                .with_context(|| format!("creating symlink {}", dest.display()))?;
            report.symlinks += 1;
        } else {
            let res = (|| -> Result<u64> {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_private()
                    .open(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
                let n = content.write_content(e, &mut f)?;
                f.sync_all()?;
                Ok(n)
            })();
            match res {
                Ok(n) => {
                    report.bytes += n;
                    report.files += 1;
                }
                Err(err) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(err);
                }
            }
        }
        if let Some(m) = &e.meta {
            let mut m = m.clone();
            if opts.no_special_bits {
                m.mode &= 0o777;
            }
            if let Err(err) = apply_meta(&tmp, &m, e.kind == Kind::Symlink, opts.chown) {
                let _ = fs::remove_file(&tmp);
                return Err(err);
            }
        }
        if existing.is_some() {
            match opts.existing {
                Existing::KeepAsPreRestore => {
                    let keep = with("", ".pre-restore");
                    fs::rename(&dest, &keep)
                        .with_context(|| format!("keeping {}", dest.display()))?;
                    report.kept.push(keep.display().to_string());
                }
                Existing::Overwrite => {}
            }
        }
        fs::rename(&tmp, &dest).with_context(|| format!("placing {}", dest.display()))?;
    }
    // Directory metadata last (placing files changes a directory's mtime), deepest first.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (d, e) in dirs {
        if let Some(m) = &e.meta {
            let mut m = m.clone();
            if opts.no_special_bits {
                m.mode &= 0o777;
            }
            apply_meta(&d, &m, false, opts.chown)?;
        }
    }
    Ok(report)
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}
impl PrivateMode for fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_containment() {
        assert!(symlink_stays_inside("a/b/link", "../c"));
        assert!(symlink_stays_inside("a/link", "b/c"));
        assert!(!symlink_stays_inside("a/link", "../../etc/passwd"));
        assert!(!symlink_stays_inside("link", "/etc/passwd"));
        assert!(!symlink_stays_inside("link", ".."));
    }

    #[test]
    fn rejects_traversal() {
        for bad in ["../../etc/passwd", "/etc/passwd", "a/../b", "", "a//b"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
        assert!(check_relative("files/etc/my.cnf").is_ok());
    }
}
