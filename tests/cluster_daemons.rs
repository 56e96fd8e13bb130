//! Cluster mode with two real daemons (two processes, node names mn1 and mn2, one repository)
//! on a 4-second schedule (about 70 s in all):
//! - each slot is taken exactly once: one snapshot tagged `slot:` per slot, one `done` claim;
//! - each node backs up its own files every slot into its own series: the node that did not
//!   take the slot takes a files-only snapshot tagged `node-files:`, complete, recording which
//!   node took the shared data; `restore --host` rebuilds either node's files byte for byte;
//! - `status` on either node shows both views and alarms for a slot no node took;
//! - kill -9 of the node holding a claim in the middle of its snapshot: the other node takes the
//!   slot after the lease, and the repository verifies;
//! - fencing: the holder stopped (SIGSTOP) longer than the lease while the other node takes the
//!   slot over does not commit its snapshot of the slot after SIGCONT (only its own files).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LEASE: u64 = 5;

/// Each node's own files (`zstack.properties` differs per node) and, for the slow phases, a
/// directory of big data both nodes back up.
fn config(dir: &Path, repo: &Path, node: &str) -> PathBuf {
    let cfg = dir.join(format!("{node}.toml"));
    fs::write(
        &cfg,
        format!(
            r#"
[repository]
path = "{repo}"
lock_wait_seconds = 60

[[files]]
paths = ["{own}", "{common}"]

[[schedule]]
name = "snap"
cron = "*/4 * * * * *"
retries = 0

[daemon]
timezone = "UTC"
state_dir = "{state}"
grace_seconds = 1

[restore]
service_check = ""

[cluster]
nodes = ["mn1", "mn2"]
node = "{node}"
lease_seconds = {LEASE}
"#,
            repo = repo.display(),
            own = dir.join(format!("data-{node}")).display(),
            common = dir.join("common").display(),
            state = dir.join(format!("state-{node}")).display(),
        ),
    )
    .unwrap();
    cfg
}
fn start(cfg: &Path, log: &Path) -> Child {
    Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .arg("-c")
        .arg(cfg)
        .arg("daemon")
        .env_remove("MNBACKUP_CONFIG")
        .env_remove("MNBACKUP_REPO")
        .env("MNBACKUP_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn stop(mut c: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(30) {
            let _ = c.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every claim object: slot directory → claims by generation.
fn claims(repo: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let root = repo.join("cluster/claims/snap");
    let Ok(slots) = fs::read_dir(&root) else {
        return out;
    };
    for s in slots {
        let s = s.unwrap();
        let mut v = Vec::new();
        for g in fs::read_dir(s.path()).unwrap() {
            let g = g.unwrap();
            let name = g.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(j) = serde_json::from_slice(&fs::read(g.path()).unwrap()) {
                    v.push(j);
                }
            }
        }
        v.sort_by_key(|c: &serde_json::Value| c["generation"].as_u64());
        out.insert(s.file_name().to_string_lossy().into_owned(), v);
    }
    out
}

/// Snapshots per tag with `prefix` (`slot:` or `node-files:`), with their hosts.
fn snapshots_per(repo: &Path, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in list(repo) {
        let host = s["hostname"].as_str().unwrap_or("?").to_string();
        let tags = s["tags"].as_array().cloned().unwrap_or_default();
        let tag = tags
            .iter()
            .filter_map(|t| t.as_str())
            .find(|t| t.starts_with("slot:") || t.starts_with("node-files:"))
            .unwrap_or_else(|| panic!("a scheduled cluster snapshot without its slot tag: {s}"));
        if let Some(slot) = tag.strip_prefix(prefix) {
            out.entry(slot.to_string()).or_default().push(host);
        }
    }
    out
}

/// Snapshots of the shared data per slot.
fn snapshots_per_slot(repo: &Path) -> BTreeMap<String, Vec<String>> {
    snapshots_per(repo, "slot:")
}

/// A claim directory's name (`20261203T120004Z`) as the slot in tags (`snap@2026-12-03T12:00:04Z`).
fn slot_of(dir: &str) -> String {
    format!(
        "snap@{}-{}-{}T{}:{}:{}Z",
        &dir[0..4],
        &dir[4..6],
        &dir[6..8],
        &dir[9..11],
        &dir[11..13],
        &dir[13..15]
    )
}

fn signal(c: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(c.id() as libc::pid_t, sig) }, 0);
}

