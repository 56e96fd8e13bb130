//! Issue 12 items 7, 8, 9, 11 and 12: a hostile pool (anyone who can write to the NFS export)
//! cannot make mnbackup write or delete outside the target or the pool, hang, or allocate without
//! bound.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng(9);
    fs::write(src.join("a.txt"), text(&mut rng, 30_000)).unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init", "--no-packs"]);
    ok(
        &repo,
        &["snapshot", "--only-files", "--files", src.to_str().unwrap()],
    );
    (t, repo, src)
}

/// A directory outside the pool with files that must survive.
fn victim(t: &Path) -> std::path::PathBuf {
    let v = t.join("victim");
    fs::create_dir_all(&v).unwrap();
    fs::write(v.join("keep.txt"), b"precious").unwrap();
    fs::write(v.join("keep.json"), b"{}").unwrap();
    v
}

fn victim_intact(v: &Path) {
    let mut names: Vec<_> = fs::read_dir(v)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["keep.json", "keep.txt"],
        "the victim directory changed"
    );
    assert_eq!(fs::read(v.join("keep.txt")).unwrap(), b"precious");
}

/// Item 7: symlinked tmp/, locks/ or an objects subdirectory make every command refuse (exit 6)
/// without touching the target.
#[test]
fn symlinked_layout_directories_are_refused() {
    for dir in ["tmp", "locks", "snapshots", "objects/00"] {
        let (t, repo, src) = setup();
        let v = victim(t.path());
        let d = repo.join(dir);
        fs::rename(&d, t.path().join("moved")).unwrap();
        symlink(&v, &d).unwrap();
        for args in [
            vec!["snapshot", "--only-files", "--files", src.to_str().unwrap()],
            vec!["unlock"],
            vec!["unlock", "--remove-all"],
            vec!["verify", "--read-data"],
            vec!["prune"],
        ] {
            let o = mnb(&repo, &args);
            assert_eq!(o.status.code(), Some(6), "{dir} {args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
            victim_intact(&v);
        }
    }
}

fn symlink_item(name: &str, target: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "kind": "symlink", "target": target, "size": 0,
        "blake3": blake3::hash(b"").to_hex().to_string()})
}

/// Item 8: a chain of links that each look inside the root escapes it; export refuses before
/// writing anything. A legitimate absolute link is exported as a link.
#[test]
fn symlink_chains_cannot_escape_and_absolute_links_are_data() {
    let (t, repo, _src) = setup();
    forge_manifest(&repo, None, |v| {
        let items = v["items"].as_array_mut().unwrap();
        items.push(symlink_item("files/a/b/c/d", "../../.."));
        items.push(symlink_item("files/a/b/c/e2", "d/../../../../elsewhere"));
    });
    let out = t.path().join("out");
    let o = mnb(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        !out.exists() || files_under(&out).is_empty(),
        "something was written"
    );
    assert!(!t.path().join("elsewhere").exists());

    // A path through a link of the plan is refused before anything is written.
    let (t, repo, _src) = setup();
    forge_manifest(&repo, None, |v| {
        let items = v["items"].as_array_mut().unwrap();
        items.insert(0, symlink_item("files/0link", "."));
        items.push(
            serde_json::json!({"name": "files/0link/x", "kind": "dir", "size": 0,
            "blake3": blake3::hash(b"").to_hex().to_string()}),
        );
    });
    let out = t.path().join("out");
    let o = mnb(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(!out.exists() || walkdir::WalkDir::new(&out).into_iter().count() <= 1);

    let (t, repo, _src) = setup();
    forge_manifest(&repo, None, |v| {
        let items = v["items"].as_array_mut().unwrap();
        items.push(symlink_item("files/localtime", "/usr/share/zoneinfo/UTC"));
    });
    let out = t.path().join("out");
    ok(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_eq!(
        fs::read_link(out.join("files/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
}

fn max_child_rss_kib() -> i64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss
}

/// Item 9: manifests and objects that are FIFOs, symlinks to devices or huge files are refused
/// without hanging and without reading them whole.
#[test]
fn unbounded_reads_are_refused() {
    let mk_fifo = |p: &Path| {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    };
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "manifest -> /dev/zero",
            Box::new(|repo: &Path| {
                let m = &files_under(&repo.join("snapshots"))[0];
                fs::remove_file(m).unwrap();
                symlink("/dev/zero", m).unwrap();
            }),
        ),
        (
            "manifest FIFO",
            Box::new(move |repo: &Path| {
                let m = &files_under(&repo.join("snapshots"))[0];
                fs::remove_file(m).unwrap();
                mk_fifo(m);
            }),
        ),
        (
            "1 GiB manifest",
            Box::new(|repo: &Path| {
                let m = &files_under(&repo.join("snapshots"))[0];
                fs::OpenOptions::new()
                    .write(true)
                    .open(m)
                    .unwrap()
                    .set_len(1 << 30)
                    .unwrap();
            }),
        ),
        (
            "1 GiB object",
            Box::new(|repo: &Path| {
                for o in files_under(&repo.join("objects")) {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&o)
                        .unwrap()
                        .set_len(1 << 30)
                        .unwrap();
                }
            }),
        ),
    ];
    for (what, damage) in cases {
        let (t, repo, _src) = setup();
        damage(&repo);
        let out = t.path().join("out");
        for args in [
            vec!["verify", "--read-data"],
            vec!["export", "latest", out.to_str().unwrap()],
            vec!["list"],
        ] {
            let t0 = Instant::now();
            let o = mnb(&repo, &args);
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{what} {args:?} hung"
            );
            assert!(!stderr(&o).contains("panicked"), "{what}: {}", stderr(&o));
            if args[0] != "list" {
                assert!(
                    matches!(o.status.code(), Some(5) | Some(6)),
                    "{what} {args:?}: {:?} {}",
                    o.status.code(),
                    stderr(&o)
                );
            }
        }
    }
    let rss = max_child_rss_kib();
    eprintln!("peak child RSS: {rss} KiB");
    assert!(rss < 200 * 1024, "peak RSS {rss} KiB");
}

/// Item 11: temporaries a killed export/restore left are removed by the next run.
#[test]
fn temporaries_of_a_killed_run_are_removed() {
    let (t, repo, src) = setup();
    let out = t.path().join("out");
    let dir = out.join("files").join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(&dir).unwrap();
    // pid 4194304 is above Linux's maximum: certainly not running.
    let stale = dir.join(".a.txt.mnbackup-4194304.tmp");
    fs::write(&stale, b"partial").unwrap();
    ok(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert!(!stale.exists());
}

/// Item 12: `export --no-special-bits` drops setuid/setgid/sticky.
#[test]
fn export_no_special_bits() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("tool"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init", "--no-packs"]);
    ok(
        &repo,
        &["snapshot", "--only-files", "--files", src.to_str().unwrap()],
    );
    let rel = src.strip_prefix("/").unwrap().join("tool");
    let a = t.path().join("a");
    ok(&repo, &["export", "latest", a.to_str().unwrap()]);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&a.join("files").join(&rel)), 0o4755);
    let b = t.path().join("b");
    ok(
        &repo,
        &["export", "--no-special-bits", "latest", b.to_str().unwrap()],
    );
    assert_eq!(mode(&b.join("files").join(&rel)), 0o755);
}
