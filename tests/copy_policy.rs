//! `copy` by retention policy (issue 18 item 2): `copy --keep-*` copies exactly the snapshots
//! `forget --dry-run` with the same policy keeps (per host, incomplete snapshots included, as
//! forget decides), intersected with ids and `--host`; a second copy sends nothing; a `[[copy]]`
//! target's keep_* work through `copy --to NAME`; contradictory selections are refused with
//! exit 2. Snapshot times are set by rewriting the manifests (the CLI cannot choose them).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use common::*;

fn set_time(repo: &Path, id: &str, time: &str) {
    let t = NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc();
    forge_manifest(repo, Some(id), |v| {
        v["time"] = serde_json::to_value(t).unwrap();
        v["finished"] = serde_json::to_value(t + chrono::Duration::seconds(5)).unwrap();
    });
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn set(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().or(x["id"].as_str()).unwrap().to_string())
        .collect()
}

/// The ids `forget --dry-run` with `policy` keeps (and would remove), with `cfg`.
fn forget_plan(repo: &Path, cfg: &str, policy: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut args = vec!["-c", cfg, "--json", "forget", "--dry-run"];
    args.extend_from_slice(policy);
    let v = json(&ok(repo, &args));
    (set(&v["keep"]), set(&v["remove"]))
}

fn id_set(repo: &Path) -> BTreeSet<String> {
    ids(repo).into_iter().collect()
}

fn pick(ids: &[String], which: &[usize]) -> BTreeSet<String> {
    which.iter().map(|&i| ids[i].clone()).collect()
}

/// A repository with six snapshots of this node's series and three of host `other` at set
/// times, the fourth of this node incomplete; returns it and the two series' ids, oldest first.
fn two_series(t: &Path) -> (PathBuf, Vec<String>, Vec<String>) {
    let tree = t.join("node");
    fs::create_dir_all(&tree).unwrap();
    let mut rng = Rng(18);
    fs::write(tree.join("big.sql"), text(&mut rng, 60_000)).unwrap();
    let repo = t.join("repo");
    ok(&repo, &["init"]);
    // Six snapshots of this node's series, three of host `other`.
    let s = tree.to_str().unwrap();
    for i in 0..9 {
        fs::write(tree.join("changing.conf"), format!("version {i}\n")).unwrap();
        let mut args = vec!["snapshot", "--only-files", "--files", s];
        if i >= 6 {
            args.extend_from_slice(&["--host", "other"]);
        }
        ok(&repo, &args);
    }
    let all = ids(&repo);
    assert_eq!(all.len(), 9);
    let hosts: Vec<String> = list(&repo)
        .iter()
        .map(|m| m["hostname"].as_str().unwrap_or_default().to_string())
        .collect();
    let a: Vec<String> = (0..9)
        .filter(|&i| hosts[i] != "other")
        .map(|i| all[i].clone())
        .collect();
    let o: Vec<String> = (0..9)
        .filter(|&i| hosts[i] == "other")
        .map(|i| all[i].clone())
        .collect();
    assert_eq!((a.len(), o.len()), (6, 3), "{hosts:?}");
    let times_a = [
        "2026-01-01 10:00", // Thu, ISO week 1
        "2026-01-05 09:00", // Mon, week 2
        "2026-01-05 18:00",
        "2026-01-06 08:00", // incomplete (below)
        "2026-01-07 08:00",
        "2026-01-07 20:00",
    ];
    for (id, tm) in a.iter().zip(times_a) {
        set_time(&repo, id, tm);
    }
    for (id, tm) in o
        .iter()
        .zip(["2026-01-02 12:00", "2026-01-03 12:00", "2026-01-03 13:00"])
    {
        set_time(&repo, id, tm);
    }
    // An incomplete snapshot carries its gap; forget decides on it like on any other.
    forge_manifest(&repo, Some(&a[3]), |v| {
        v["complete"] = false.into();
        v["gaps"] = serde_json::json!([{"source": "files", "kind": "file",
            "subject": "/node/lost.conf", "reason": "Permission denied (os error 13)"}]);
    });

    (repo, a, o)
}

