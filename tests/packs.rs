//! Packs (issue 17, "small objects packed"): many small files round trip byte-exact in few pool
//! files; damage inside a pack is found and named; a lost pack is reported like a lost object;
//! prune removes and rewrites packs; SIGKILL leaves a consistent repository; repositories
//! without packs stay as they are and copy both ways.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn exported(out: &Path, src: &Path) -> PathBuf {
    out.join("files").join(src.strip_prefix("/").unwrap())
}

/// `n` small files of 100 B .. 20 KB in a few directories, from `seed`.
fn small_tree(root: &Path, seed: u64, n: usize) {
    let mut rng = Rng(seed);
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        let len = 100 + rng.below(20_000) as usize;
        fs::write(dir.join(format!("f{i:04}.conf")), text(&mut rng, len)).unwrap();
    }
}

fn count(dir: &Path) -> usize {
    if dir.exists() {
        files_under(dir).len()
    } else {
        0
    }
}

fn stats(repo: &Path) -> serde_json::Value {
    list(repo).last().unwrap()["stats"].clone()
}

fn packs_of(repo: &Path) -> Vec<PathBuf> {
    files_under(&repo.join("packs"))
}

#[test]
fn many_small_files_round_trip_in_few_pool_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    small_tree(&src, 1, 400);
    let s = src.to_str().unwrap();

    let packed = t.path().join("packed");
    ok(&packed, &["init"]);
    ok(&packed, &["snapshot", "--files", s]);
    let objects = stats(&packed)["objects_added"].as_u64().unwrap();
    let pool_files = count(&packed.join("objects")) + count(&packed.join("packs"));
    println!("packs: {objects} objects in {pool_files} object/pack files");
    assert!(objects >= 400, "{objects}");
    assert_eq!(
        count(&packed.join("objects")),
        0,
        "small objects were written as files"
    );
    assert!(
        pool_files <= 5,
        "{pool_files} pool files for {objects} objects"
    );
    assert_eq!(
        count(&packed.join("index")),
        pool_files,
        "one index per pack"
    );
    let out = t.path().join("out");
    ok(&packed, &["export", "latest", out.to_str().unwrap()]);
    assert_same(&capture(&src), &capture(&exported(&out, &src)));
    ok(&packed, &["verify", "--read-data"]);

    // A repository without packs keeps one file per object, as the first release wrote them.
    let loose = t.path().join("loose");
    ok(&loose, &["init", "--no-packs"]);
    ok(&loose, &["snapshot", "--files", s]);
    assert!(!loose.join("packs").exists());
    assert_eq!(
        count(&loose.join("objects")) as u64,
        stats(&loose)["objects_added"].as_u64().unwrap()
    );
    assert!(!fs::read_to_string(loose.join("mnbackup-repo.json"))
        .unwrap()
        .contains("packs"));

    // An unchanged rerun writes no pack; a changed file goes into one new pack.
    ok(&packed, &["snapshot", "--files", s]);
    assert_eq!(count(&packed.join("packs")), pool_files);
    fs::write(src.join("d0/f0000.conf"), b"changed\n").unwrap();
    ok(&packed, &["snapshot", "--files", s]);
    assert_eq!(count(&packed.join("packs")), pool_files + 1);
    let out2 = t.path().join("out2");
    ok(&packed, &["export", "latest", out2.to_str().unwrap()]);
    assert_same(&capture(&src), &capture(&exported(&out2, &src)));

    // copy both ways: packed -> loose and loose -> packed, byte-exact.
    ok(&packed, &["copy", "--to", loose.to_str().unwrap()]);
    let out3 = t.path().join("out3");
    ok(&loose, &["export", "latest", out3.to_str().unwrap()]);
    assert_same(&capture(&src), &capture(&exported(&out3, &src)));
    assert!(
        !loose.join("packs").exists(),
        "copy wrote packs into a repository without"
    );
    let packed2 = t.path().join("packed2");
    ok(&packed2, &["init"]);
    ok(&loose, &["copy", "--to", packed2.to_str().unwrap()]);
    assert_eq!(count(&packed2.join("objects")), 0);
    ok(&packed2, &["verify", "--read-data"]);
    let out4 = t.path().join("out4");
    ok(&packed2, &["export", "latest", out4.to_str().unwrap()]);
    assert_same(&capture(&src), &capture(&exported(&out4, &src)));
}

