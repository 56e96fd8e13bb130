//! Cluster mode with two real daemons (two processes, node names mn1 and mn2, one repository)
//! on a seconds schedule: each slot is taken exactly once (one snapshot tagged per slot, one
//! `done` claim per slot); kill -9 of the node holding a claim in the middle of its snapshot:
//! the other node takes the slot after the lease, and the repository verifies.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LEASE: u64 = 5;

fn config(dir: &Path, repo: &Path, data: &Path, node: &str) -> PathBuf {
    let cfg = dir.join(format!("{node}.toml"));
    fs::write(
        &cfg,
        format!(
            r#"
[repository]
path = "{repo}"
lock_wait_seconds = 60

[[files]]
paths = ["{data}"]

[[schedule]]
name = "snap"
cron = "*/4 * * * * *"
retries = 0

[daemon]
timezone = "UTC"
state_dir = "{state}"
grace_seconds = 1

[cluster]
nodes = ["mn1", "mn2"]
node = "{node}"
lease_seconds = {LEASE}
"#,
            repo = repo.display(),
            data = data.display(),
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

/// Snapshots per slot tag, with their hosts.
fn snapshots_per_slot(repo: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in list(repo) {
        let host = s["hostname"].as_str().unwrap_or("?").to_string();
        let tags = s["tags"].as_array().cloned().unwrap_or_default();
        let slot = tags
            .iter()
            .filter_map(|t| t.as_str())
            .find(|t| t.starts_with("slot:"))
            .unwrap_or_else(|| panic!("a scheduled cluster snapshot without its slot tag: {s}"))
            .to_string();
        out.entry(slot).or_default().push(host);
    }
    out
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

#[test]
fn two_daemons_take_each_slot_once_and_take_over_from_a_killed_holder() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let data = t.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("zstack.properties"), "DB.url=jdbc:mysql://mn\n").unwrap();
    ok(&repo, &["init"]);
    let cfgs: Vec<PathBuf> = ["mn1", "mn2"]
        .iter()
        .map(|n| config(t.path(), &repo, &data, n))
        .collect();
    let log = |n: &str| t.path().join(format!("{n}.log"));

    // Phase 1: both daemons for about 30 s.
    let a = start(&cfgs[0], &log("mn1"));
    let b = start(&cfgs[1], &log("mn2"));
    std::thread::sleep(Duration::from_secs(30));
    stop(a);
    stop(b);
    let per_slot = snapshots_per_slot(&repo);
    assert!(per_slot.len() >= 4, "{per_slot:?}\n{}", logs(t.path()));
    for (slot, hosts) in &per_slot {
        assert_eq!(
            hosts.len(),
            1,
            "slot {slot} taken {hosts:?}\n{}",
            logs(t.path())
        );
    }
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
    fs::write(data.join("big.bin"), text(&mut rng, 64 << 20)).unwrap();
    let mut kids: BTreeMap<&str, Child> = BTreeMap::new();
    kids.insert("mn1", start(&cfgs[0], &log("mn1")));
    kids.insert("mn2", start(&cfgs[1], &log("mn2")));
    let before: Vec<String> = claims(&repo).keys().cloned().collect();
    let t0 = Instant::now();
    let (slot, holder) = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no claim held\n{}",
            logs(t.path())
        );
        let found = claims(&repo).into_iter().find_map(|(s, v)| {
            let last = v.last()?.clone();
            (!before.contains(&s) && last["state"] == "working")
                .then(|| (s, last["node"].as_str().unwrap().to_string()))
        });
        if let Some(f) = found {
            break f;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut dead = kids.remove(holder.as_str()).unwrap();
    dead.kill().unwrap(); // SIGKILL
    dead.wait().unwrap();
    let other = if holder == "mn1" { "mn2" } else { "mn1" };
    let t1 = Instant::now();
    let taken = loop {
        assert!(
            t1.elapsed() < Duration::from_secs(120),
            "{other} did not take slot {slot} after {holder} died: {:?}\n{}",
            claims(&repo).get(&slot),
            logs(t.path())
        );
        let v = claims(&repo).remove(&slot).unwrap_or_default();
        if let Some(d) = v.iter().find(|c| c["state"] == "done") {
            break (d.clone(), v.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(taken.0["node"], other, "{taken:?}");
    assert!(taken.1 >= 2, "a new generation took the slot: {taken:?}");
    let alive = kids.remove(other).unwrap();
    stop(alive);
    let per_slot = snapshots_per_slot(&repo);
    for (slot, hosts) in &per_slot {
        assert_eq!(hosts.len(), 1, "slot {slot} taken {hosts:?}");
    }
    ok(&repo, &["verify"]);
}
