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