/// Wait for a slot newer than `before` whose newest claim is `working`: (slot dir, holder).
fn working_claim(repo: &Path, before: &[String], dir: &Path) -> (String, String) {
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no claim held\n{}",
            logs(dir)
        );
        let found = claims(repo).into_iter().find_map(|(s, v)| {
            let last = v.last()?.clone();
            (!before.contains(&s) && last["state"] == "working")
                .then(|| (s, last["node"].as_str().unwrap().to_string()))
        });
        if let Some(f) = found {
            return f;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `slot`'s claims hold a `done` one: (that claim, number of generations).
fn done_claim(repo: &Path, slot: &str, dir: &Path) -> (serde_json::Value, usize) {
    let t1 = Instant::now();
    loop {
        assert!(
            t1.elapsed() < Duration::from_secs(120),
            "nobody finished slot {slot}: {:?}\n{}",
            claims(repo).get(slot),
            logs(dir)
        );
        let v = claims(repo).remove(slot).unwrap_or_default();
        if let Some(d) = v.iter().find(|c| c["state"] == "done") {
            return (d.clone(), v.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn logs(dir: &Path) -> String {
    ["mn1", "mn2"]
        .iter()
        .map(|n| {
            format!(
                "--- {n}\n{}",
                fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()
            )
        })
        .collect()
}

/// Each node's own files, every slot: the node that did not take a slot took a complete
/// files-only snapshot of it naming the taker; `restore --host` rebuilds either node's files
/// from either node's configuration; an unknown node is refused.
fn node_local_series(
    repo: &Path,
    dir: &Path,
    cfgs: &[PathBuf],
    per_slot: &BTreeMap<String, Vec<String>>,
) {
    let repo = repo.to_path_buf();
    // The other node took its own files, once, for every slot but perhaps the last.
    let node_files = snapshots_per(&repo, "node-files:");
    for (slot, hosts) in &node_files {
        let taker = &per_slot[slot][0];
        assert_eq!(hosts.len(), 1, "slot {slot}: node files of {hosts:?}");
        assert_ne!(&hosts[0], taker, "slot {slot}: the taker took files twice");
    }
    let last = per_slot.keys().next_back().unwrap();
    for slot in per_slot.keys().filter(|s| *s != last) {
        assert!(
            node_files.contains_key(slot),
            "slot {slot}: the other node did not take its own files: {node_files:?}\n{}",
            logs(dir)
        );
    }
    // A files-only snapshot is complete and names the node that took the shared data.
    let entries = list(&repo);
    let nf = entries
        .iter()
        .find(|s| s["tags"].to_string().contains("node-files:"))
        .expect("a node-files snapshot");
    assert_eq!(nf["complete"], true, "{nf}");
    let o = ok(&repo, &["--json", "show", nf["id"].as_str().unwrap()]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let info = &shown["sources"]["cluster"];
    let slot = nf["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|t| t.as_str()?.strip_prefix("node-files:"))
        .unwrap();
    assert_eq!(
        info["shared_taken_by"],
        per_slot[slot][0].as_str(),
        "{shown}"
    );
    assert_eq!(info["node"], nf["hostname"], "{shown}");

    // Either node rebuilds either node: `restore --host` restores that node's own files.
    for (cfg, host) in cfgs.iter().zip(["mn2", "mn1"]) {
        let root = dir.join(format!("restored-{host}"));
        let o = mnb(
            &repo,
            &[
                "-c",
                cfg.to_str().unwrap(),
                "restore",
                "--host",
                host,
                "--files-root",
                root.to_str().unwrap(),
            ],
        );
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
        let own = dir.join(format!("data-{host}"));
        let restored = root.join(own.strip_prefix("/").unwrap());
        assert_same(&capture(&own), &capture(&restored));
    }
    let o = mnb(
        &repo,
        &["-c", cfgs[0].to_str().unwrap(), "restore", "--host", "mn3"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("host mn3 has no snapshot"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn two_daemons_take_each_slot_once_and_take_over_from_a_killed_holder() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    fs::create_dir_all(t.path().join("common")).unwrap();
    for n in ["mn1", "mn2"] {
        let d = t.path().join(format!("data-{n}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("zstack.properties"),
            format!("management.server.ip={n}\nDB.url=jdbc:mysql://vip\n"),
        )
        .unwrap();
    }
    ok(&repo, &["init"]);
    let cfgs: Vec<PathBuf> = ["mn1", "mn2"]
        .iter()
        .map(|n| config(t.path(), &repo, n))
        .collect();
    let log = |n: &str| t.path().join(format!("{n}.log"));

    // Phase 1: both daemons for about 22 s.
    let a = start(&cfgs[0], &log("mn1"));
    let b = start(&cfgs[1], &log("mn2"));
    std::thread::sleep(Duration::from_secs(22));
    stop(a);
    stop(b);
    let per_slot = snapshots_per_slot(&repo);
    assert!(per_slot.len() >= 3, "{per_slot:?}\n{}", logs(t.path()));
    for (slot, hosts) in &per_slot {
        assert_eq!(
            hosts.len(),
            1,
            "slot {slot} taken {hosts:?}\n{}",
            logs(t.path())
        );
    }
    node_local_series(&repo, t.path(), &cfgs, &per_slot);
    let c = claims(&repo);
    for (slot, v) in &c {
        let done = v.iter().filter(|c| c["state"] == "done").count();
        let working = v.iter().filter(|c| c["state"] == "working").count();
        assert!(done <= 1 && working == 0 || done == 0, "slot {slot}: {v:?}");
    }
    let done_slots = c
        .values()
        .filter(|v| v.iter().any(|c| c["state"] == "done"))
        .count();
    assert_eq!(done_slots, per_slot.len(), "{c:?}");

    // `status` on either node shows both nodes' view; a slot no node took is an alarm.
    for cfg in &cfgs {
        let o = mnb(&repo, &["-c", cfg.to_str().unwrap(), "--json", "status"]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json");
        let views = st["cluster"]["views"].as_array().expect("cluster views");
        let names: Vec<&str> = views.iter().filter_map(|v| v["node"].as_str()).collect();
        assert_eq!(names, ["mn1", "mn2"], "{st}");
        let missed = st["cluster"]["missed_slots"].as_array().unwrap().len();
        assert_eq!(missed > 0, o.status.code() == Some(2), "{st}");
    }
    // Remove one finished slot's claims: neither node took it now, and status alarms.
    let (first, _) = c
        .iter()
        .find(|(_, v)| v.iter().any(|c| c["state"] == "done"))
        .unwrap();
    let second = c
        .iter()
        .filter(|(_, v)| v.iter().any(|c| c["state"] == "done"))
        .nth(1)
        .map(|(s, _)| s.clone())
        .unwrap();
    assert!(first < &second);
    fs::remove_dir_all(repo.join("cluster/claims/snap").join(&second)).unwrap();
    let o = mnb(&repo, &["-c", cfgs[0].to_str().unwrap(), "status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("ALARM: no node took slot"), "{out}");

    // Phase 2: a slow snapshot (64 MB of incompressible data); kill -9 whoever holds a claim
    // while it works.
    let mut rng = Rng(7);
    fs::write(t.path().join("common/big.bin"), text(&mut rng, 64 << 20)).unwrap();
    let mut kids: BTreeMap<&str, Child> = BTreeMap::new();
    kids.insert("mn1", start(&cfgs[0], &log("mn1")));
    kids.insert("mn2", start(&cfgs[1], &log("mn2")));
    let before: Vec<String> = claims(&repo).keys().cloned().collect();
    let (slot, holder) = working_claim(&repo, &before, t.path());
    std::thread::sleep(Duration::from_millis(300));
    let mut dead = kids.remove(holder.as_str()).unwrap();
    dead.kill().unwrap(); // SIGKILL
    dead.wait().unwrap();
    let other = if holder == "mn1" { "mn2" } else { "mn1" };
    let taken = done_claim(&repo, &slot, t.path());
    assert_eq!(taken.0["node"], other, "{taken:?}");
    assert!(taken.1 >= 2, "a new generation took the slot: {taken:?}");

    // Phase 3, fencing: the dead node is back; the next holder is stopped (SIGSTOP) longer
    // than the lease, the other node takes the slot over; after SIGCONT the stopped node does
    // not commit its snapshot of the slot, only its own files.
    // (New data, so that no node reuses the unchanged file from its last snapshot.)
    for (_, k) in std::mem::take(&mut kids) {
        stop(k);
    }
    fs::write(t.path().join("common/big.bin"), text(&mut rng, 64 << 20)).unwrap();
    kids.insert("mn1", start(&cfgs[0], &log("mn1")));
    kids.insert("mn2", start(&cfgs[1], &log("mn2")));
    let before: Vec<String> = claims(&repo).keys().cloned().collect();
    let (slot, holder) = working_claim(&repo, &before, t.path());
    std::thread::sleep(Duration::from_millis(300));
    signal(&kids[holder.as_str()], libc::SIGSTOP);
    let other = if holder == "mn1" { "mn2" } else { "mn1" };
    let taken = done_claim(&repo, &slot, t.path());
    signal(&kids[holder.as_str()], libc::SIGCONT);
    assert_eq!(taken.0["node"], other, "{taken:?}");
    let t2 = Instant::now();
    while !snapshots_per(&repo, "node-files:").contains_key(&slot_of(&slot)) {
        assert!(
            t2.elapsed() < Duration::from_secs(90),
            "the stopped node {holder} took no files snapshot of slot {slot}\n{}",
            logs(t.path())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (_, k) in std::mem::take(&mut kids) {
        stop(k);
    }
    assert!(
        logs(t.path()).contains(&format!("node {other} took over slot")),
        "{}",
        logs(t.path())
    );
    let per_slot = snapshots_per_slot(&repo);
    assert_eq!(per_slot[&slot_of(&slot)], [other], "{per_slot:?}");
    for (slot, hosts) in &per_slot {
        assert_eq!(hosts.len(), 1, "slot {slot} taken {hosts:?}");
    }
    assert_eq!(
        snapshots_per(&repo, "node-files:")[&slot_of(&slot)],
        [holder.as_str()]
    );
    ok(&repo, &["verify"]);
}
