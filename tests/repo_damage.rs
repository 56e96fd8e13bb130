//! Issue 12: the repository survives its own damage (leftover clean-up, reuse of damaged
//! objects, the marker, repair).

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn tree(root: &Path, rng: &mut Rng) {
    fs::create_dir_all(root.join("etc")).unwrap();
    for i in 0..4 {
        fs::write(root.join(format!("etc/f{i}.txt")), text(rng, 50_000)).unwrap();
    }
}

fn objects(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut v = files_under(&repo.join("objects"));
    v.sort();
    v
}

fn export_ok(repo: &Path, id: &str, out: &Path) -> bool {
    mnb(repo, &["export", id, out.to_str().unwrap()])
        .status
        .success()
}

/// Item 1: after an interrupted snapshot, the clean-up must not delete the objects of a
/// snapshot whose manifest does not load (damaged, or written by a newer version).
#[test]
fn leftover_cleanup_keeps_objects_of_an_unreadable_manifest() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    let mut rng = Rng(12);
    tree(&src, &mut rng);
    ok(&repo, &["init", "--no-packs"]);
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    fs::write(src.join("etc/f0.txt"), text(&mut rng, 80_000)).unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let second = ids(&repo)[1].clone();
    let before = objects(&repo);
    // The second manifest is damaged; an interrupted run left its in-progress record.
    let mf = repo.join("snapshots").join(format!("{second}.json"));
    let good = fs::read(&mf).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 10] ^= 0x20;
    fs::write(&mf, &bad).unwrap();
    fs::write(
        repo.join("tmp/inprogress-20200101T000000000Z-0000beef"),
        "20200101T000000000Z-0000beef\n",
    )
    .unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let after = objects(&repo);
    for o in &before {
        assert!(after.contains(o), "object {} was deleted", o.display());
    }
    fs::write(&mf, &good).unwrap();
    let v = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
}

/// Item 1: the objects an interrupted run recorded as its own are removed, and only those.
#[test]
fn leftover_cleanup_removes_only_what_the_interrupted_run_wrote() {
    use mnbackup::repo::{ObjectType, Repo};
    let t = tempfile::tempdir().unwrap();
    let (repo, _) = Repo::init_with(
        mnbackup::store::open(t.path().join("repo").to_str().unwrap()).unwrap(),
        mnbackup::repo::FORMAT_VERSION,
        None,
        false,
    )
    .unwrap();
    let (kept, _, _) = repo.put_object(ObjectType::Full, b"unrelated").unwrap();
    let rec = repo
        .mark_in_progress("20200101T000000000Z-0000beef")
        .unwrap();
    let (mine, _, new) = repo
        .put_object(ObjectType::Full, b"written by the run")
        .unwrap();
    assert!(new);
    rec.record(std::slice::from_ref(&mine)).unwrap();
    drop(rec);
    let (files, _) = repo.clean_leftovers().unwrap();
    assert_eq!(files, 2, "the record and the run's one object");
    assert!(repo.object_size(&mine).unwrap().is_none());
    assert!(repo.object_size(&kept).unwrap().is_some());
}

/// Item 2: a missing or truncated object is not reused by the next snapshot: the piece is
/// written anew (and so every snapshot using that object heals).
#[test]
fn next_snapshot_rewrites_missing_and_truncated_objects() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    let mut rng = Rng(21);
    tree(&src, &mut rng);
    ok(&repo, &["init", "--no-packs"]);
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let objs = objects(&repo);
    assert!(objs.len() >= 4);
    for (i, o) in objs.iter().enumerate() {
        if i % 2 == 0 {
            fs::remove_file(o).unwrap();
        } else {
            let b = fs::read(o).unwrap();
            fs::write(o, &b[..b.len() / 2]).unwrap();
        }
    }
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let all = ids(&repo);
    for id in &all {
        let out = t.path().join(format!("out-{id}"));
        assert!(export_ok(&repo, id, &out), "snapshot {id} does not export");
    }
    let v = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

