//! Issue 12, "what it must show": seeded corruption trials. Each trial damages one file of a
//! repository with two snapshots (flip a byte, truncate, delete; an object, a signature, a
//! manifest or the marker), leaves an interrupted run's in-progress record half the time, then
//! takes a snapshot, runs `verify --read-data` and exports every snapshot. It counts:
//! - snapshots that report success and do not restore byte for byte (must be 0),
//! - objects of an unreadable manifest deleted by the clean-up (must be 0),
//! - panics (must be 0).
//!
//! The default run does 25 trials; the full campaign of 100:
//! `cargo test --test corruption_campaign -- --ignored` (seed: MNBACKUP_CAMPAIGN_SEED).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn tree(root: &Path, rng: &mut Rng) {
    fs::create_dir_all(root.join("etc")).unwrap();
    for i in 0..5 {
        let len = 2_000 + rng.below(60_000) as usize;
        fs::write(root.join(format!("etc/f{i}.txt")), text(rng, len)).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn body(p: &Path) -> Option<serde_json::Value> {
    manifest_body(p)
}

/// Data objects and signature objects a manifest references.
fn refs(v: &serde_json::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(p: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let Some(o) = p["object"].as_str() {
            out.insert(o.to_string());
        }
        if p.get("base").is_some() {
            walk(&p["base"], out);
        }
    }
    let mut data = BTreeSet::new();
    let mut sigs = BTreeSet::new();
    for item in v["items"].as_array().into_iter().flatten() {
        for p in item["pieces"].as_array().into_iter().flatten() {
            walk(p, &mut data);
            if let Some(s) = p["sig"].as_str() {
                sigs.insert(s.to_string());
            }
        }
    }
    (data, sigs)
}

fn obj_path(repo: &Path, id: &str) -> PathBuf {
    repo.join("objects").join(&id[..2]).join(id)
}

fn panicked(o: &Output) -> bool {
    o.status.code() == Some(101) || stderr(o).contains("panicked")
}

#[derive(Default, Debug)]
struct Tally {
    trials: u32,
    by_target: BTreeMap<String, u32>,
    snapshot_exit: BTreeMap<i32, u32>,
    verify_exit: BTreeMap<i32, u32>,
    exports_ok: u32,
    exports_failed: u32,
    success_not_restorable: u32,
    unreadable_manifest_objects_deleted: u32,
    panics: u32,
}

fn campaign(trials: u32, seed: u64) -> Tally {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let base = t.path().join("base");
    let mut rng = Rng(seed | 1);
    tree(&src, &mut rng);
    let s = src.to_str().unwrap().to_string();
    ok(&base, &["init", "--no-packs"]);
    ok(&base, &["snapshot", "--only-files", "--files", &s]);
    // Change some files: the second snapshot has deltas, unchanged and new pieces.
    let mut f0 = fs::read(src.join("etc/f0.txt")).unwrap();
    f0.splice(100..100, b"changed line\n".iter().copied());
    fs::write(src.join("etc/f0.txt"), f0).unwrap();
    fs::write(src.join("etc/new.txt"), text(&mut rng, 5000)).unwrap();
    ok(&base, &["snapshot", "--only-files", "--files", &s]);
    let mut tally = Tally::default();
    for trial in 0..trials {
        let repo = t.path().join(format!("trial{trial}"));
        copy_dir(&base, &repo);
        let manifests: Vec<PathBuf> = {
            let mut v = files_under(&repo.join("snapshots"));
            v.sort();
            v
        };
        let mut data = BTreeSet::new();
        let mut sigs = BTreeSet::new();
        let mut per_manifest = Vec::new();
        for m in &manifests {
            let (d, sg) = refs(&body(m).unwrap());
            data.extend(d.iter().cloned());
            sigs.extend(sg.iter().cloned());
            per_manifest.push((m.clone(), d, sg));
        }
        let data: Vec<String> = data.into_iter().collect();
        let sigs: Vec<String> = sigs.into_iter().collect();
        let (target_kind, path) = match rng.below(10) {
            0..=4 => (
                "object",
                obj_path(&repo, &data[rng.below(data.len() as u64) as usize]),
            ),
            5..=6 if !sigs.is_empty() => (
                "signature",
                obj_path(&repo, &sigs[rng.below(sigs.len() as u64) as usize]),
            ),
            5..=8 => (
                "manifest",
                manifests[rng.below(manifests.len() as u64) as usize].clone(),
            ),
            _ => ("marker", repo.join("mnbackup-repo.json")),
        };
        let op = ["flip", "truncate", "delete"][rng.below(3) as usize];
        let bytes = fs::read(&path).unwrap();
        match op {
            "flip" => {
                let mut b = bytes.clone();
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
                fs::write(&path, b).unwrap();
            }
            "truncate" => {
                let n = rng.below(bytes.len() as u64) as usize;
                fs::write(&path, &bytes[..n]).unwrap();
            }
            _ => fs::remove_file(&path).unwrap(),
        }
        *tally
            .by_target
            .entry(format!("{target_kind} {op}"))
            .or_default() += 1;
        // Manifests that no longer load, and the objects only they know about.
        let mut unreadable_objects = BTreeSet::new();
        for (m, d, sg) in &per_manifest {
            let loads = manifest_loads(m);
            if !loads {
                unreadable_objects.extend(d.iter().cloned());
                unreadable_objects.extend(sg.iter().cloned());
            }
        }
        if rng.below(2) == 0 {
            fs::write(
                repo.join("tmp/inprogress-20200101T000000000Z-0000beef"),
                "20200101T000000000Z-0000beef\n",
            )
            .unwrap();
        }
        let snap = mnb(
            &repo,
            &["--json", "snapshot", "--only-files", "--files", &s],
        );
        let code = snap.status.code().unwrap_or(-1);
        *tally.snapshot_exit.entry(code).or_default() += 1;
        tally.panics += panicked(&snap) as u32;
        for id in &unreadable_objects {
            let p = obj_path(&repo, id);
            if p != path && !p.exists() {
                tally.unreadable_manifest_objects_deleted += 1;
                eprintln!("trial {trial}: object {id} of an unreadable manifest was deleted");
            }
        }
        let v = mnb(&repo, &["verify", "--read-data"]);
        *tally
            .verify_exit
            .entry(v.status.code().unwrap_or(-1))
            .or_default() += 1;
        tally.panics += panicked(&v) as u32;
        let l = mnb(&repo, &["--json", "list"]);
        tally.panics += panicked(&l) as u32;
        let listed: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&l.stdout)
            .unwrap_or_default()
            .iter()
            .filter_map(|x| x["id"].as_str().map(str::to_string))
            .collect();
        let newest = listed.last().cloned();
        for id in &listed {
            let out = t.path().join(format!("out{trial}-{id}"));
            let e = mnb(&repo, &["export", id, out.to_str().unwrap()]);
            tally.panics += panicked(&e) as u32;
            let is_new = code == 0 && Some(id) == newest.as_ref();
            if e.status.success() {
                tally.exports_ok += 1;
                if is_new {
                    let root = out.join("files").join(src.strip_prefix("/").unwrap());
                    for f in files_under(&src) {
                        let rel = f.strip_prefix(&src).unwrap();
                        if fs::read(root.join(rel)).ok() != Some(fs::read(&f).unwrap()) {
                            tally.success_not_restorable += 1;
                            eprintln!("trial {trial}: {} differs in {id}", rel.display());
                        }
                    }
                }
            } else {
                tally.exports_failed += 1;
                if is_new {
                    tally.success_not_restorable += 1;
                    eprintln!(
                        "trial {trial} ({target_kind} {op}): snapshot {id} reported success \
                         and does not export: {}",
                        stderr(&e)
                    );
                }
            }
            let _ = fs::remove_dir_all(&out);
        }
        let _ = fs::remove_dir_all(&repo);
        tally.trials += 1;
    }
    tally
}

fn run(trials: u32) {
    let seed = std::env::var("MNBACKUP_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1200);
    let tally = campaign(trials, seed);
    eprintln!("corruption campaign (seed {seed:#x}): {tally:#?}");
    assert_eq!(tally.trials, trials);
    assert_eq!(tally.success_not_restorable, 0, "{tally:#?}");
    assert_eq!(tally.unreadable_manifest_objects_deleted, 0, "{tally:#?}");
    assert_eq!(tally.panics, 0, "{tally:#?}");
}

#[test]
fn corruption_campaign_25_trials() {
    run(25);
}

#[test]
#[ignore = "the full 100-trial campaign: cargo test --test corruption_campaign -- --ignored"]
fn corruption_campaign_100_trials() {
    run(100);
}
