//! Issue 12 item 6: a file that vanishes during the walk is a gap, not an aborted snapshot; a
//! file that changes while read is read again, and recorded as a gap only if it changes again.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mnbackup::model::{Gap, Manifest};
use mnbackup::model::{ItemSink, ItemSpec};
use mnbackup::repo::codec::{CodecPolicy, SigCache};
use mnbackup::repo::writer::SnapshotWriter;
use mnbackup::repo::Repo;

type Hook<'a> = Box<dyn FnMut(&str) + Send + 'a>;

/// Delegates to the real writer; runs `hook` before each file's content is read.
struct Hostile<'a> {
    inner: &'a SnapshotWriter,
    hook: Mutex<Hook<'a>>,
}

impl ItemSink for Hostile<'_> {
    fn put_reader(&self, spec: ItemSpec, reader: &mut dyn Read) -> anyhow::Result<()> {
        (self.hook.lock().unwrap())(&spec.name);
        self.inner.put_reader(spec, reader)
    }
    fn put_entry(&self, spec: ItemSpec) -> anyhow::Result<()> {
        self.inner.put_entry(spec)
    }
    fn set_source_info(&self, s: &str, v: serde_json::Value) {
        self.inner.set_source_info(s, v)
    }
    fn gap(&self, g: Gap) {
        self.inner.gap(g)
    }
    fn retract(&self, name: &str) -> bool {
        self.inner.retract(name)
    }
    fn parent_source_info(&self, s: &str) -> Option<serde_json::Value> {
        self.inner.parent_source_info(s)
    }
    fn put_unchanged(&self, spec: ItemSpec, size: u64) -> anyhow::Result<bool> {
        self.inner.put_unchanged(spec, size)
    }
}

fn run(src: &Path, hook: Hook<'_>) -> (Manifest, Repo) {
    let t = src.parent().unwrap().join("repo");
    let (repo, _) = Repo::init(&t).unwrap();
    let m = run_on(&repo, None, src, false, hook);
    (m, repo)
}

/// One files snapshot of `src` into `repo` (with `parent` as the writer's parent).
fn run_on(
    repo: &Repo,
    parent: Option<Manifest>,
    src: &Path,
    force_read: bool,
    hook: Hook<'_>,
) -> Manifest {
    let w = SnapshotWriter::new(
        repo.clone(),
        CodecPolicy::default(),
        SigCache::default(),
        parent,
        None,
    )
    .unwrap();
    let h = Hostile {
        inner: &w,
        hook: Mutex::new(hook),
    };
    let sum =
        mnbackup::engines::files::backup(&[], &[src.to_path_buf()], &h, None, force_read).unwrap();
    h.set_source_info("files", serde_json::to_value(&sum).unwrap());
    drop(h);
    w.commit("h".into(), "manual".into(), vec![]).unwrap()
}

