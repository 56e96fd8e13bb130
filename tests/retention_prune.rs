//! Retention and prune through the real repository (issue 5): `forget --keep-*` picks exactly
//! the expected snapshots for tables of snapshot times (times are set by rewriting the
//! manifests, since the CLI cannot choose them), `forget` removes exactly those, `prune` frees
//! space without touching anything a kept snapshot needs (also the delta bases that belonged
//! to forgotten snapshots), `prune --dry-run` removes nothing, and a damaged manifest stops
//! prune.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use common::*;

const SNAPSHOTS: usize = 8;

/// Rewrites the `time` of snapshot `id`'s manifest, with a valid header checksum.
fn set_time(repo: &Path, id: &str, time: DateTime<Utc>) {
    forge_manifest(repo, Some(id), |v| {
        v["time"] = serde_json::to_value(time).unwrap()
    });
}

fn utc(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
}

/// Every object file with its size.
fn objects(repo: &Path) -> BTreeMap<PathBuf, u64> {
    files_under(&repo.join("objects"))
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

fn config(dir: &Path, tz: &str) -> PathBuf {
    let p = dir.join(format!("mnbackup-{}.toml", tz.replace('/', "_")));
    fs::write(&p, format!("[daemon]\ntimezone = \"{tz}\"\n")).unwrap();
    p
}

/// `forget --dry-run --json` with the policy; returns (kept, removed) as snapshot indexes.
fn plan(repo: &Path, cfg: &Path, ids: &[String], policy: &[&str]) -> (Vec<usize>, Vec<usize>) {
    let mut args = vec!["-c", cfg.to_str().unwrap(), "--json", "forget", "--dry-run"];
    args.extend_from_slice(policy);
    let v: serde_json::Value = serde_json::from_slice(&ok(repo, &args).stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    let idx = |id: &str| {
        ids.iter()
            .position(|i| i == id)
            .unwrap_or_else(|| panic!("unknown id {id}"))
    };
    let mut keep: Vec<usize> = v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| idx(k["id"].as_str().unwrap()))
        .collect();
    let mut remove: Vec<usize> = v["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| idx(r.as_str().unwrap()))
        .collect();
    keep.sort();
    remove.sort();
    (keep, remove)
}

fn exported(out: &Path, src: &Path) -> PathBuf {
    out.join("files").join(src.strip_prefix("/").unwrap())
}

#[test]
#[allow(clippy::too_many_lines)] // one end-to-end scenario, read top to bottom
fn forget_and_prune_keep_exactly_the_policy_and_every_kept_snapshot_restores() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("pool/repo");
    let mut rng = Rng(2026);
    fs::create_dir_all(src.join("var/lib/mysql-backup")).unwrap();
    fs::create_dir_all(src.join("etc/zstack")).unwrap();
    // A big dump that changes a little every time (stored as deltas), a small config, and a
    // log whose content is new every time (stored in full, freed once its snapshot is gone).
    let mut dump = text(&mut rng, 3_000_000);
    fs::write(
        src.join("etc/zstack/zstack.properties"),
        b"DB.user=zstack\n",
    )
    .unwrap();
    ok(&repo, &["init", "--no-packs"]);
    let s = src.to_str().unwrap();
    let mut trees = Vec::new();
    for i in 0..SNAPSHOTS {
        let at = 100_000 + i * 350_000;
        dump.splice(
            at..at,
            format!("INSERT INTO VmInstanceEO VALUES ('vm-{i}');\n").bytes(),
        );
        fs::write(src.join("var/lib/mysql-backup/zstack.sql"), &dump).unwrap();
        fs::write(src.join("var/lib/rotating.log"), text(&mut rng, 200_000)).unwrap();
        ok(&repo, &["snapshot", "--files", s]);
        trees.push(capture(&src));
    }
    let ids = ids(&repo);
    assert_eq!(ids.len(), SNAPSHOTS);
    let snaps = list(&repo);
    for (i, sn) in snaps.iter().enumerate().skip(1) {
        assert!(
            sn["stats"]["pieces_delta"].as_u64().unwrap() > 0,
            "snapshot {i} has no delta pieces: {}",
            sn["stats"]
        );
    }

    // Table: snapshot times (oldest first, one per snapshot) and the expected kept indexes
    // for --keep-daily 3 --keep-last 1, in UTC and in Asia/Shanghai (UTC+8).
    let utc_cfg = config(t.path(), "UTC");
    let sh_cfg = config(t.path(), "Asia/Shanghai");
    let policy = ["--keep-daily", "3", "--keep-last", "1"];
    struct Case {
        name: &'static str,
        times: [&'static str; SNAPSHOTS],
        utc: &'static [usize],
        shanghai: &'static [usize],
    }
    let cases = [
        Case {
            name: "twice daily, one day with two, a gap",
            times: [
                "2026-01-01 10:00:00",
                "2026-01-01 22:00:00",
                "2026-01-02 09:00:00",
                "2026-01-02 21:00:00",
                "2026-01-03 08:00:00",
                "2026-01-04 12:00:00",
                "2026-01-04 12:30:00",
                "2026-01-05 00:00:00",
            ],
            // newest of Jan 5 (last + daily), Jan 4, Jan 3
            utc: &[4, 6, 7],
            // local: Jan1 18:00, Jan2 06:00, Jan2 17:00, Jan3 05:00, Jan3 16:00, Jan4 20:00, Jan4 20:30, Jan5 08:00
            shanghai: &[4, 6, 7],
        },
        Case {
            name: "only two days: the oldest is kept as well",
            times: [
                "2026-01-01 01:00:00",
                "2026-01-01 02:00:00",
                "2026-01-01 03:00:00",
                "2026-01-02 01:00:00",
                "2026-01-02 05:00:00",
                "2026-01-02 06:00:00",
                "2026-01-02 07:00:00",
                "2026-01-02 08:00:00",
            ],
            utc: &[0, 2, 7],
            // local: Jan1 09,10,11; Jan2 09,13,14,15,16 -> same days
            shanghai: &[0, 2, 7],
        },
        Case {
            name: "day boundaries",
            times: [
                "2026-01-01 10:00:00",
                "2026-01-01 15:59:59",
                "2026-01-01 16:00:00",
                "2026-01-02 03:00:00",
                "2026-01-02 15:00:00",
                "2026-01-02 16:30:00",
                "2026-01-02 20:00:00",
                "2026-01-03 01:00:00",
            ],
            // UTC days: Jan1 {0,1,2}, Jan2 {3,4,5,6}, Jan3 {7}
            utc: &[2, 6, 7],
            // Shanghai days: Jan1 {0,1}, Jan2 {2,3,4}, Jan3 {5,6,7}
            shanghai: &[1, 4, 7],
        },
    ];
    for case in &cases {
        for (i, tm) in case.times.iter().enumerate() {
            set_time(&repo, &ids[i], utc(tm));
        }
        for (cfg, expected) in [(&utc_cfg, case.utc), (&sh_cfg, case.shanghai)] {
            let (keep, remove) = plan(&repo, cfg, &ids, &policy);
            assert_eq!(keep, expected, "{}: kept with {}", case.name, cfg.display());
            let all: Vec<usize> = (0..SNAPSHOTS).filter(|i| !expected.contains(i)).collect();
            assert_eq!(remove, all, "{}: removed with {}", case.name, cfg.display());
        }
        assert_eq!(
            common::ids(&repo).len(),
            SNAPSHOTS,
            "{}: a dry run removed something",
            case.name
        );
    }

    // The real forget with the first case: removes exactly 0, 1, 2, 3 and 5.
    for (i, tm) in cases[0].times.iter().enumerate() {
        set_time(&repo, &ids[i], utc(tm));
    }
    let c = utc_cfg.to_str().unwrap();
    let before = objects(&repo);
    let mut args = vec!["-c", c, "--json", "forget"];
    args.extend_from_slice(&policy);
    let v: serde_json::Value = serde_json::from_slice(&ok(&repo, &args).stdout).unwrap();
    let removed: Vec<&str> = v["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut expected_removed: Vec<&str> =
        [0, 1, 2, 3, 5].iter().map(|&i| ids[i].as_str()).collect();
    let mut removed_sorted = removed.clone();
    removed_sorted.sort();
    expected_removed.sort();
    assert_eq!(removed_sorted, expected_removed);
    let kept_ids: Vec<String> = [4, 6, 7].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(common::ids(&repo), kept_ids);
    assert_eq!(objects(&repo), before, "forget must not remove objects");
    // Snapshot 4 is made of deltas whose bases belonged to the forgotten snapshot 3 (and older).
    let kept = list(&repo);
    assert!(kept[0]["stats"]["pieces_delta"].as_u64().unwrap() > 0);

    // prune --dry-run reports but removes nothing.
    let v: serde_json::Value =
        serde_json::from_slice(&ok(&repo, &["-c", c, "--json", "prune", "--dry-run"]).stdout)
            .unwrap();
    let would = v["prune"]["objects_removed"].as_u64().unwrap();
    let would_bytes = v["prune"]["bytes_removed"].as_u64().unwrap();
    assert!(would > 0, "{v}");
    assert_eq!(objects(&repo), before, "prune --dry-run removed something");

    // A damaged manifest stops prune (exit 5) before anything is removed.
    let victim = repo.join("snapshots").join(format!("{}.json", ids[6]));
    let good = fs::read(&victim).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 2;
    bad[last] ^= 0x20;
    fs::write(&victim, &bad).unwrap();
    let o = mnb(&repo, &["-c", c, "prune"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&ids[6]) && stderr(&o).contains("nothing was removed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        objects(&repo),
        before,
        "prune removed objects despite a damaged manifest"
    );
    fs::write(&victim, &good).unwrap();

    // The real prune frees exactly what the dry run announced.
    let v: serde_json::Value =
        serde_json::from_slice(&ok(&repo, &["-c", c, "--json", "prune"]).stdout).unwrap();
    assert_eq!(
        v["prune"]["objects_removed"].as_u64().unwrap(),
        would,
        "{v}"
    );
    let after = objects(&repo);
    let sum = |m: &BTreeMap<PathBuf, u64>| m.values().sum::<u64>();
    assert!(sum(&after) < sum(&before), "the pool did not shrink");
    assert_eq!(sum(&before) - sum(&after), would_bytes);
    assert!(after.keys().all(|k| before.contains_key(k)));

    // Every kept snapshot restores byte for byte, and the repository verifies.
    for &i in &[4usize, 6, 7] {
        let out = t.path().join(format!("export-{i}"));
        ok(&repo, &["export", &ids[i], out.to_str().unwrap()]);
        assert_same(&trees[i], &capture(&exported(&out, &src)));
    }
    ok(&repo, &["verify", "--read-data"]);
    // Nothing left to prune.
    let v: serde_json::Value =
        serde_json::from_slice(&ok(&repo, &["-c", c, "--json", "prune"]).stdout).unwrap();
    assert_eq!(v["prune"]["objects_removed"], 0);
}
