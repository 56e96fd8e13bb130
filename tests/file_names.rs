//! Issue 12 item 5: file names and symlink targets are bytes on Linux; they are stored and
//! restored exactly (backslashes, bytes outside UTF-8).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

#[test]
fn names_and_link_targets_are_kept_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let d = src.join("etc");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("back\\slash.conf"), b"backslash").unwrap();
    fs::write(
        d.join(OsStr::from_bytes(b"caf\xe9.conf")),
        b"latin1 e-acute",
    )
    .unwrap();
    fs::write(
        d.join(OsStr::from_bytes(b"caf\xe8.conf")),
        b"latin1 e-grave",
    )
    .unwrap();
    fs::write(d.join("plain.conf"), b"plain").unwrap();
    symlink(OsStr::from_bytes(b"tar\xffget"), d.join("link")).unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    ok(
        &repo,
        &["snapshot", "--only-files", "--files", src.to_str().unwrap()],
    );
    let want = names(&d);
    // export
    let out = t.path().join("out");
    ok(&repo, &["export", "latest", out.to_str().unwrap()]);
    let ed: PathBuf = out.join("files").join(d.strip_prefix("/").unwrap());
    assert_eq!(names(&ed), want);
    for n in &want {
        let a = d.join(OsStr::from_bytes(n));
        let b = ed.join(OsStr::from_bytes(n));
        if n == b"link" {
            assert_eq!(
                fs::read_link(&b).unwrap().as_os_str().as_bytes(),
                b"tar\xffget"
            );
        } else {
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        }
    }
    // restore to another root
    let root = t.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let o = mnb(
        &repo,
        &[
            "restore",
            "--files-root",
            root.to_str().unwrap(),
            "--journal",
            t.path().join("j.json").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rd = root.join(d.strip_prefix("/").unwrap());
    assert_eq!(names(&rd), want);
    assert_eq!(
        fs::read(rd.join(OsStr::from_bytes(b"caf\xe9.conf"))).unwrap(),
        b"latin1 e-acute"
    );
    // cat by the stored (escaped) name
    let item = format!("files{}/back\\\\slash.conf", d.display());
    let o = ok(&repo, &["cat", "latest", &item]);
    assert_eq!(o.stdout, b"backslash");
}

#[test]
fn hostile_escapes_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"x").unwrap();
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    ok(
        &repo,
        &["snapshot", "--only-files", "--files", src.to_str().unwrap()],
    );
    // `\x2e\x2e` would be `..` and `\x2f` a slash if escapes below 0x80 were accepted.
    for bad in [
        "files/\\x2e\\x2e/\\x2e\\x2e/etc/passwd",
        "files/a\\x2fb",
        "files/a\\q",
    ] {
        let bad = bad.to_string();
        forge_manifest(&repo, None, move |v| {
            v["items"].as_array_mut().unwrap()[0]["name"] = bad.clone().into();
        });
        let out = t.path().join("out");
        let o = mnb(&repo, &["export", "latest", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
        assert!(!out.exists() || files_under(&out).is_empty());
    }
}
