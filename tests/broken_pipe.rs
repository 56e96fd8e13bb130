//! Issue 14 item 12: a closed pipe ends the output quietly. `mnbackup show ID | head -1` and
//! `mnbackup cat ID ITEM | head -c 10` exit as `cat | head` does (the pipeline exits 0), with
//! no panic and nothing on stderr.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::*;

fn repo_with_many_items() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    // Enough items that `show` writes far more than a pipe buffer (64 KiB).
    for d in 0..20 {
        let dir = src.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(
                dir.join(format!("a-rather-long-file-name-{f:04}.conf")),
                [b'x'; 16],
            )
            .unwrap();
        }
    }
    fs::write(src.join("big"), vec![b'y'; 1 << 20]).unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    ok(&repo, &["snapshot", "--files", src.to_str().unwrap()]);
    let id = ids(&repo).pop().unwrap();
    (t, repo, id)
}

/// Runs `mnbackup -r REPO ARGS | head ...` through bash; returns the pipeline's exit code (as
/// `set -o pipefail` would see it, with mnbackup ending by SIGPIPE counted as 0, as for `cat`)
/// and stderr.
fn piped(repo: &std::path::Path, args: &str, head: &str) -> (Option<i32>, String) {
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' -r '{}' {args} | {head} >/dev/null; s=(${{PIPESTATUS[@]}}); \
             [ ${{s[0]}} = 141 ] && s[0]=0; exit $(( s[0] | s[1] ))",
            bin().display(),
            repo.display()
        ))
        .env_remove("MNBACKUP_CONFIG")
        .env("MNBACKUP_LOG", "warn")
        .env("MNBACKUP_PASSWORD", common::PASSWORD)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn show_and_cat_into_a_closed_pipe_end_quietly() {
    let (_t, repo, id) = repo_with_many_items();
    let (code, err) = piped(&repo, &format!("show {id}"), "head -1");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "", "nothing on stderr");
    let big = format!("files{}/big", _t.path().join("node").display());
    let (code, err) = piped(&repo, &format!("cat {id} '{big}'"), "head -c 10");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "", "nothing on stderr");

    // The process itself ends by SIGPIPE, like cat, never by a panic (exit 101).
    let mut child = Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .arg("-r")
        .arg(&repo)
        .args(["show", &id])
        .env_remove("MNBACKUP_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.is_empty());
    // The reader is closed here.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
}