/// Item 2: a damaged object of the right size is found by `verify --read-data`, recorded, and
/// written anew by the next snapshot.
#[test]
fn verify_records_damage_and_the_next_snapshot_rewrites_it() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    let mut rng = Rng(22);
    tree(&src, &mut rng);
    ok(&repo, &["init", "--no-packs"]);
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    for o in objects(&repo) {
        let mut b = fs::read(&o).unwrap();
        let n = b.len();
        b[n - 3] ^= 0x01;
        fs::write(&o, &b).unwrap();
    }
    let v = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(v.status.code(), Some(5));
    assert!(!files_under(&repo.join("damaged")).is_empty());
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let latest = ids(&repo).pop().unwrap();
    let out = t.path().join("out");
    assert!(export_ok(&repo, &latest, &out));
    assert_same(
        &capture(&src),
        &capture(&out.join("files").join(src.strip_prefix("/").unwrap())),
    );
    let v = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    assert!(files_under(&repo.join("damaged")).is_empty());
}

/// Item 2: `repair` drops what cannot be recovered, records it as a gap and says what was lost.
#[test]
fn repair_drops_unrecoverable_items_and_says_which() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("repo");
    let mut rng = Rng(23);
    tree(&src, &mut rng);
    ok(&repo, &["init", "--no-packs"]);
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let id = ids(&repo)[0].clone();
    // Find the object of etc/f1.txt and remove it.
    let item = format!("files{}/etc/f1.txt", src.display());
    let show = ok(&repo, &["--json", "show", &id]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("f1.txt"));
    let body = manifest_body(&repo.join("snapshots").join(format!("{id}.json"))).unwrap();
    let it = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == item.as_str())
        .unwrap_or_else(|| panic!("no item {item}"));
    let obj = it["pieces"][0]["piece"]["data"]["object"]
        .as_str()
        .or_else(|| it["pieces"][0]["object"].as_str())
        .expect("object id")
        .to_string();
    fs::remove_file(repo.join("objects").join(&obj[..2]).join(&obj)).unwrap();
    let r = mnb(&repo, &["repair"]);
    assert_eq!(r.status.code(), Some(10), "{}", stderr(&r));
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains(&id) && out.contains("f1.txt"), "{out}");
    let v = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let l = list(&repo);
    assert_eq!(l[0]["complete"], false, "{l:?}");
    let out = t.path().join("out");
    assert!(export_ok(&repo, &id, &out));
}

fn rewrite_marker(repo: &Path, edit: impl FnOnce(&mut serde_json::Value), rechecksum: bool) {
    let p = repo.join("mnbackup-repo.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    if rechecksum {
        let obj = v.as_object_mut().unwrap();
        obj.remove("checksum");
        // The same canonical form mnbackup hashes: the fields in their declared order.
        let order = [
            "format",
            "version",
            "id",
            "created",
            "chunk_min",
            "chunk_avg",
            "chunk_max",
            // Optional fields, written only when set.
            "packs",
            "encryption",
            "key_check",
        ];
        let mut s = String::from("{");
        for (i, k) in order.iter().filter(|k| obj.contains_key(**k)).enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"{k}\":{}", obj[*k]));
        }
        s.push('}');
        obj.insert(
            "checksum".into(),
            blake3::hash(s.as_bytes()).to_hex().to_string().into(),
        );
    }
    fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Item 3: the marker is checksummed and validated; nothing is written with bad values.