/// Flip one byte inside the stored bytes of the object of `d3/f0003.conf` in its pack.
fn flip_in_pack(repo: &Path, src: &Path) -> String {
    let item = format!("files{}/d3/f0003.conf", src.display());
    let id = ids(repo).pop().unwrap();
    let v = manifest_body(&repo.join(format!("snapshots/{id}.json"))).expect("the manifest opens");
    let obj = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == item.as_str())
        .map(|i| i["pieces"][0]["object"].clone())
        .unwrap();
    let obj = obj.as_str().unwrap().to_string();
    for idx in files_under(&repo.join("index")) {
        let text = fs::read_to_string(&idx).unwrap();
        if let Some(line) = text.lines().find(|l| l.starts_with(&obj)) {
            let f: Vec<&str> = line.split(' ').collect();
            let (off, len): (usize, usize) = (f[2].parse().unwrap(), f[3].parse().unwrap());
            let pack = idx.file_name().unwrap().to_str().unwrap();
            let p = repo.join("packs").join(&pack[..2]).join(pack);
            let mut b = fs::read(&p).unwrap();
            b[off + len / 2] ^= 0x20;
            fs::write(&p, b).unwrap();
            return item;
        }
    }
    panic!("object {obj} is in no index");
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_and_named_then_repaired() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    small_tree(&src, 2, 60);
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    ok(&repo, &["snapshot", "--files", src.to_str().unwrap()]);
    let item = flip_in_pack(&repo, &src);
    // The size check alone sees nothing; reading does.
    let o = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        all.contains("d3/f0003.conf"),
        "verify does not name the item: {all}"
    );
    let o = mnb(&repo, &["cat", "latest", &item]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    // The other files of the same pack still restore.
    let other = format!("files{}/d4/f0004.conf", src.display());
    let o = ok(&repo, &["cat", "latest", &other]);
    assert_eq!(o.stdout, fs::read(src.join("d4/f0004.conf")).unwrap());
    // repair drops the damaged object from its pack (the rest moves to a new pack) and marks
    // the snapshot incomplete; the next snapshot stores the file again.
    let o = mnb(&repo, &["repair"]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    ok(&repo, &["verify", "--read-data"]);
    ok(&repo, &["snapshot", "--files", src.to_str().unwrap()]);
    let o = ok(&repo, &["cat", "latest", &item]);
    assert_eq!(o.stdout, fs::read(src.join("d3/f0003.conf")).unwrap());
    ok(&repo, &["verify", "--read-data"]);
}

#[test]
fn a_deleted_pack_is_reported_as_a_missing_object_is() {
    let mut codes = Vec::new();
    for packs in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("node");
        small_tree(&src, 3, 30);
        let repo = t.path().join("repo");
        ok(
            &repo,
            &if packs {
                vec!["init"]
            } else {
                vec!["init", "--no-packs"]
            },
        );
        ok(&repo, &["snapshot", "--files", src.to_str().unwrap()]);
        let victims = if packs {
            packs_of(&repo)
        } else {
            files_under(&repo.join("objects"))
        };
        assert!(!victims.is_empty());
        for v in &victims {
            fs::remove_file(v).unwrap();
        }
        let v = mnb(&repo, &["verify"]);
        let all = format!("{}{}", String::from_utf8_lossy(&v.stdout), stderr(&v));
        assert!(all.contains("f0001.conf"), "{all}");
        let out = t.path().join("out");
        let e = mnb(&repo, &["export", "latest", out.to_str().unwrap()]);
        assert!(stderr(&e).contains("f000"), "{}", stderr(&e));
        codes.push((v.status.code(), e.status.code()));
    }
    assert_ne!(codes[0].0, Some(0));
    assert_ne!(codes[0].1, Some(0));
    assert_eq!(
        codes[0], codes[1],
        "packs and object files report a loss differently"
    );
}

#[test]
fn prune_after_forget_removes_and_rewrites_packs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let s = src.to_str().unwrap();
    // Snapshot 1: 300 files. Snapshot 2: 20 of them plus 300 new ones (new packs).
    small_tree(&src, 4, 300);
    ok(&repo, &["snapshot", "--files", s]);
    let first_packs = packs_of(&repo);
    for e in files_under(&src) {
        let n: usize = e.file_stem().unwrap().to_str().unwrap()[1..]
            .parse()
            .unwrap();
        if n >= 20 {
            fs::remove_file(e).unwrap();
        }
    }
    let newer = src.join("new");
    small_tree(&newer, 5, 300);
    ok(&repo, &["snapshot", "--files", s]);
    let ids = ids(&repo);
    ok(&repo, &["forget", &ids[0]]);
    let o = ok(&repo, &["--json", "prune"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = r["prune"].clone();
    println!("{r}");
    let removed = r["packs_removed"].as_u64().unwrap() + r["packs_repacked"].as_u64().unwrap();
    assert!(removed >= 1, "{r}");
    assert!(r["objects_removed"].as_u64().unwrap() >= 200, "{r}");
    let now = packs_of(&repo);
    assert!(
        first_packs.iter().all(|p| !now.contains(p)),
        "a pack of the forgotten snapshot's mostly unused objects was kept"
    );
    assert_eq!(count(&repo.join("index")), now.len());
    ok(&repo, &["verify", "--read-data"]);
    let out = t.path().join("out");
    ok(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_same(&capture(&src), &capture(&exported(&out, &src)));
    // A second prune has nothing to do.
    let o = ok(&repo, &["--json", "prune"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["prune"]["objects_removed"], 0, "{r}");
}

#[test]
fn sigkill_mid_snapshot_of_small_files_then_rerun() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    small_tree(&src, 6, 200);
    ok(&repo, &["init"]);
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--files", s]);
    let mut killed = 0;
    for (i, delay_ms) in [5u64, 15, 30, 60, 100, 160].iter().enumerate() {
        small_tree(&src.join(format!("new{i}")), 100 + i as u64, 600);
        let mut child = Command::new(bin())
            .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
            .args(["-q", "-r", repo.to_str().unwrap(), "snapshot", "--files", s])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        if !child.wait().unwrap().success() {
            killed += 1;
        }
        for id in ids(&repo) {
            let out = t.path().join(format!("x-{i}-{id}"));
            ok(&repo, &["export", &id, out.to_str().unwrap()]);
            fs::remove_dir_all(&out).unwrap();
        }
    }
    assert!(killed >= 2, "only {killed} runs were killed mid-way");
    ok(&repo, &["snapshot", "--files", s]);
    ok(&repo, &["prune"]);
    ok(&repo, &["verify", "--read-data"]);
    let out = t.path().join("final");
    ok(&repo, &["export", "latest", out.to_str().unwrap()]);
    assert_same(&capture(&src), &capture(&exported(&out, &src)));
}
