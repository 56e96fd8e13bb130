//! verify catches each kind of damage at the right level, names what depends on it, and
//! nothing else is affected (issue 6).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Fixture {
    _t: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
}

/// A repository with two snapshots: the second stores changed pieces as deltas.
fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let src = root.join("node");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng(11);
    fs::write(src.join("dump.sql"), text(&mut rng, 3_000_000)).unwrap();
    fs::write(src.join("id_rsa"), text(&mut rng, 3000)).unwrap();
    let repo = root.join("repo");
    ok(&repo, &["init", "--no-packs"]);
    ok(&repo, &["snapshot", "--files", src.to_str().unwrap()]);
    let mut d = fs::read(src.join("dump.sql")).unwrap();
    d[1_000_000..1_000_100].copy_from_slice(&[b'#'; 100]);
    fs::write(src.join("dump.sql"), d).unwrap();
    ok(&repo, &["snapshot", "--files", src.to_str().unwrap()]);
    let l = list(&repo);
    assert!(
        l[1]["stats"]["pieces_delta"].as_u64().unwrap() >= 1,
        "fixture has no delta: {}",
        l[1]
    );
    Fixture { _t: t, root, src }
}

fn copy_repo(f: &Fixture, name: &str) -> PathBuf {
    let dst = f.root.join(name);
    let st = Command::new("cp")
        .args(["-a"])
        .arg(f.root.join("repo"))
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst
}

fn objects_of_type(repo: &Path, ty: u8) -> Vec<PathBuf> {
    files_under(&repo.join("objects"))
        .into_iter()
        .filter(|p| fs::read(p).unwrap()[5] == ty)
        .collect()
}

fn verify_json(repo: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["--json", "verify"];
    a.extend_from_slice(args);
    let o = mnb(repo, &a);
    (
        o.status.code().unwrap(),
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn faults_are_caught_at_the_right_level() {
    let f = fixture();
    let ids = ids(&f.root.join("repo"));
    assert_eq!(verify_json(&f.root.join("repo"), &[]).0, 0);
    assert_eq!(verify_json(&f.root.join("repo"), &["--read-data"]).0, 0);

    // 1. one flipped byte in a delta object: structure passes (same size), --read-data catches it
    let r = copy_repo(&f, "flip");
    let delta = &objects_of_type(&r, b'D')[0];
    let mut b = fs::read(delta).unwrap();
    let n = b.len() - 3;
    b[n] ^= 1;
    fs::write(delta, b).unwrap();
    assert_eq!(
        verify_json(&r, &[]).0,
        0,
        "a same-size flip is invisible to the structure check"
    );
    let (code, rep) = verify_json(&r, &["--read-data"]);
    assert_eq!(code, 5, "{rep}");
    let damaged = &rep["damaged"][0];
    assert_eq!(
        damaged["object"],
        delta.file_name().unwrap().to_str().unwrap()
    );
    let affected: Vec<&str> = damaged["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        affected,
        vec![ids[1].as_str()],
        "only the second snapshot uses the delta"
    );
    // nothing else is affected: the first snapshot still exports
    let out = f.root.join("out-flip");
    ok(&r, &["export", &ids[0], out.to_str().unwrap()]);

    // 2. a truncated object: caught by the structure check
    let r = copy_repo(&f, "trunc");
    let full = &objects_of_type(&r, b'F')[0];
    let len = fs::metadata(full).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(full)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, rep) = verify_json(&r, &[]);
    assert_eq!(code, 5, "{rep}");
    assert!(rep["damaged"][0]["problem"]
        .as_str()
        .unwrap()
        .contains("truncated"));

    // 3. a deleted object: missing, exit 8, names both snapshots when both use it
    let r = copy_repo(&f, "deleted");
    let full = objects_of_type(&r, b'F')
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::remove_file(&full).unwrap();
    let (code, rep) = verify_json(&r, &[]);
    assert_eq!(code, 8, "{rep}");
    assert_eq!(
        rep["missing"][0]["snapshots"].as_array().unwrap().len(),
        2,
        "{rep}"
    );

    // 4. a deleted signature: reported, restores unaffected, the next snapshot works
    let r = copy_repo(&f, "sig");
    for s in objects_of_type(&r, b'S') {
        fs::remove_file(s).unwrap();
    }
    let o = mnb(&r, &["verify"]);
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stdout).contains("every snapshot still restores"));
    for id in &ids {
        let out = f.root.join(format!("out-sig-{id}"));
        ok(&r, &["export", id, out.to_str().unwrap()]);
    }
    // (a fresh cache so the signature really has to come from the pool)
    let o = Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args([
            "-q",
            "-r",
            r.to_str().unwrap(),
            "snapshot",
            "--files",
            f.src.to_str().unwrap(),
        ])
        .env("XDG_CACHE_HOME", f.root.join("nocache"))
        .env("HOME", f.root.join("nohome"))
        .output()
        .unwrap();
    let _ = o; // as root the cache dir is /var/cache/mnbackup; the snapshot must succeed either way
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // 5. a damaged manifest: that snapshot is reported, the other one is untouched
    let r = copy_repo(&f, "manifest");
    let m = r.join("snapshots").join(format!("{}.json", ids[1]));
    let mut b = fs::read(&m).unwrap();
    let n = b.len() / 2;
    b[n] = b'X';
    fs::write(&m, b).unwrap();
    let (code, rep) = verify_json(&r, &[]);
    assert_eq!(code, 5, "{rep}");
    assert_eq!(rep["damaged_manifests"][0][0], ids[1].as_str());
    let o = mnb(&r, &["list"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("DAMAGED"));
    let out = f.root.join("out-manifest");
    ok(&r, &["export", &ids[0], out.to_str().unwrap()]);
    let o = mnb(
        &r,
        &["export", &ids[1], f.root.join("out-m2").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(5));
}

#[test]
fn subset_buckets_cover_the_pool() {
    let f = fixture();
    let r = f.root.join("repo");
    let (_, all) = verify_json(&r, &["--read-data"]);
    let mut read = 0;
    for n in 1..=3 {
        let (code, rep) = verify_json(&r, &["--subset", &format!("{n}/3")]);
        assert_eq!(code, 0);
        read += rep["objects_read"].as_u64().unwrap();
    }
    assert_eq!(
        read,
        all["objects_read"].as_u64().unwrap(),
        "1/3, 2/3, 3/3 together read every object once"
    );
    let o = mnb(&r, &["verify", "--subset", "4/3"]);
    assert_eq!(o.status.code(), Some(2));
}