#[test]
fn marker_is_checksummed_and_validated() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let mut rng = Rng(3);
    tree(&src, &mut rng);
    let s = src.to_str().unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, bool, i32)> = vec![
        (
            "chunk_max 0, old checksum",
            Box::new(|v| v["chunk_max"] = 0.into()),
            false,
            5,
        ),
        (
            "chunk_max 0",
            Box::new(|v| v["chunk_max"] = 0.into()),
            true,
            6,
        ),
        (
            "chunk_min 1",
            Box::new(|v| v["chunk_min"] = 1.into()),
            true,
            6,
        ),
        (
            "chunk_avg > max",
            Box::new(|v| v["chunk_avg"] = 9_000_000.into()),
            true,
            6,
        ),
        (
            "id traversal",
            Box::new(|v| v["id"] = "../../..".into()),
            true,
            6,
        ),
        (
            "no checksum (a first-release marker) with an unsafe value",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("checksum");
                v["chunk_max"] = 0.into();
            }),
            false,
            6,
        ),
    ];
    for (i, (what, edit, re, code)) in cases.into_iter().enumerate() {
        let repo = t.path().join(format!("repo{i}"));
        ok(&repo, &["init", "--no-packs"]);
        rewrite_marker(&repo, edit, re);
        let before = objects(&repo);
        let o = mnb(&repo, &["snapshot", "--only-files", "--files", s]);
        assert_eq!(o.status.code(), Some(code), "{what}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{what}");
        assert_eq!(objects(&repo), before, "{what}: something was written");
        assert!(files_under(&repo.join("snapshots")).is_empty(), "{what}");
    }
    // An untouched marker (re-checksummed the same way) still opens: the test's canonical form
    // is the real one.
    let repo = t.path().join("repo-ok");
    ok(&repo, &["init", "--no-packs"]);
    rewrite_marker(&repo, |_| {}, true);
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    // A marker of the first release (no checksum field, valid values) still opens: existing
    // repositories keep working.
    let repo = t.path().join("repo-v1-marker");
    ok(&repo, &["init", "--no-packs"]);
    rewrite_marker(
        &repo,
        |v| {
            v.as_object_mut().unwrap().remove("checksum");
        },
        false,
    );
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    ok(&repo, &["verify", "--read-data"]);
}

/// `-r` pointing at a file is "no repository here" (exit 3).
#[test]
fn repository_path_that_is_a_file_exits_3() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("passwd");
    fs::write(&f, "root:x:0:0\n").unwrap();
    let o = mnb(&f, &["list"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// Item 4: a file with the same size, mode and mtime but other content is not "already
/// identical": restore puts the snapshot's content back.
#[test]
fn restore_compares_content_not_only_metadata() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/p.conf"), "password=old-secret\n").unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init", "--no-packs"]);
    ok(
        &repo,
        &["snapshot", "--only-files", "--files", src.to_str().unwrap()],
    );
    let root = t.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let restore = |journal: &str| {
        mnb(
            &repo,
            &[
                "restore",
                "--files-root",
                root.to_str().unwrap(),
                "--journal",
                t.path().join(journal).to_str().unwrap(),
            ],
        )
    };
    let o = restore("j1.json");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let placed = root.join(src.strip_prefix("/").unwrap()).join("etc/p.conf");
    let md = fs::metadata(&placed).unwrap();
    // Same length, same mode, same mtime: other content.
    fs::write(&placed, "password=NEW-secret\n").unwrap();
    let mtime = filetime_of(&md);
    set_mtime(&placed, mtime);
    let o = restore("j2.json");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::read(&placed).unwrap(), b"password=old-secret\n");
}

fn filetime_of(md: &fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (md.mtime(), md.mtime_nsec())
}

fn set_mtime(p: &Path, (s, ns): (i64, i64)) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
        libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
    ];
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
        0
    );
}

/// Item 12: smaller checks.
#[test]
fn item_hash_manifest_id_and_only_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let mut rng = Rng(12);
    tree(&src, &mut rng);
    let repo = t.path().join("repo");
    ok(&repo, &["init", "--no-packs"]);
    // --only-files without --files commits nothing.
    let o = mnb(&repo, &["snapshot", "--only-files"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(files_under(&repo.join("snapshots")).is_empty());
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let id = ids(&repo)[0].clone();
    let name = format!("files{s}/etc/f1.txt");
    // An item whose recorded whole-content hash does not match its (intact) pieces.
    let n2 = name.clone();
    forge_manifest(&repo, Some(&id), move |v| {
        for it in v["items"].as_array_mut().unwrap() {
            if it["name"] == n2.as_str() {
                it["blake3"] = blake3::hash(b"other").to_hex().to_string().into();
            }
        }
    });
    let o = mnb(&repo, &["verify", "--read-data"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("inconsistent item"));
    let o = mnb(&repo, &["cat", &id, &name]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "cat wrote {} bytes before failing",
        o.stdout.len()
    );
    // A manifest whose id is not its file name is not used.
    forge_manifest(&repo, Some(&id), |v| {
        v["id"] = "20200101T000000000Z-00000000".into();
    });
    let o = mnb(&repo, &["cat", &id, &name]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
}
