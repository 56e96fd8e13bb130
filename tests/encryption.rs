//! Format v2 encryption at rest (issue 17): nothing of a backed-up secret in the pool or the
//! cache; manifests and objects of another repository refused; a wrong or missing passphrase
//! exits 11; the key commands.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

const SECRET: &str = "ZSTACK-ANSIBLE-KEY-7f3a9c1e5b2d8046-do-not-leak";

/// Run with an explicit environment for the passphrase (nothing inherited).
fn run_env(repo: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin());
    c.arg("-r")
        .arg(repo)
        .args(args)
        .env_remove("MNBACKUP_CONFIG")
        .env_remove("MNBACKUP_PASSWORD")
        .env_remove("MNBACKUP_PASSWORD_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("MNBACKUP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn tree(src: &Path) {
    fs::create_dir_all(src.join("etc/ssh")).unwrap();
    let mut key = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for i in 0..40 {
        key.push_str(&format!("{SECRET}{i:04}\n"));
    }
    key.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    fs::write(src.join("etc/ssh/id_rsa"), &key).unwrap();
    fs::set_permissions(
        src.join("etc/ssh/id_rsa"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(
        src.join("etc/zstack.properties"),
        format!("DB.password={SECRET}\n"),
    )
    .unwrap();
}

/// Every needle's hits in the files under `dirs`.
fn hits(dirs: &[&Path], needles: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for d in dirs {
        for f in files_under(d) {
            let b = fs::read(&f).unwrap_or_default();
            for (i, n) in needles.iter().enumerate() {
                if b.windows(n.len()).any(|w| w == n.as_slice()) {
                    out.push(format!("needle {i} in {}", f.display()));
                }
            }
        }
    }
    out
}

fn config(p: std::path::PathBuf, cache: &Path) -> std::path::PathBuf {
    fs::write(
        &p,
        format!("[repository]\ncache_dir = \"{}\"\n", cache.display()),
    )
    .unwrap();
    p
}

#[test]
fn no_trace_of_a_secret_in_the_pool_or_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    tree(&src);
    let s = src.to_str().unwrap();
    let key_file = fs::read(src.join("etc/ssh/id_rsa")).unwrap();
    let needles = vec![
        SECRET.as_bytes().to_vec(),
        SECRET.as_bytes()[..16].to_vec(),
        zstd::encode_all(&key_file[..], 3).unwrap()[4..40].to_vec(),
        zstd::encode_all(SECRET.as_bytes(), 3).unwrap()[4..].to_vec(),
    ];
    // The control: the same backup into an unencrypted repository is found by this scan.
    let plain = t.path().join("plain");
    let plain_cache = t.path().join("plain-cache");
    let pc = config(t.path().join("plain.toml"), &plain_cache);
    let pcs = pc.to_str().unwrap();
    ok(&plain, &["-c", pcs, "init", "--no-encryption"]);
    ok(
        &plain,
        &["-c", pcs, "snapshot", "--only-files", "--files", s],
    );
    assert!(
        !hits(&[&plain], &needles).is_empty(),
        "the scan finds nothing even in an unencrypted repository: it proves nothing"
    );

    let repo = t.path().join("repo");
    let cache = t.path().join("cache");
    let c = config(t.path().join("mnbackup.toml"), &cache);
    let cs = c.to_str().unwrap();
    ok(&repo, &["-c", cs, "init"]);
    ok(&repo, &["-c", cs, "snapshot", "--only-files", "--files", s]);
    fs::write(src.join("etc/new.txt"), format!("{SECRET} again\n")).unwrap();
    ok(&repo, &["-c", cs, "snapshot", "--only-files", "--files", s]);
    assert!(cache.exists(), "the snapshot used the cache directory");
    let found = hits(&[&repo, &cache], &needles);
    assert!(found.is_empty(), "{found:?}");
    // The bytes come back.
    let out = t.path().join("out");
    ok(
        &repo,
        &["-c", cs, "export", "latest", out.to_str().unwrap()],
    );
    let back = files_under(&out)
        .into_iter()
        .find(|p| p.ends_with("etc/ssh/id_rsa"))
        .expect("id_rsa restored");
    assert_eq!(fs::read(back).unwrap(), key_file);
    let v = String::from_utf8_lossy(&ok(&repo, &["-c", cs, "check"]).stdout).into_owned();
    assert!(v.contains("encrypted"), "{v}");
}

#[test]
fn manifests_and_objects_of_another_repository_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    tree(&src);
    let s = src.to_str().unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    for r in [&a, &b] {
        // One file per object, so object files can be swapped (packs are checked the same way).
        ok(r, &["init", "--no-packs"]);
        ok(r, &["snapshot", "--only-files", "--files", s]);
    }
    // A's manifest in B (under its own name, and in place of B's).
    let am = files_under(&a.join("snapshots")).pop().unwrap();
    let bm = files_under(&b.join("snapshots")).pop().unwrap();
    let b2 = t.path().join("b2");
    fs::create_dir_all(&b2).unwrap();
    copy_tree(&b, &b2);
    fs::copy(&am, b2.join("snapshots").join(am.file_name().unwrap())).unwrap();
    let o = mnb(&b2, &["verify"]);
    assert_eq!(code(&o), Some(5), "{}", stderr(&o));
    let b3 = t.path().join("b3");
    copy_tree(&b, &b3);
    fs::copy(&am, b3.join("snapshots").join(bm.file_name().unwrap())).unwrap();
    let o = mnb(&b3, &["show", "latest"]);
    assert_eq!(code(&o), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("authentication tag"), "{}", stderr(&o));
    // A's object files over B's of the same size: the tag refuses them.
    let b4 = t.path().join("b4");
    copy_tree(&b, &b4);
    let a_objs = files_under(&a.join("objects"));
    let mut swapped = 0;
    for f in files_under(&b4.join("objects")) {
        let n = fs::metadata(&f).unwrap().len();
        if let Some(x) = a_objs.iter().find(|x| fs::metadata(x).unwrap().len() == n) {
            fs::copy(x, &f).unwrap();
            swapped += 1;
        }
    }
    assert!(swapped > 0, "no object of A has the size of one of B");
    let o = mnb(&b4, &["verify", "--read-data"]);
    assert_eq!(code(&o), Some(5), "{}", stderr(&o));
    let o = mnb(
        &b4,
        &["export", "latest", t.path().join("x").to_str().unwrap()],
    );
    assert_eq!(code(&o), Some(5), "{}", stderr(&o));
    // B itself is intact.
    ok(&b, &["verify", "--read-data"]);
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn wrong_or_missing_passphrase_exits_11_and_says_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let o = run_env(&repo, &["list"], &[("MNBACKUP_PASSWORD", "nope")], None);
    assert_eq!(code(&o), Some(11), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("wrong passphrase") && e.contains("MNBACKUP_PASSWORD_FILE"),
        "{e}"
    );
    let o = run_env(&repo, &["list"], &[], None);
    assert_eq!(code(&o), Some(11), "{}", stderr(&o));
    assert!(stderr(&o).contains("no passphrase"), "{}", stderr(&o));
    // A passphrase file and a command work; the file's newline is not part of it.
    let pf = t.path().join("pw");
    fs::write(&pf, format!("{PASSWORD}\n")).unwrap();
    let o = run_env(
        &repo,
        &["list"],
        &[("MNBACKUP_PASSWORD_FILE", pf.to_str().unwrap())],
        None,
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let cfg = t.path().join("c.toml");
    fs::write(
        &cfg,
        format!(
            "[repository]\npassword_command = \"cat {}\"\n",
            pf.display()
        ),
    )
    .unwrap();
    let o = run_env(&repo, &["-c", cfg.to_str().unwrap(), "list"], &[], None);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    // The systemd credential.
    let cred = t.path().join("cred");
    fs::create_dir_all(&cred).unwrap();
    fs::copy(&pf, cred.join("mnbackup-password")).unwrap();
    let o = run_env(
        &repo,
        &["list"],
        &[("CREDENTIALS_DIRECTORY", cred.to_str().unwrap())],
        None,
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    // init without a passphrase refuses (and creates nothing).
    let r2 = t.path().join("r2");
    let o = run_env(&r2, &["init"], &[], None);
    assert_eq!(code(&o), Some(11), "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-encryption"), "{}", stderr(&o));
    assert!(!r2.join("mnbackup-repo.json").exists());
}

fn key_ids(repo: &Path, pw: &str) -> Vec<String> {
    let o = run_env(
        repo,
        &["--json", "key", "list"],
        &[("MNBACKUP_PASSWORD", pw)],
        None,
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn key_add_list_remove_passwd_export_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let first = key_ids(&repo, PASSWORD);
    assert_eq!(first.len(), 1);
    let o = run_env(
        &repo,
        &["key", "add"],
        &[
            ("MNBACKUP_PASSWORD", PASSWORD),
            ("MNBACKUP_NEW_PASSWORD", "two"),
        ],
        None,
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert_eq!(key_ids(&repo, "two").len(), 2);
    // Remove the first key (opened with the second); the last one is refused.
    let o = run_env(
        &repo,
        &["key", "remove", &first[0]],
        &[("MNBACKUP_PASSWORD", "two")],
        None,
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let o = run_env(&repo, &["list"], &[("MNBACKUP_PASSWORD", PASSWORD)], None);
    assert_eq!(code(&o), Some(11), "the removed key still opens");
    let only = key_ids(&repo, "two");
    let o = run_env(
        &repo,
        &["key", "remove", &only[0]],
        &[("MNBACKUP_PASSWORD", "two")],
        None,
    );
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("last key"), "{}", stderr(&o));
    // passwd: the old passphrase no longer opens, the new one does.
    let o = run_env(
        &repo,
        &["key", "passwd"],
        &[
            ("MNBACKUP_PASSWORD", "two"),
            ("MNBACKUP_NEW_PASSWORD", "three"),
        ],
        None,
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let o = run_env(&repo, &["list"], &[("MNBACKUP_PASSWORD", "two")], None);
    assert_eq!(code(&o), Some(11));
    assert_eq!(key_ids(&repo, "three").len(), 1);
    // The paper key adds a passphrase when every other is lost.
    let o = run_env(
        &repo,
        &["key", "export"],
        &[("MNBACKUP_PASSWORD", "three")],
        None,
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let paper = String::from_utf8(o.stdout).unwrap();
    assert!(paper.starts_with("MNBACKUP-PAPER-KEY-1 "), "{paper}");
    let o = run_env(
        &repo,
        &["key", "add", "--from-paper-key"],
        &[("MNBACKUP_NEW_PASSWORD", "four")],
        Some(&paper),
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert_eq!(key_ids(&repo, "four").len(), 2);
    // A damaged paper key is refused.
    let bad = paper.replacen(' ', "", 3);
    let bad = bad.replacen("0", "1", 1).replacen("a", "b", 1);
    let o = run_env(
        &repo,
        &["key", "add", "--from-paper-key"],
        &[("MNBACKUP_NEW_PASSWORD", "five")],
        Some(&bad),
    );
    assert_ne!(code(&o), Some(0), "{}", stderr(&o));
}

#[test]
fn unencrypted_and_v1_repositories_still_work_and_say_so() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    tree(&src);
    let s = src.to_str().unwrap();
    for (name, flag) in [("v1", "--format-v1"), ("plain", "--no-encryption")] {
        let repo = t.path().join(name);
        ok(&repo, &["init", flag]);
        ok(&repo, &["snapshot", "--only-files", "--files", s]);
        ok(&repo, &["snapshot", "--only-files", "--files", s]);
        ok(&repo, &["verify", "--read-data"]);
        let out = t.path().join(format!("out-{name}"));
        ok(&repo, &["export", "latest", out.to_str().unwrap()]);
        let back = files_under(&out)
            .into_iter()
            .find(|p| p.ends_with("etc/ssh/id_rsa"))
            .unwrap();
        assert_eq!(
            fs::read(back).unwrap(),
            fs::read(src.join("etc/ssh/id_rsa")).unwrap()
        );
        let o = mnb(&repo, &["check"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.contains("NOT encrypted"), "{name}: {text}");
        assert_ne!(
            code(&o),
            Some(0),
            "{name}: an unencrypted repository is a finding"
        );
        if name == "v1" {
            for f in files_under(&repo.join("objects")) {
                let b = fs::read(&f).unwrap();
                assert_eq!(&b[..5], b"MNBO\x01");
                let n = f.file_name().unwrap().to_str().unwrap();
                assert_eq!(blake3::hash(&b).to_hex().as_str(), n);
            }
            let m = files_under(&repo.join("snapshots")).pop().unwrap();
            assert!(fs::read(m).unwrap().starts_with(b"mnbackup-manifest v1 "));
        }
    }
}
