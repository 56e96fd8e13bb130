//! `mnbackup migrate`: a version 1 repository (the previous release's, `fixtures/repo-v1/`, and
//! one written with `init --format-v1`) becomes an encrypted format v2 repository in place with
//! the same restored bytes; a SIGKILL in the middle and a rerun finish it.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repo-v1")
}

fn marker(repo: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(repo.join("mnbackup-repo.json")).unwrap()).unwrap()
}

/// Every file of the pool whose bytes contain `needle`.
fn files_holding(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            fs::read(e.path())
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

fn restore_to(repo: &Path, t: &Path, snapshot: &str, name: &str) -> PathBuf {
    let root = t.join(name);
    fs::create_dir_all(&root).unwrap();
    ok(
        repo,
        &[
            "restore",
            snapshot,
            "--files-root",
            root.to_str().unwrap(),
            "--journal",
            t.join(format!("{name}.journal")).to_str().unwrap(),
        ],
    );
    root
}

#[test]
fn the_previous_releases_repository_migrates_to_encrypted_v2() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(fixture().join("repo"))
        .arg(&repo)
        .status()
        .unwrap()
        .success());
    // The v1 fixture holds the properties file and the key readable (zstd keeps short texts
    // literal): what a reader of the pool saw before.
    let secrets: [&[u8]; 2] = [b"DB.url=jdbc:mysql", b"fixture-not-a-real-key"];
    for s in secrets {
        assert_eq!(
            files_holding(&repo, s).len(),
            1,
            "{}",
            String::from_utf8_lossy(s)
        );
    }
    let before = ids(&repo);
    let o = ok(&repo, &["--json", "migrate"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["snapshots"], 2, "{r}");
    assert_eq!(r["encrypted"], true);
    let m = marker(&repo);
    assert_eq!(m["version"], 2);
    assert_eq!(m["encryption"], "xchacha20poly1305");
    assert_eq!(ids(&repo), before);
    ok(&repo, &["verify", "--read-data"]);
    // Nothing of the properties file is readable on the pool any more.
    for s in secrets {
        assert_eq!(files_holding(&repo, s), Vec::<PathBuf>::new());
    }
    assert!(!repo.join("migrate/state.json").exists());
    // The same bytes come back.
    let root = restore_to(&repo, t.path(), "20261203T155003045Z-59069284", "r");
    let back = root.join("work/main/fixtures/repo-v1/source");
    for f in [
        "etc/zstack/zstack.properties",
        "etc/blob.bin",
        "etc/text.log",
        "keys/id_rsa",
    ] {
        assert_eq!(
            fs::read(back.join(f)).unwrap(),
            fs::read(fixture().join("source").join(f)).unwrap(),
            "{f}"
        );
    }
    // Without the passphrase nothing opens.
    let o = Command::new(bin())
        .arg("-r")
        .arg(&repo)
        .arg("list")
        .env_remove("MNBACKUP_PASSWORD")
        .env_remove("MNBACKUP_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    // Migrating again is refused as pointless.
    let o = mnb(&repo, &["migrate"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A v1 repository of three snapshots of a changing tree.
fn v1_repo(t: &Path) -> (PathBuf, PathBuf) {
    let repo = t.join("repo");
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    ok(&repo, &["init", "--format-v1"]);
    let mut rng = Rng(20);
    for round in 0..3 {
        for i in 0..6 {
            fs::write(
                src.join(format!("f{i}.dat")),
                text(&mut rng, 200_000 + round),
            )
            .unwrap();
        }
        ok(
            &repo,
            &["snapshot", "--only-files", "--files", src.to_str().unwrap()],
        );
    }
    assert_eq!(marker(&repo)["version"], 1);
    (repo, src)
}

/// Start `migrate` paused after `stage` (test hook), wait until it says so, SIGKILL it.
fn kill_at(repo: &Path, stage: &str) {
    let mut child = Command::new(bin())
        .arg("-r")
        .arg(repo)
        .arg("migrate")
        .env("MNBACKUP_PASSWORD", PASSWORD)
        .env("MNBACKUP_TEST_MIGRATE_PAUSE", stage)
        .env_remove("MNBACKUP_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(err).lines() {
        let line = line.unwrap();
        let done = line.contains(&format!("paused after {stage}"));
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("paused after")),
        "migrate did not reach {stage}: {seen:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_migrate_killed_midway_is_finished_by_a_rerun() {
    for stage in ["staged", "switched"] {
        let t = tempfile::tempdir().unwrap();
        let (repo, src) = v1_repo(t.path());
        let before = ids(&repo);
        kill_at(&repo, stage);
        if stage == "staged" {
            // Still a whole v1 repository.
            assert_eq!(marker(&repo)["version"], 1);
            assert_eq!(ids(&repo), before);
            ok(&repo, &["verify", "--read-data"]);
            // A rerun with another passphrase is refused (the objects are sealed already).
            let o = Command::new(bin())
                .arg("-r")
                .arg(&repo)
                .arg("migrate")
                .env("MNBACKUP_PASSWORD", "another passphrase")
                .env_remove("MNBACKUP_CONFIG")
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
        } else {
            assert_eq!(marker(&repo)["version"], 2);
        }
        ok(&repo, &["migrate"]);
        assert_eq!(marker(&repo)["version"], 2, "{stage}");
        assert_eq!(ids(&repo), before, "{stage}");
        ok(&repo, &["verify", "--read-data"]);
        let root = restore_to(&repo, t.path(), "latest", "r");
        assert_same(
            &capture(&src),
            &capture(&root.join(src.strip_prefix("/").unwrap())),
        );
        // The repository keeps working as v2: a new snapshot deltas against the migrated one.
        ok(
            &repo,
            &["snapshot", "--only-files", "--files", src.to_str().unwrap()],
        );
        assert_eq!(ids(&repo).len(), 4);
    }
}