#[test]
fn copy_by_policy_copies_what_forget_keeps() {
    let t = tempfile::tempdir().unwrap();
    let (repo, a, o) = two_series(t.path());
    let d1 = t.path().join("d1");
    let d2 = t.path().join("d2");
    let d3 = t.path().join("d3");
    let d4 = t.path().join("d4");
    let d5 = t.path().join("d5");
    for d in [&d1, &d2, &d3, &d4, &d5] {
        ok(d, &["init"]);
    }
    let cfg = t.path().join("mnbackup.toml");
    fs::write(
        &cfg,
        format!(
            "[daemon]\ntimezone = \"UTC\"\n\
             [[copy]]\nname = \"off\"\nto = \"{}\"\nkeep_last = 2\n\
             [[copy]]\nname = \"newest\"\nto = \"{}\"\nsnapshots = \"latest\"\n",
            d2.display(),
            d5.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();

    // The policy: 2 daily, 2 weekly, per host.
    let policy = ["--keep-daily", "2", "--keep-weekly", "2"];
    let (keep, remove) = forget_plan(&repo, c, &policy);
    // Host A: days Jan 7 (a5), Jan 6 (a3); weeks 2 (a5), 1 (a0). Other: Jan 3 (o2), Jan 2 (o0).
    let mut expected = pick(&a, &[0, 3, 5]);
    expected.extend(pick(&o, &[0, 2]));
    assert_eq!(keep, expected, "forget's own decision changed");
    assert!(keep.contains(&a[3]), "forget keeps the incomplete snapshot");

    let mut args = vec!["-c", c, "--json", "copy", "--to", d1.to_str().unwrap()];
    args.extend_from_slice(&policy);
    let v = json(&ok(&repo, &args));
    assert_eq!(set(&v["copied"]), keep, "{v}");
    assert_eq!(set(&v["not_kept"]), remove, "{v}");
    assert_eq!(id_set(&d1), keep);
    let copied_list = list(&d1);
    let inc = copied_list
        .iter()
        .find(|m| m["id"] == a[3].as_str())
        .unwrap();
    assert_eq!(inc["complete"], false, "{inc}");
    assert!(v["objects_sent"].as_u64().unwrap() > 0, "{v}");
    ok(&d1, &["verify", "--read-data"]);

    // A second copy with the same policy sends nothing.
    let v = json(&ok(&repo, &args));
    assert_eq!(set(&v["copied"]), BTreeSet::new(), "{v}");
    assert_eq!(set(&v["already_there"]), keep, "{v}");
    assert_eq!(v["objects_sent"], 0, "{v}");
    assert_eq!(v["bytes_sent"], 0, "{v}");
    assert_eq!(id_set(&d1), keep);

    // The target's keep_last = 2 through `copy --to NAME`, compared with forget --keep-last 2.
    let (keep_last, _) = forget_plan(&repo, c, &["--keep-last", "2"]);
    let mut want = pick(&a, &[4, 5]);
    want.extend(pick(&o, &[1, 2]));
    assert_eq!(keep_last, want);
    let v = json(&ok(&repo, &["-c", c, "--json", "copy", "--to", "off"]));
    assert_eq!(set(&v["copied"]), keep_last, "{v}");
    assert_eq!(id_set(&d2), keep_last);
    let o2 = ok(&repo, &["-c", c, "copy", "--to", "off"]);
    assert!(
        String::from_utf8_lossy(&o2.stdout).contains("left out by the keep policy"),
        "{}",
        String::from_utf8_lossy(&o2.stdout)
    );
    assert_eq!(id_set(&d2), keep_last);

    // Ids and the policy: the intersection.
    let mut args = vec!["-c", c, "--json", "copy", &a[0], &a[1], &a[5], "--to"];
    args.push(d3.to_str().unwrap());
    args.extend_from_slice(&policy);
    let v = json(&ok(&repo, &args));
    assert_eq!(set(&v["copied"]), pick(&a, &[0, 5]), "{v}");
    assert_eq!(set(&v["not_kept"]), pick(&a, &[1]), "{v}");
    assert_eq!(id_set(&d3), pick(&a, &[0, 5]));

    // --host and the policy: that host's series as `forget --host` decides it.
    let (keep_other, _) = forget_plan(
        &repo,
        c,
        &["--host", "other", "--keep-daily", "1", "--keep-last", "2"],
    );
    assert_eq!(keep_other, pick(&o, &[1, 2]));
    let v = json(&ok(
        &repo,
        &[
            "-c",
            c,
            "--json",
            "copy",
            "--to",
            d4.to_str().unwrap(),
            "--host",
            "other",
            "--keep-daily",
            "1",
            "--keep-last",
            "2",
        ],
    ));
    assert_eq!(set(&v["copied"]), keep_other, "{v}");
    assert_eq!(id_set(&d4), keep_other);

    // Refusals, exit 2, nothing copied: a `latest` target with --keep-*, a policy of zeros.
    let o1 = mnb(
        &repo,
        &["-c", c, "copy", "--to", "newest", "--keep-daily", "3"],
    );
    assert_eq!(o1.status.code(), Some(2), "{}", stderr(&o1));
    assert!(
        stderr(&o1).contains("\"latest\"") && stderr(&o1).contains("--keep-*"),
        "{}",
        stderr(&o1)
    );
    let o1 = mnb(
        &repo,
        &[
            "-c",
            c,
            "copy",
            "--to",
            d5.to_str().unwrap(),
            "--keep-daily",
            "0",
        ],
    );
    assert_eq!(o1.status.code(), Some(2), "{}", stderr(&o1));
    assert!(stderr(&o1).contains("keeps nothing"), "{}", stderr(&o1));
    assert!(ids(&d5).is_empty());
    // Ids given replace the target's `latest`: with --keep-*, the kept ones among them.
    let v = json(&ok(
        &repo,
        &[
            "-c",
            c,
            "--json",
            "copy",
            &a[3],
            &a[4],
            "--to",
            "newest",
            "--keep-daily",
            "2",
        ],
    ));
    assert_eq!(set(&v["copied"]), pick(&a, &[3]), "{v}");
}

#[test]
fn contradictory_copy_targets_are_refused() {
    let t = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\nsnapshots = \"latest\"\nkeep_daily = 7\n",
            "snapshots = \"latest\" and keep_* exclude each other",
        ),
        (
            "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\nkeep_daily = 0\nkeep_last = 0\n",
            "every keep_* is 0",
        ),
        (
            "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\nkeep_dayly = 7\n",
            "unknown field `keep_dayly`",
        ),
    ] {
        let p = t.path().join("mnbackup.toml");
        fs::write(&p, text).unwrap();
        let o = mnb(
            &t.path().join("repo"),
            &["-c", p.to_str().unwrap(), "config", "check"],
        );
        assert_eq!(o.status.code(), Some(2), "{text}\n{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{want:?} not in {}", stderr(&o));
    }
    // A good one is accepted and shown by `config check`.
    let p = t.path().join("mnbackup.toml");
    fs::write(
        &p,
        "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\nkeep_daily = 7\nkeep_weekly = 4\n",
    )
    .unwrap();
    let o = mnb(
        &t.path().join("repo"),
        &["-c", p.to_str().unwrap(), "config", "check"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("keep_daily = 7") && out.contains("keep_weekly = 4"),
        "{out}"
    );
}
