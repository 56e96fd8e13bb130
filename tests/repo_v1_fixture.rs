//! A version 1 repository written by the previous release (`fixtures/repo-v1/`) still lists,
//! verifies and restores byte-exact, and stays writable.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// Where the previous release read the tree from (recorded in the manifests).
const RECORDED: &str = "work/main/fixtures/repo-v1/source";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repo-v1")
}

/// A private copy of the fixture repository (commands may write locks and caches into it).
fn copy_repo(to: &Path) -> PathBuf {
    let repo = to.join("repo");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture().join("repo"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    repo
}

/// Contents and link targets of a tree (modes and times are not kept by git for the source).
fn contents(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.file_type().is_symlink() {
            let t = fs::read_link(e.path()).unwrap();
            out.push((rel, t.display().to_string().into_bytes()));
        } else if md.is_file() {
            out.push((rel, fs::read(e.path()).unwrap()));
        }
    }
    out
}

fn restore(repo: &Path, t: &Path, snapshot: &str, name: &str) -> PathBuf {
    let root = t.join(name);
    fs::create_dir_all(&root).unwrap();
    let journal = t.join(format!("{name}.journal"));
    ok(
        repo,
        &[
            "restore",
            snapshot,
            "--files-root",
            root.to_str().unwrap(),
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    root.join(RECORDED)
}

#[test]
fn a_v1_repository_lists_verifies_and_restores() {
    let t = tempfile::tempdir().unwrap();
    let repo = copy_repo(t.path());
    let l = list(&repo);
    let ids: Vec<&str> = l.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "20261203T155002742Z-cdf6cc16",
            "20261203T155003045Z-59069284"
        ]
    );
    assert!(l.iter().all(|m| m["hostname"] == "fixture-node"));
    ok(&repo, &["verify", "--read-data"]);

    // The second snapshot is the tree as it is in fixtures/repo-v1/source.
    let second = restore(&repo, t.path(), "20261203T155003045Z-59069284", "second");
    assert_eq!(contents(&second), contents(&fixture().join("source")));
    let mode = fs::metadata(second.join("keys/id_rsa"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key's recorded mode is restored");

    // The first lacks the appended line.
    let first = restore(&repo, t.path(), "20261203T155002742Z-cdf6cc16", "first");
    let log = fs::read(first.join("etc/text.log")).unwrap();
    let now = fs::read(fixture().join("source/etc/text.log")).unwrap();
    let appended = b"line appended for the second snapshot\n";
    assert_eq!([log.as_slice(), appended].concat(), now);
}

#[test]
fn a_v1_repository_stays_writable() {
    let t = tempfile::tempdir().unwrap();
    let repo = copy_repo(t.path());
    let src = t.path().join("new");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"written into a v1 repository\n").unwrap();
    ok(
        &repo,
        &[
            "snapshot",
            "--only-files",
            "--files",
            src.to_str().unwrap(),
            "--host",
            "fixture-node",
        ],
    );
    assert_eq!(list(&repo).len(), 3);
    let marker = fs::read_to_string(repo.join("mnbackup-repo.json")).unwrap();
    assert!(marker.contains("\"version\": 1"), "{marker}");
    ok(&repo, &["verify", "--read-data"]);
    let root = t.path().join("r");
    fs::create_dir_all(&root).unwrap();
    ok(
        &repo,
        &[
            "restore",
            "latest",
            "--files-root",
            root.to_str().unwrap(),
            "--journal",
            t.path().join("j").to_str().unwrap(),
        ],
    );
    let back = root.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(back.join("a.txt")).unwrap(),
        b"written into a v1 repository\n"
    );
}
