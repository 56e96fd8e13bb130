//! Issue 19 item 6: progress on a terminal is an indicatif bar per step (captured under a
//! pseudo-terminal with `script` from util-linux); without a terminal only plain lines.

mod common;

use std::fs;
use std::process::Command;

use common::{bin, ok};

#[test]
fn bar_on_a_terminal_plain_lines_otherwise() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    fs::create_dir(&src).unwrap();
    for i in 0..8 {
        let body: Vec<u8> = (0..300_000u32)
            .map(|n| (n.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8)
            .collect();
        fs::write(src.join(format!("f{i}.bin")), body).unwrap();
    }
    ok(&repo, &["init"]);
    ok(&repo, &["snapshot", "--files", src.to_str().unwrap()]);

    // Under a pseudo-terminal: the bar (its ETA field and terminal control sequences).
    let cmd = format!(
        "{} -r {} verify --read-data",
        bin().display(),
        repo.display()
    );
    let out = Command::new("script")
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("MNBACKUP_CONFIG")
        .env("MNBACKUP_LOG", "warn")
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs");
    let tty = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("reading objects"), "{tty:?}");
    assert!(tty.contains("eta "), "no bar under a terminal: {tty:?}");
    assert!(
        tty.contains('\r') || tty.contains('\u{1b}'),
        "no terminal redraw: {tty:?}"
    );

    // Without a terminal: plain lines, no bar.
    let out = common::mnb(&repo, &["verify", "--read-data"]);
    assert!(out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("reading objects: ")),
        "{err:?}"
    );
    assert!(!err.contains("eta "), "a bar without a terminal: {err:?}");
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
}

/// `mnbackup ARGS` under a pseudo-terminal (`script`); returns what the terminal showed.
fn under_pty(repo: &std::path::Path, args: &str) -> String {
    let cmd = format!("{} -r {} {args}", bin().display(), repo.display());
    let out = Command::new("script")
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("MNBACKUP_CONFIG")
        .env("MNBACKUP_LOG", "warn")
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs");
    let tty = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args}: {tty}");
    tty
}

/// Plain lines only: no bar, no terminal control.
fn assert_plain(err: &str) {
    assert!(!err.contains("eta "), "a bar without a terminal: {err:?}");
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
}

/// export, copy, prune and a snapshot with a parent (its total and ETA from the parent's size):
/// a bar under a terminal, one plain line per step without one.
#[test]
fn export_copy_prune_and_snapshot_show_their_steps() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    let other = t.path().join("other");
    fs::create_dir(&src).unwrap();
    let write = |salt: u32| {
        for i in 0..6u32 {
            let body: Vec<u8> = (0..400_000u32)
                .map(|n| {
                    (n.wrapping_add(salt)
                        .wrapping_mul(2654435761)
                        .wrapping_add(i)
                        >> 13) as u8
                })
                .collect();
            fs::write(src.join(format!("f{i}.bin")), body).unwrap();
        }
    };
    write(0);
    ok(&repo, &["init"]);
    ok(&other, &["init"]);
    let files = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--files", files]);
    write(7);

    // A snapshot with a parent: a bar with the parent's size as its total.
    let tty = under_pty(&repo, &format!("snapshot --files {files}"));
    assert!(tty.contains("eta "), "no bar with a total: {tty:?}");

    let out_dir = t.path().join("out");
    let tty = under_pty(&repo, &format!("export latest {}", out_dir.display()));
    assert!(tty.contains("export: ") && tty.contains("eta "), "{tty:?}");
    let out_dir2 = t.path().join("out2");
    let out = ok(&repo, &["export", "latest", out_dir2.to_str().unwrap()]);
    let err = common::stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("export: ") && l.contains(" items of snapshot ")),
        "{err:?}"
    );
    assert_plain(&err);
    let f3 = common::files_under(&out_dir2)
        .into_iter()
        .find(|p| p.ends_with("f3.bin"))
        .expect("the export wrote f3.bin");
    assert_eq!(fs::read(f3).unwrap(), fs::read(src.join("f3.bin")).unwrap());

    let out = ok(&repo, &["copy", "--to", other.to_str().unwrap()]);
    let err = common::stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("copy: sending ")),
        "{err:?}"
    );
    assert_plain(&err);

    ok(&repo, &["forget", "--keep-last", "1"]);
    let out = ok(&repo, &["prune"]);
    let err = common::stderr(&out);
    for step in [
        "prune: reading the snapshots",
        "prune: listing the objects",
        "prune: removing ",
    ] {
        assert!(err.lines().any(|l| l.starts_with(step)), "{step}: {err:?}");
    }
    assert_plain(&err);
}
