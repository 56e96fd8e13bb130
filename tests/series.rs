//! Issue 17 items 3 and 4: snapshot series and several writers. Two hosts' snapshots run at once
//! into one repository (two processes; one host set by `[repository] host`, the other by
//! `snapshot --host`), then `forget --keep-last 1` per host, then `prune`: both hosts keep their
//! newest snapshot and both restore byte-exact.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

fn tree(root: &Path, seed: u64) {
    let mut rng = Rng(seed);
    fs::create_dir_all(root).unwrap();
    for i in 0..24 {
        fs::write(root.join(format!("f{i:02}.dat")), text(&mut rng, 300_000)).unwrap();
    }
}

fn config(dir: &Path, host: &str) -> PathBuf {
    let p = dir.join(format!("{host}.toml"));
    let cache = dir.join(format!("cache-{host}"));
    fs::write(
        &p,
        format!(
            "[repository]\nhost = \"{host}\"\ncache_dir = \"{}\"\n",
            cache.display()
        ),
    )
    .unwrap();
    p
}

/// Start a snapshot of `src` in the background: node-a through its configuration, node-b
/// through `--host` (and its own cache directory through HOME).
fn spawn_snapshot(t: &Path, repo: &Path, host: &str, src: &Path) -> Child {
    let mut c = Command::new(bin());
    c.env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase");
    c.arg("-r").arg(repo);
    if host == "node-a" {
        c.arg("-c").arg(config(t, host));
    }
    c.args(["snapshot", "--only-files", "--files"]).arg(src);
    if host != "node-a" {
        c.args(["--host", host]);
    }
    c.env_remove("MNBACKUP_CONFIG")
        .env("MNBACKUP_LOG", "warn")
        .env("HOME", t.join(format!("home-{host}")))
        .env_remove("XDG_CACHE_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mnbackup")
}

fn finish(c: Child) {
    let o = c.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn host_list(repo: &Path, host: &str) -> Vec<serde_json::Value> {
    let o = ok(repo, &["--json", "list", "--host", host]);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn time(v: &serde_json::Value, k: &str) -> chrono::DateTime<chrono::Utc> {
    v[k].as_str().unwrap().parse().unwrap()
}

#[test]
fn two_hosts_write_at_once_and_keep_their_own_series() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("node-a"), t.path().join("node-b"));
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    for round in 0..2u64 {
        tree(&a, 10 + round);
        tree(&b, 20 + round);
        let pa = spawn_snapshot(t.path(), &repo, "node-a", &a);
        let pb = spawn_snapshot(t.path(), &repo, "node-b", &b);
        finish(pa);
        finish(pb);
        // They really ran at the same time (with an exclusive snapshot lock the second would
        // have been refused with exit 4).
        let (la, lb) = (host_list(&repo, "node-a"), host_list(&repo, "node-b"));
        let (ma, mb) = (la.last().unwrap(), lb.last().unwrap());
        assert!(
            time(ma, "time") < time(mb, "finished") && time(mb, "time") < time(ma, "finished"),
            "the two snapshots did not overlap: {ma} {mb}"
        );
    }
    // Each series is its own: two snapshots per host, each the delta parent of its host's next.
    for host in ["node-a", "node-b"] {
        let l = host_list(&repo, host);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l.iter().all(|m| m["hostname"] == host));
        assert_eq!(l[0]["components"], serde_json::json!(["files"]));
        assert_eq!(l[1]["parent"], l[0]["id"], "{host}'s parent is its own");
    }
    let newest: Vec<String> = ["node-a", "node-b"]
        .iter()
        .map(|h| host_list(&repo, h)[1]["id"].as_str().unwrap().to_string())
        .collect();
    // Per host: --host narrows forget to one series; without it the policy applies to each
    // host's series (never "the last one of the repository").
    ok(&repo, &["forget", "--host", "node-a", "--keep-last", "1"]);
    assert_eq!(host_list(&repo, "node-b").len(), 2);
    ok(&repo, &["forget", "--keep-last", "1"]);
    ok(&repo, &["prune"]);
    let mut left: Vec<String> = list(&repo)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    // `list` orders by time; the two hosts' newest snapshots started within a millisecond of
    // each other, in either order.
    left.sort();
    let mut newest = newest;
    newest.sort();
    assert_eq!(left, newest);
    // Both restore byte-exact; `latest` is the configured host's.
    for (host, src) in [("node-a", &a), ("node-b", &b)] {
        let root = t.path().join(format!("root-{host}"));
        fs::create_dir_all(&root).unwrap();
        let cfg = config(t.path(), host);
        let journal = t.path().join(format!("j-{host}.json"));
        ok(
            &repo,
            &[
                "-c",
                cfg.to_str().unwrap(),
                "restore",
                "latest",
                "--files-root",
                root.to_str().unwrap(),
                "--journal",
                journal.to_str().unwrap(),
            ],
        );
        let restored = root.join(src.strip_prefix("/").unwrap());
        assert_same(&capture(src), &capture(&restored));
    }
    ok(&repo, &["verify", "--read-data"]);
}

/// `latest` of a host without snapshots is refused when several other hosts have some (which
/// one is meant is unknown), and taken when one host has (a replaced node restoring).
#[test]
fn latest_of_a_host_without_snapshots() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("node-a");
    tree(&a, 1);
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let s = a.to_str().unwrap();
    ok(
        &repo,
        &["snapshot", "--only-files", "--files", s, "--host", "x1"],
    );
    let cfg = config(t.path(), "new-node");
    let c = cfg.to_str().unwrap();
    let x1 = list(&repo)[0]["id"].as_str().unwrap().to_string();
    let o = ok(&repo, &["-c", c, "--json", "show", "latest"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&x1));
    ok(
        &repo,
        &["snapshot", "--only-files", "--files", s, "--host", "x2"],
    );
    let o = mnb(&repo, &["-c", c, "show", "latest"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("x1") && stderr(&o).contains("x2"),
        "{}",
        stderr(&o)
    );
    // A bad host name is a usage error.
    let o = mnb(
        &repo,
        &["snapshot", "--only-files", "--files", s, "--host", " "],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