/// Issue 19 item 2: a file whose size, mtime, ctime and inode match the parent snapshot's record
/// is reused without reading it; one with the same size and mtime but another ctime (its content
/// rewritten and its mtime set back) is read; `--force-read` reads everything.
#[test]
fn unchanged_files_are_not_read() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let same = src.join("same.conf");
    let sneaky = src.join("sneaky.conf");
    fs::write(&same, "unchanged content\n").unwrap();
    fs::write(&sneaky, "first  content\n").unwrap();
    let (repo, _) = Repo::init(&t.path().join("repo")).unwrap();
    let reads = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let counter = |r: &std::sync::Arc<Mutex<Vec<String>>>| -> Hook<'static> {
        let r = r.clone();
        Box::new(move |n: &str| r.lock().unwrap().push(n.to_string()))
    };
    let m1 = run_on(&repo, None, &src, false, counter(&reads));
    assert_eq!(
        reads.lock().unwrap().len(),
        2,
        "{:?}",
        reads.lock().unwrap()
    );

    // Same size and mtime, other content: only the ctime (and the content) tells.
    let mtime = fs::metadata(&sneaky).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&sneaky, "second content\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&sneaky)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&sneaky).unwrap().modified().unwrap(), mtime);

    reads.lock().unwrap().clear();
    let m2 = run_on(&repo, Some(m1), &src, false, counter(&reads));
    let read = reads.lock().unwrap().clone();
    assert_eq!(read, [mnbackup::engines::files::item_name(&sneaky)]);
    assert_eq!(content(&repo, &m2, &same), b"unchanged content\n");
    assert_eq!(content(&repo, &m2, &sneaky), b"second content\n");
    let sum: mnbackup::engines::files::FilesSummary =
        serde_json::from_value(m2.sources["files"].clone()).unwrap();
    assert_eq!((sum.files, sum.unchanged), (2, 1));

    reads.lock().unwrap().clear();
    let m3 = run_on(&repo, Some(m2.clone()), &src, false, counter(&reads));
    assert!(
        reads.lock().unwrap().is_empty(),
        "{:?}",
        reads.lock().unwrap()
    );
    assert_eq!(content(&repo, &m3, &sneaky), b"second content\n");

    reads.lock().unwrap().clear();
    run_on(&repo, Some(m3), &src, true, counter(&reads));
    assert_eq!(reads.lock().unwrap().len(), 2);
}

fn content(repo: &Repo, m: &Manifest, path: &Path) -> Vec<u8> {
    let item =
        mnbackup::repo::reader::find_item(m, &mnbackup::engines::files::item_name(path)).unwrap();
    mnbackup::repo::reader::read_item(repo, item).unwrap()
}

#[test]
fn vanished_file_is_a_gap_not_a_failure() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("logs");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.log"), b"first").unwrap();
    fs::write(src.join("b.log"), b"rotated away").unwrap();
    fs::write(src.join("c.log"), b"third").unwrap();
    let b: PathBuf = src.join("b.log");
    let (m, repo) = run(
        &src,
        Box::new(move |name| {
            if name.ends_with("a.log") {
                let _ = fs::remove_file(&b);
            }
        }),
    );
    assert!(!m.complete);
    assert_eq!(m.gaps.len(), 1, "{:?}", m.gaps);
    assert_eq!(m.gaps[0].source, "files");
    assert_eq!(m.gaps[0].kind, "file");
    assert!(m.gaps[0].subject.as_deref().unwrap().ends_with("b.log"));
    assert_eq!(content(&repo, &m, &src.join("c.log")), b"third");
}

#[test]
fn file_changed_during_read_is_read_again() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("d");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("app.log");
    fs::write(&f, b"line 1\n").unwrap();
    let mut n = 0;
    let f2 = f.clone();
    let (m, repo) = run(
        &src,
        Box::new(move |_| {
            n += 1;
            if n == 1 {
                // Written while the first read happens (after open, before the end).
                std::thread::sleep(std::time::Duration::from_millis(20));
                fs::write(&f2, b"line 1\nline 2\n").unwrap();
            }
        }),
    );
    assert!(m.complete, "{:?}", m.gaps);
    assert_eq!(content(&repo, &m, &f), b"line 1\nline 2\n");
    assert_eq!(
        m.items
            .iter()
            .filter(|i| i.name.ends_with("app.log"))
            .count(),
        1
    );
}

#[test]
fn file_changing_on_every_read_is_a_gap() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("d");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("busy.db");
    fs::write(&f, b"v0").unwrap();
    let mut n = 0;
    let f2 = f.clone();
    let (m, _repo) = run(
        &src,
        Box::new(move |_| {
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
            fs::write(&f2, format!("version {n} with more bytes")).unwrap();
        }),
    );
    assert!(!m.complete);
    assert_eq!(m.gaps.len(), 1, "{:?}", m.gaps);
    assert!(m.gaps[0].reason.contains("changed while it was read"));
    assert_eq!(
        m.items
            .iter()
            .filter(|i| i.name.ends_with("busy.db"))
            .count(),
        1
    );
}
